"""Train a Spark MLlib candidate on the preprocessed features: a linear model (logistic regression for a binary
label, linear regression for a numeric one) or gradient-boosted trees (classifier or regressor).

Writes into the candidate folder: the Spark model, its numpy export, and the held-out predictions
(a probability, or the predicted value) that evaluation compares across all frameworks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ml_tasks.atomic import atomic_dir, write_json
from ml_tasks.errors import KilnError
from ml_tasks.layout import CandidateFiles, FeatureFiles
from ml_tasks.parity import check_parity
from ml_tasks.portable import predict_score

log = logging.getLogger(__name__)
SPARK_MODELS = ("lr", "gbt")
PARITY_TOLERANCE = 1e-6


def export_model(model, kind: str, task: str, model_path: Path) -> dict[str, Any]:
    """The fitted model as plain numbers (trees read from Spark's own saved Parquet)."""
    if kind == "lr":
        return {
            "kind": "logistic_regression" if task == "binary" else "linear_regression",
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
    return {"kind": "gbt" if task == "binary" else "gbt_regressor", "weights": list(model.treeWeights), "trees": ordered}


def fit(kind: str, task: str, train, params: dict[str, Any]):
    from pyspark.ml.classification import GBTClassifier, LogisticRegression
    from pyspark.ml.regression import GBTRegressor, LinearRegression

    common = {"featuresCol": "features", "labelCol": "label"}
    if kind == "lr":
        linear = LogisticRegression if task == "binary" else LinearRegression
        return linear(**common, maxIter=100, regParam=params["lr_reg"], elasticNetParam=0.0).fit(train)
    trees = GBTClassifier if task == "binary" else GBTRegressor
    return trees(**common, maxIter=params["gbt_max_iter"], maxDepth=params["gbt_max_depth"], stepSize=0.2, seed=7).fit(train)


def train_spark(kind: str, task: str, features: FeatureFiles, candidate: CandidateFiles, params: dict[str, Any]) -> dict[str, Any]:
    """Fit ``kind`` (``lr`` or ``gbt``) for ``task`` on ``features.train``; write the candidate with its held-out predictions."""
    if kind not in SPARK_MODELS:
        raise KilnError(f"Spark model {kind!r} is not one of {SPARK_MODELS}")
    from pyspark.ml.functions import array_to_vector, vector_to_array

    from ml_tasks.spark_session import get_spark

    if not features.train.exists():
        raise KilnError(f"no preprocessed features at {features.dir}; did preprocess run?")
    spark = get_spark(f"kiln-train-{kind}")
    train = spark.read.parquet(str(features.train)).select("entity_id", "label", array_to_vector("features").alias("features"))
    test = spark.read.parquet(str(features.test)).select("entity_id", "label", array_to_vector("features").alias("features"))
    model = fit(kind, task, train.cache(), params)

    output = vector_to_array("probability")[1] if task == "binary" else "prediction"
    scored = model.transform(test).select("entity_id", "label", _named(output, "score"), vector_to_array("features").alias("f"))
    rows = scored.toPandas()
    with atomic_dir(candidate.dir) as tmp:
        files = CandidateFiles(tmp)
        model.write().overwrite().save(str(files.spark_model))
        portable = export_model(model, kind, task, files.spark_model)
        sample = rows.head(500)
        if len(sample):
            check_parity(predict_score(np.stack(sample["f"].to_numpy()), portable), sample["score"].to_numpy(),
                         PARITY_TOLERANCE, f"portable {kind} model vs Spark")
        write_json(files.portable_model, portable)
        rows.drop(columns=["f"]).to_parquet(files.predictions, index=False)
        result = {"candidate": f"spark_{kind}", "framework": "spark_mllib", "kind": portable["kind"], "task": task,
                  "params": params, "test_rows": len(rows)}
        write_json(files.info, result)
    log.info("trained %s: %s", kind, result)
    return {**result, "candidate_dir": str(candidate.dir)}


def _named(column, name: str):
    from pyspark.sql import functions as F

    return (F.col(column) if isinstance(column, str) else column).alias(name)
