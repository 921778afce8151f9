"""Evaluate every candidate on the same held-out rows, pick the best, and bless it only past the thresholds.

Candidates of any framework are compared through their held-out predictions (entity_id, label,
score: a probability for a binary task, the predicted value for regression), so Spark MLlib, MXNet
and Singa models meet in one table. The best is chosen on the task's primary metric (higher ROC AUC,
lower RMSE); the registry promotes on the same metric in the same direction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_tasks.core.atomic import read_json, write_json
from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import CandidateFiles
from ml_tasks.core.run_settings import SETTINGS

log = logging.getLogger(__name__)
PRIMARY_METRIC = {"binary": "auc", "regression": "rmse"}
HIGHER_IS_BETTER = {"auc": True, "rmse": False}
METRICS = {"binary": ("auc", "log_loss", "accuracy", "brier", "calibration_error"),
           "regression": ("rmse", "mae", "r2")}


@dataclass(frozen=True)
class Thresholds:
    """Blessing bounds; those of the other task are ignored. ``None`` means no bound."""

    min_auc: float = SETTINGS["min_auc"].default
    max_log_loss: float = SETTINGS["max_log_loss"].default
    max_calibration_error: float = SETTINGS["max_calibration_error"].default
    min_r2: float = SETTINGS["min_r2"].default
    max_rmse: float | None = SETTINGS["max_rmse"].default
    max_mae: float | None = SETTINGS["max_mae"].default


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Weighted mean |observed rate - mean score| over equal-width score bins."""
    idx = np.minimum((scores * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() * abs(labels[mask].mean() - scores[mask].mean())
    return float(total / len(labels))


def compute_metrics(task: str, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as skm

    if len(labels) == 0:
        raise KilnError("no held-out rows to evaluate")
    bad = int((~np.isfinite(scores)).sum())
    if bad:  # a broken candidate: it fails its verdict (see failed_thresholds), the others are still compared
        return {**{m: float("nan") for m in METRICS[task]}, "rows": int(len(labels)), "non_finite_scores": bad}
    if task == "regression":
        return {"rmse": float(np.sqrt(skm.mean_squared_error(labels, scores))),
                "mae": float(skm.mean_absolute_error(labels, scores)),
                "r2": float(skm.r2_score(labels, scores)) if len(labels) > 1 else float("nan"), "rows": int(len(labels))}
    clipped = np.clip(scores, 1e-7, 1 - 1e-7)
    single_class = len(np.unique(labels)) < 2
    return {
        "auc": float("nan") if single_class else float(skm.roc_auc_score(labels, scores)),
        "log_loss": float(skm.log_loss(labels, clipped, labels=[0, 1])),
        "accuracy": float(skm.accuracy_score(labels, scores >= 0.5)),
        "brier": float(skm.brier_score_loss(labels, scores)),
        "calibration_error": expected_calibration_error(labels, scores),
        "rows": int(len(labels)),
    }


def failed_thresholds(task: str, metrics: dict[str, float], thresholds: Thresholds) -> list[str]:
    """Why a candidate is not blessed (empty: blessed). Comparisons are written so that NaN fails them."""
    if metrics.get("non_finite_scores"):
        return [f"{metrics['non_finite_scores']} of {metrics['rows']} held-out predictions are NaN or infinite"]
    reasons = [f"{name} is not finite" for name in METRICS[task] if not np.isfinite(metrics[name])]
    if reasons:
        return reasons
    bounds = {"binary": [("auc", "min", thresholds.min_auc), ("log_loss", "max", thresholds.max_log_loss),
                         ("calibration_error", "max", thresholds.max_calibration_error)],
              "regression": [("r2", "min", thresholds.min_r2), ("rmse", "max", thresholds.max_rmse),
                             ("mae", "max", thresholds.max_mae)]}[task]
    for name, side, bound in bounds:
        if bound is None:
            continue
        if side == "min" and not metrics[name] >= bound:
            reasons.append(f"{name} {metrics[name]:.4f} < min_{name} {bound}")
        if side == "max" and not metrics[name] <= bound:
            reasons.append(f"{name} {metrics[name]:.4f} > max_{name} {bound}")
    return reasons


def rank_key(task: str, row: dict[str, Any]) -> tuple[float, str]:
    """Best first by the primary metric (NaN last), ties broken by name so the choice is deterministic."""
    metric = PRIMARY_METRIC[task]
    value = row["metrics"][metric]
    sign = -1.0 if HIGHER_IS_BETTER[metric] else 1.0
    return (np.inf if not np.isfinite(value) else sign * value, row["candidate"])


def trained_candidates(candidates_root: Path) -> list[CandidateFiles]:
    """The candidates a trainer published (a trainer publishes its folder whole, predictions included)."""
    found = [CandidateFiles(p) for p in sorted(candidates_root.glob("*/"))] if candidates_root.exists() else []
    return [c for c in found if c.predictions.exists()]


def evaluate(task: str, candidates_root: Path, evaluation_path: Path, thresholds: Thresholds,
             only: list[str] | None = None, failure_file: Callable[[str], Path] | None = None) -> dict[str, Any]:
    """Score the finished candidates under ``candidates_root`` (``only`` these names, when given).

    ``only`` keeps a rerun with fewer candidates from re-scoring folders an earlier run left behind;
    a chosen candidate that did not train (a skipped step) is named in the log and left out, and one
    whose trainer failed its contract is listed under ``failed`` with the reason from its ``failure_file(name)``.
    """
    found = trained_candidates(candidates_root)
    failed: list[dict[str, Any]] = []
    if only is not None:
        missing = sorted(set(only) - {c.dir.name for c in found})
        records = [failure_file(name) for name in missing] if failure_file is not None else []
        failed = [read_json(r) for r in records if r.exists()]
        if missing:
            log.warning("chosen candidates without a trained model (skipped, not run or failed): %s", ", ".join(missing))
        for record in failed:
            log.warning("left out: %s", record["reason"])
        found = [c for c in found if c.dir.name in only]
    if not found:
        raise KilnError(f"no trained candidates under {candidates_root}" + (f" among {', '.join(only)}" if only else "")
                        + "".join(f"; {r['reason']}" for r in failed))
    table = []
    for cand in found:
        info = read_json(cand.info)
        preds = pd.read_parquet(cand.predictions)
        metrics = compute_metrics(task, preds["label"].to_numpy(dtype=float), preds["score"].to_numpy(dtype=float))
        reasons = failed_thresholds(task, metrics, thresholds)
        write_json(cand.metrics, metrics)
        table.append({"candidate": info["candidate"], "framework": info["framework"], "dir": str(cand.dir),
                      "metrics": metrics, "passes": not reasons, "reasons": reasons})
    ranked = sorted(table, key=lambda r: rank_key(task, r))
    best = ranked[0]
    metric = PRIMARY_METRIC[task]
    verdict = {
        "task": task,
        "primary_metric": metric,
        "higher_is_better": HIGHER_IS_BETTER[metric],
        "candidates": ranked,
        "failed": failed,
        "best": best["candidate"],
        "best_dir": best["dir"],
        "blessed": best["passes"],
        "thresholds": asdict(thresholds),
    }
    write_json(evaluation_path, verdict)
    log.info("evaluation: %s", format_table(task, ranked))
    return {"best": best["candidate"], "blessed": best["passes"], metric: best["metrics"][metric],
            "primary_metric": metric, "evaluation": str(evaluation_path), "candidates": len(ranked),
            "failed": [r["candidate"] for r in failed]}


def format_table(task: str, rows: list[dict[str, Any]]) -> str:
    names = METRICS[task]
    short = {"calibration_error": "ece"}
    lines = [f"{'candidate':<22}" + "".join(f"{short.get(n, n):>12}" for n in names) + "  verdict"]
    for r in rows:
        verdict = "pass" if r["passes"] else "fail: " + "; ".join(r["reasons"])
        lines.append(f"{r['candidate']:<22}" + "".join(f"{r['metrics'][n]:>12.4f}" for n in names) + f"  {verdict}")
    return "\n" + "\n".join(lines)
