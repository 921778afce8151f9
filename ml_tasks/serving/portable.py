"""Framework-free scoring: the fitted feature transform, the Spark models and the Singa MLP as plain numpy.

Serving must not start a JVM per request (nor import Singa), so preprocessing and training export what
they fitted to JSON, and the stages themselves check that this numpy path reproduces the framework's
own output (parity).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def transform_matrix(columns: Mapping[str, Sequence[Any]], spec: Mapping[str, Any]) -> np.ndarray:
    """Apply the exported transform to column arrays: impute, scale, one-hot, then append PCA."""
    numeric = np.column_stack(
        [np.asarray(columns[name], dtype=float) for name in spec["numeric"]]
    ) if spec["numeric"] else np.zeros((len(next(iter(columns.values()))), 0))
    medians = np.asarray(spec["medians"], dtype=float)
    numeric = np.where(np.isnan(numeric), medians, numeric)
    mean, std = np.asarray(spec["mean"], dtype=float), np.asarray(spec["std"], dtype=float)
    safe_std = np.where(std == 0, 1.0, std)
    scaled = np.where(std == 0, 0.0, (numeric - mean) / safe_std)
    parts = [scaled]
    for cat in spec["categorical"]:
        labels = {label: i for i, label in enumerate(cat["labels"])}
        values = columns[cat["column"]]
        onehot = np.zeros((len(values), cat["size"]))
        for row, value in enumerate(values):
            idx = labels.get(value, len(labels))  # unseen or null -> the "unknown" slot
            if idx < cat["size"]:
                onehot[row, idx] = 1.0
        parts.append(onehot)
    if spec.get("pca"):
        parts.append(scaled @ np.asarray(spec["pca"], dtype=float))
    return np.hstack(parts)


def _tree_predict(tree: Mapping[str, Any], x: np.ndarray) -> np.ndarray:
    nodes = tree["nodes"]
    out = np.empty(len(x))
    for row in range(len(x)):
        node = nodes[tree["root"]]
        while node["left"] >= 0:
            node = nodes[node["left"] if x[row, node["feature"]] <= node["threshold"] else node["right"]]
        out[row] = node["prediction"]
    return out


def predict_score(features: np.ndarray, model: Mapping[str, Any]) -> np.ndarray:
    """An exported Spark model's output: the positive-class probability (``logistic_regression``, ``gbt``)
    or the predicted value (``linear_regression``, ``gbt_regressor``); or an exported ``mlp`` (Singa) with its output."""
    kind = model["kind"]
    if kind == "mlp":
        hidden = features
        for layer in model["hidden"]:
            hidden = np.maximum(hidden @ np.asarray(layer["weights"]) + np.asarray(layer["bias"]), 0.0)
        return apply_output(hidden @ np.asarray(model["out"]["weights"]) + model["out"]["bias"], model["output"])
    if kind in ("logistic_regression", "linear_regression"):
        margin = features @ np.asarray(model["coefficients"]) + model["intercept"]
        return 1.0 / (1.0 + np.exp(-margin)) if kind == "logistic_regression" else margin
    if kind in ("gbt", "gbt_regressor"):
        margin = sum(w * _tree_predict(t, features) for w, t in zip(model["weights"], model["trees"], strict=True))
        return 1.0 / (1.0 + np.exp(-2.0 * margin)) if kind == "gbt" else margin  # Spark's LogLoss.computeProbability
    raise ValueError(f"unknown portable model kind {kind!r}")


def apply_output(raw: np.ndarray, output: dict[str, Any]) -> np.ndarray:
    """An MLP's raw output as a prediction: a probability (``sigmoid``) or the label's unit (``affine``)."""
    raw = raw.astype(np.float64).ravel()
    if output["kind"] == "sigmoid":
        return 1.0 / (1.0 + np.exp(-raw))
    return raw * output["scale"] + output["shift"]


def load(model_dir: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The scorer of a candidate exported as ``portable_model.json`` (Spark MLlib models, the Singa MLP)."""
    from ml_tasks.core.atomic import read_json
    from ml_tasks.core.layout import CandidateFiles

    model = read_json(CandidateFiles(model_dir).portable_model)
    return lambda features: predict_score(np.asarray(features, dtype=np.float64), model)
