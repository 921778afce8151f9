"""Run parameters shared by the DAG's trigger form and the CLI: defaults, bounds, cross-field checks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ml_tasks.errors import KilnError

# Airflow's execution_timeout for every task: the backstop behind the form's stage_timeout_minutes.
TASK_TIMEOUT = timedelta(hours=24)

# One place for each parameter's default and bounds; the DAG's Params are generated from this.
RUN_PARAMS: dict[str, dict[str, Any]] = {
    "partition_date": {"type": ["null", "string"], "format": "date", "default": None,
                       "description": "Partition (YYYY-MM-DD) to build. Empty: the run's logical date, or today for a manual run without one."},
    "source": {"type": "string", "enum": ["synthetic", "file", "sklearn_breast_cancer"], "default": "synthetic",
               "description": "Where rows come from: the synthetic card-transactions generator, your own file (input_path), or scikit-learn's bundled breast-cancer data."},
    "input_path": {"type": ["null", "string"], "default": None,
                   "description": "CSV or Parquet path read when source is 'file'; it must follow the transactions schema (docs/data-contract.md)."},
    "rows": {"type": "integer", "minimum": 1000, "maximum": 10_000_000, "default": 20_000,
             "description": "Rows the synthetic generator writes for the partition (1 000 to 10 000 000)."},
    "max_null_ratio": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.2,
                       "description": "Validation: largest share of missing values allowed in any feature column."},
    "max_psi": {"type": "number", "minimum": 0, "maximum": 10, "default": 0.25,
                "description": "Validation: largest population-stability index against the previous day's partition."},
    "pca_k": {"type": "integer", "minimum": 0, "maximum": 6, "default": 3,
              "description": "Principal components (computed on Spark's RowMatrix) appended to the features; 0 turns PCA off."},
    "test_fraction": {"type": "number", "minimum": 0.05, "maximum": 0.5, "default": 0.2,
                      "description": "Share of entities held out for evaluation (split by a stable hash of entity_id)."},
    "lr_reg": {"type": "number", "minimum": 0, "maximum": 10, "default": 0.01,
               "description": "L2 regularisation of the Spark logistic regression."},
    "gbt_max_iter": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20,
                     "description": "Boosting rounds of the Spark gradient-boosted trees."},
    "gbt_max_depth": {"type": "integer", "minimum": 1, "maximum": 10, "default": 4,
                      "description": "Depth of each boosted tree."},
    "mxnet_epochs": {"type": "integer", "minimum": 1, "maximum": 100, "default": 4,
                     "description": "Epochs of the MXNet MLP (single-process and distributed)."},
    "mxnet_hidden": {"type": "integer", "minimum": 4, "maximum": 1024, "default": 64,
                     "description": "Width of each hidden layer of the MXNet MLP."},
    "mxnet_layers": {"type": "integer", "minimum": 1, "maximum": 6, "default": 2,
                     "description": "Hidden layers of the MXNet MLP."},
    "mxnet_learning_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.01,
                            "description": "Adam learning rate of the MXNet MLP."},
    "mxnet_batch_size": {"type": "integer", "minimum": 16, "maximum": 65536, "default": 256,
                         "description": "Mini-batch size of the MXNet MLP."},
    "mxnet_dropout": {"type": "number", "minimum": 0, "maximum": 0.9, "default": 0.1,
                      "description": "Dropout after each hidden layer."},
    "mxnet_workers": {"type": "integer", "minimum": 1, "maximum": 8, "default": 2,
                      "description": "Workers of the distributed MXNet run (kvstore dist_sync)."},
    "mxnet_servers": {"type": "integer", "minimum": 1, "maximum": 4, "default": 1,
                      "description": "Parameter servers of the distributed MXNet run."},
    "candidates": {"type": "array", "items": {"type": "string", "enum": ["spark_lr", "spark_gbt", "mxnet_mlp", "mxnet_dist", "singa_mlp"]},
                   "minItems": 1, "uniqueItems": True,
                   "default": ["spark_lr", "spark_gbt", "mxnet_mlp", "mxnet_dist", "singa_mlp"],
                   "description": "Models to train and compare: Spark MLlib logistic regression and gradient-boosted trees, the MXNet MLP in one process and on a dist_sync cluster, and the Singa MLP (container only)."},
    "min_auc": {"type": "number", "minimum": 0.5, "maximum": 1, "default": 0.65,
                "description": "Evaluation: a model is blessed only with at least this held-out AUC."},
    "max_log_loss": {"type": "number", "exclusiveMinimum": 0, "maximum": 10, "default": 0.69,
                     "description": "Evaluation: a model is blessed only with at most this log loss."},
    "max_calibration_error": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1,
                              "description": "Evaluation: largest expected calibration error (10 bins) for a blessing."},
    "promote_margin": {"type": "number", "minimum": 0, "maximum": 0.5, "default": 0.0,
                       "description": "Registry: AUC the blessed model must gain over the previous champion to replace it."},
    "model_name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$", "default": "transactions",
                   "description": "Registry name of the model (lower-case letters, digits, underscores)."},
    "stage_timeout_minutes": {"type": "integer", "minimum": 1, "maximum": 1440, "default": 180,
                              "description": "Minutes each stage may run before it is killed with its whole process group and fails (a hung stage then never blocks later days)."},
    "warm_cache": {"type": "boolean", "default": True,
                   "description": "When the champion changes, load its latest features per entity into Ignite for online predictions."},
}


def defaults() -> dict[str, Any]:
    return {name: spec["default"] for name, spec in RUN_PARAMS.items()}


def check_run_params(params: dict[str, Any]) -> dict[str, Any]:
    """Cross-field checks the per-field schema cannot express; fail fast, naming the parameter."""
    merged = {**defaults(), **{k: v for k, v in params.items() if k in RUN_PARAMS}}
    if merged["source"] == "file" and not merged["input_path"]:
        raise KilnError("param 'input_path' is required when param 'source' is 'file'")
    if merged["source"] != "file" and merged["input_path"]:
        raise KilnError(f"param 'input_path' is only read when param 'source' is 'file' (got source={merged['source']!r})")
    if merged["source"] == "sklearn_breast_cancer" and merged["pca_k"] > 6:
        raise KilnError("param 'pca_k' must be at most 6")
    return merged
