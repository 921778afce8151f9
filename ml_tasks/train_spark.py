"""Train a Spark MLlib candidate (logistic regression or gradient-boosted trees) on the preprocessed features.

Writes into the candidate folder: the Spark model, its numpy export (``portable_model.json``), and
``predictions.parquet`` with the held-out scores that evaluation compares across all frameworks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ml_tasks.atomic import atomic_dir, write_json
from ml_tasks.errors import KilnError
from ml_tasks.parity import check_parity
from ml_tasks.portable import MODEL_FILE, predict_proba

log = logging.getLogger(__name__)
SPARK_MODELS = ("lr", "gbt")
PREDICTIONS_FILE = "predictions.parquet"
PARITY_TOLERANCE = 1e-6


def export_model(model, kind: str, model_path: Path) -> dict[str, Any]:
    """The fitted model as plain numbers (trees read from Spark's own saved Parquet)."""
    if kind == "lr":
        return {
            "kind": "logistic_regression",
            "coefficients": model.coefficients.toArray().tolist(),
            "intercept": float(model.intercept),
        }
    nodes = pq.read_table(model_path / "data").to_pylist()
    trees: dict[int, dict[str, Any]] = {}
    for row in nodes:
        data = row["nodeData"]
        tree = trees.setdefault(row["treeID"], {"root": 0, "nodes": {}})
        split = data["split"]
        tree["nodes"][data["id"]] = {
            "left": data["leftChild"],
            "right": data["rightChild"],
            "feature": split["featureIndex"],
            "threshold": split["leftCategoriesOrThreshold"][0] if split["leftCategoriesOrThreshold"] else 0.0,
            "prediction": data["prediction"],
        }
    ordered = [trees[i] for i in sorted(trees)]
    for tree in ordered:  # list form keeps JSON small and lookups by position
        size = max(tree["nodes"]) + 1
        tree["nodes"] = [tree["nodes"][i] for i in range(size)]
    return {"kind": "gbt", "weights": list(model.treeWeights), "trees": ordered}


def fit(kind: str, train, params: dict[str, Any]):
    from pyspark.ml.classification import GBTClassifier, LogisticRegression

    if kind == "lr":
        return LogisticRegression(
            featuresCol="features", labelCol="label", maxIter=params.get("lr_max_iter", 100),
            regParam=params.get("lr_reg", 0.01), elasticNetParam=0.0,
        ).fit(train)
    return GBTClassifier(
        featuresCol="features", labelCol="label", maxIter=params.get("gbt_max_iter", 30),
        maxDepth=params.get("gbt_max_depth", 4), stepSize=0.2, seed=params.get("seed", 7),
    ).fit(train)


def train_spark(kind: str, features_dir: Path, candidate_dir: Path, params: dict[str, Any] | None = None) -> dict[str, Any]:
    if kind not in SPARK_MODELS:
        raise KilnError(f"Spark model {kind!r} is not one of {SPARK_MODELS}")
    from pyspark.ml.functions import array_to_vector, vector_to_array

    from ml_tasks.spark_session import get_spark

    params = params or {}
    if not (features_dir / "train").exists():
        raise KilnError(f"no preprocessed features at {features_dir}; did preprocess run?")
    spark = get_spark(f"kiln-train-{kind}")
    train = spark.read.parquet(str(features_dir / "train")).select("entity_id", "label", array_to_vector("features").alias("features"))
    test = spark.read.parquet(str(features_dir / "test")).select("entity_id", "label", array_to_vector("features").alias("features"))
    model = fit(kind, train.cache(), params)

    scored = model.transform(test).select(
        "entity_id", "label", vector_to_array("probability")[1].alias("score"), vector_to_array("features").alias("f")
    )
    rows = scored.toPandas()
    with atomic_dir(candidate_dir) as tmp:
        model.write().overwrite().save(str(tmp / "spark_model"))
        portable = export_model(model, kind, tmp / "spark_model")
        sample = rows.head(500)
        if len(sample):
            check_parity(predict_proba(np.stack(sample["f"].to_numpy()), portable), sample["score"].to_numpy(),
                         PARITY_TOLERANCE, f"portable {kind} model vs Spark")
        write_json(tmp / MODEL_FILE, portable)
        rows.drop(columns=["f"]).to_parquet(tmp / PREDICTIONS_FILE, index=False)
        result = {"candidate": f"spark_{kind}", "framework": "spark_mllib", "kind": kind,
                  "params": params, "test_rows": len(rows), "artifact": MODEL_FILE}
        write_json(tmp / "candidate.json", result)
    log.info("trained %s: %s", kind, result)
    return {**result, "candidate_dir": str(candidate_dir)}
