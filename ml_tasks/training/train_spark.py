"""Train a Spark MLlib candidate on the preprocessed features: a linear model (logistic regression for a binary
label, linear regression for a numeric one) or gradient-boosted trees (classifier or regressor).

Trainers under the contract of ``ml_tasks.trainer``: each leaves the Spark model and its numpy export
(``portable_model.json``, served by ``ml_tasks.serving.portable.load``) and returns Spark's own held-out scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ml_tasks.core.atomic import write_json
from ml_tasks.core.layout import CandidateFiles
from ml_tasks.trainer import Trained, TrainerInput


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


def train_lr(inp: TrainerInput) -> Trained:
    """The linear model (trainer contract): logistic regression, or linear regression for a numeric label."""
    return _train("lr", inp)


def train_gbt(inp: TrainerInput) -> Trained:
    """Gradient-boosted trees (trainer contract): a classifier, or a regressor for a numeric label."""
    return _train("gbt", inp)


def _train(kind: str, inp: TrainerInput) -> Trained:
    """Fit on the training rows, score the held-out rows in Spark, and leave the Spark model with its numpy export."""
    import pandas as pd
    from pyspark.ml.functions import array_to_vector, vector_to_array

    from ml_tasks.core.spark_session import get_spark

    spark = get_spark(f"kiln-train-{kind}")
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    train = spark.read.parquet(str(inp.train_dir)).select("label", array_to_vector("features").alias("features"))
    model = fit(kind, inp.task, train.cache(), inp.params)
    # The contract's row order: held-out rows as Kiln reads them, numbered, scored by Spark, put back in order.
    held_out = inp.held_out_features()
    rows = spark.createDataFrame(pd.DataFrame({"row": np.arange(len(held_out)), "f": list(held_out)}))
    output = vector_to_array("probability")[1] if inp.task == "binary" else "prediction"
    scored = model.transform(rows.select("row", array_to_vector("f").alias("features")))
    scores = scored.select("row", _named(output, "score")).toPandas().sort_values("row")["score"].to_numpy()
    model_dir = CandidateFiles(inp.output_dir).spark_model
    model.write().overwrite().save(str(model_dir))
    portable = export_model(model, kind, inp.task, model_dir)
    write_json(CandidateFiles(inp.output_dir).portable_model, portable)
    return Trained(scores, framework="spark_mllib", info={"kind": portable["kind"]})


def _named(column, name: str):
    from pyspark.sql import functions as F

    return (F.col(column) if isinstance(column, str) else column).alias(name)
