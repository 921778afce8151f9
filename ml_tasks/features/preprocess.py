"""Preprocess on Spark: impute, encode, scale, PCA (on Spark's distributed RowMatrix), split by entity hash.

Writes the train and test features as Parquet (entity_id, label, features: array<double>; the key
column is renamed ``entity_id`` and the label ``label`` whatever the dataset calls them),
the fitted Spark ``PipelineModel`` and its numpy export for serving. The transform is fitted on the
training split only, so the held-out set never leaks into imputation or scaling statistics.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ml_tasks.core.atomic import atomic_dir, write_json
from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import FeatureFiles, TransformFiles
from ml_tasks.core.run_settings import SETTINGS
from ml_tasks.ingestion.schema import DatasetSchema
from ml_tasks.serving import parity
from ml_tasks.serving.portable import transform_matrix

log = logging.getLogger(__name__)
SPLIT_SALT = "kiln-split-v1"
PARITY_ROWS = 200
PARITY_TOLERANCE = 1e-9


def build_pipeline(schema: DatasetSchema, pca_k: int):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import PCA, Imputer, OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler

    numeric = list(schema.numeric)
    imputed = [f"{c}__imputed" for c in numeric]
    stages: list[Any] = [
        Imputer(inputCols=numeric, outputCols=imputed, strategy="median"),
        VectorAssembler(inputCols=imputed, outputCol="numeric_vec"),
        StandardScaler(inputCol="numeric_vec", outputCol="scaled", withMean=True, withStd=True),
    ]
    encoded = []
    if schema.categorical:
        indexed = [f"{c}__idx" for c in schema.categorical]
        encoded = [f"{c}__onehot" for c in schema.categorical]
        stages += [
            StringIndexer(inputCols=list(schema.categorical), outputCols=indexed, handleInvalid="keep",
                          stringOrderType="alphabetAsc"),
            OneHotEncoder(inputCols=indexed, outputCols=encoded, handleInvalid="keep", dropLast=True),
        ]
    assembled = ["scaled", *encoded]
    if pca_k > 0:
        stages.append(PCA(k=pca_k, inputCol="scaled", outputCol="pca"))
        assembled.append("pca")
    stages.append(VectorAssembler(inputCols=assembled, outputCol="features"))
    return Pipeline(stages=stages)


def export_transform(model, schema: DatasetSchema, pca_k: int) -> dict[str, Any]:
    """The fitted stages as plain numbers; ``ml_tasks.serving.portable.transform_matrix`` applies them."""
    imputer, _, scaler = model.stages[0], model.stages[1], model.stages[2]
    surrogate = imputer.surrogateDF.collect()[0].asDict()
    spec: dict[str, Any] = {
        "numeric": list(schema.numeric),
        "medians": [float(surrogate[c]) for c in schema.numeric],
        "mean": scaler.mean.toArray().tolist(),
        "std": scaler.std.toArray().tolist(),
        "categorical": [],
        "pca": None,
        "key": schema.key,
    }
    if schema.categorical:
        indexer = model.stages[3]
        for column, labels in zip(schema.categorical, indexer.labelsArray, strict=True):
            # The indexer's handleInvalid=keep adds an "unknown" index (= len(labels)) that the encoder
            # counts as a category; the encoder's own invalid slot is the one dropLast removes.
            spec["categorical"].append({"column": column, "labels": list(labels), "size": len(labels) + 1})
    if pca_k > 0:
        spec["pca"] = model.stages[-2].pc.toArray().tolist()
    return spec


def check_parity(frame, spec: dict[str, Any], schema: DatasetSchema) -> float:
    """Max abs difference between Spark's features and the numpy export on a sample; raise if off."""
    from pyspark.ml.functions import vector_to_array

    rows = frame.select(*schema.features, vector_to_array("features").alias("f")).limit(PARITY_ROWS).collect()
    if not rows:
        return 0.0
    columns = {name: [r[name] if r[name] is not None else np.nan for r in rows] for name in schema.numeric}
    columns.update({name: [r[name] for r in rows] for name in schema.categorical})
    expected = np.array([r["f"] for r in rows])
    return parity.check_parity(transform_matrix(columns, spec), expected, PARITY_TOLERANCE, "portable transform vs Spark's")


def preprocess(
    raw_dir: Path, features: FeatureFiles, transform: TransformFiles, pca_k: int = SETTINGS["pca_k"].default,
    test_fraction: float = SETTINGS["test_fraction"].default,
) -> dict[str, Any]:
    """Fit the transform on the training split of ``raw_dir``; write ``features`` and ``transform``."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from ml_tasks.core.spark_session import connect_server, get_spark

    schema = DatasetSchema.load(raw_dir)
    if pca_k > len(schema.numeric):
        raise KilnError(f"pca_k={pca_k} exceeds the {len(schema.numeric)} numeric features")
    if not 0 < test_fraction < 1:
        raise KilnError(f"test_fraction must be in (0, 1), got {test_fraction}")
    spark = get_spark("kiln-preprocess")
    # One projection for every cast (not a withColumn per column): over Spark Connect each action sends and
    # re-analyses the whole plan, and a deep chain of projections costs seconds per action.
    casts = {name: F.col(name).cast("double") for name in schema.numeric}
    casts.update({name: F.col(name).cast("string") for name in (schema.key, *schema.categorical)})
    frame = spark.read.parquet(str(raw_dir)).select(*[casts.get(c, F.col(c)).alias(c) for c in schema.columns])
    bucket = F.pmod(F.xxhash64(F.concat(F.col(schema.key), F.lit(SPLIT_SALT))), F.lit(10_000))
    frame = frame.withColumn("is_test", bucket < F.lit(int(test_fraction * 10_000))).cache()
    train = frame.filter(~F.col("is_test"))
    if train.limit(1).count() == 0:
        raise KilnError(f"no training rows after the entity split of {raw_dir}")

    model = build_pipeline(schema, pca_k).fit(train)
    spec = export_transform(model, schema, pca_k)
    transformed = model.transform(frame)
    max_diff = check_parity(transformed, spec, schema)

    out = transformed.select(
        F.col(schema.key).alias("entity_id"),
        F.col(schema.label).cast("int" if schema.task == "binary" else "double").alias("label"),
        vector_to_array("features").alias("features"),
        "is_test",
    )
    with atomic_dir(features.dir) as tmp:
        # Two runs must never share a Spark output path (its _temporary/ collides): write into tmp.
        out.filter(~F.col("is_test")).drop("is_test").write.parquet(str(FeatureFiles(tmp).train))
        out.filter(F.col("is_test")).drop("is_test").write.parquet(str(FeatureFiles(tmp).test))
    with atomic_dir(transform.dir) as tmp:
        model.write().overwrite().save(str(TransformFiles(tmp).spark_pipeline))
        write_json(TransformFiles(tmp).portable, spec)

    counts = {row["is_test"]: row["count"] for row in out.groupBy("is_test").count().collect()}
    summary = {
        "features_dir": str(features.dir),
        "transform_dir": str(transform.dir),
        "train_rows": counts.get(False, 0),
        "test_rows": counts.get(True, 0),
        "feature_dim": len(transform_matrix({c: [np.nan] for c in schema.numeric}
                                            | {c: [None] for c in schema.categorical}, spec)[0]),
        "parity_max_abs_diff": max_diff,
        "spark_master": spark.conf.get("spark.master"),
        "spark_connect": connect_server(),  # the server, when over Connect
    }
    log.info("preprocessed %s", summary)
    return summary
