"""Evaluate every candidate on the same held-out rows, pick the best, and bless it only past the thresholds.

Candidates of any framework are compared through their ``predictions.parquet`` (entity_id, label,
score), so Spark MLlib, MXNet and Singa models meet in one table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_tasks.atomic import read_json, write_json
from ml_tasks.errors import KilnError

log = logging.getLogger(__name__)
PREDICTIONS_FILE = "predictions.parquet"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class Thresholds:
    min_auc: float = 0.65
    max_log_loss: float = 0.69
    max_calibration_error: float = 0.1


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Weighted mean |observed rate - mean score| over equal-width score bins."""
    idx = np.minimum((scores * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() * abs(labels[mask].mean() - scores[mask].mean())
    return float(total / len(labels))


def compute_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score

    if len(labels) == 0:
        raise KilnError("no held-out rows to evaluate")
    bad = int((~np.isfinite(scores)).sum())
    if bad:  # a broken candidate: it fails its verdict (see failed_thresholds), the others are still compared
        nan = float("nan")
        return {"auc": nan, "log_loss": nan, "accuracy": nan, "brier": nan, "calibration_error": nan,
                "rows": int(len(labels)), "non_finite_scores": bad}
    clipped = np.clip(scores, 1e-7, 1 - 1e-7)
    single_class = len(np.unique(labels)) < 2
    return {
        "auc": float("nan") if single_class else float(roc_auc_score(labels, scores)),
        "log_loss": float(log_loss(labels, clipped, labels=[0, 1])),
        "accuracy": float(accuracy_score(labels, scores >= 0.5)),
        "brier": float(brier_score_loss(labels, scores)),
        "calibration_error": expected_calibration_error(labels, scores),
        "rows": int(len(labels)),
    }


def failed_thresholds(metrics: dict[str, float], thresholds: Thresholds) -> list[str]:
    """Why a candidate is not blessed (empty: blessed). Comparisons are written so that NaN fails them."""
    if metrics.get("non_finite_scores"):
        return [f"{metrics['non_finite_scores']} of {metrics['rows']} held-out scores are NaN or infinite"]
    reasons = [f"{name} is not finite" for name in ("auc", "log_loss", "calibration_error")
               if not np.isfinite(metrics[name])]
    if reasons:
        return reasons
    if not metrics["auc"] >= thresholds.min_auc:
        reasons.append(f"auc {metrics['auc']:.4f} < min_auc {thresholds.min_auc}")
    if not metrics["log_loss"] <= thresholds.max_log_loss:
        reasons.append(f"log_loss {metrics['log_loss']:.4f} > max_log_loss {thresholds.max_log_loss}")
    if not metrics["calibration_error"] <= thresholds.max_calibration_error:
        reasons.append(
            f"calibration_error {metrics['calibration_error']:.4f} > {thresholds.max_calibration_error}"
        )
    return reasons


def evaluate(
    candidates_root: Path, evaluation_path: Path, thresholds: Thresholds, only: list[str] | None = None
) -> dict[str, Any]:
    """Score the finished candidates under ``candidates_root`` (``only`` these names, when given).

    ``only`` keeps a rerun with fewer candidates from re-scoring folders an earlier run left behind;
    a chosen candidate that did not train (a skipped step) is named in the log and left out.
    """
    found = sorted(p for p in candidates_root.glob("*/") if (p / PREDICTIONS_FILE).exists()) if candidates_root.exists() else []
    if only is not None:
        missing = sorted(set(only) - {p.name for p in found})
        if missing:
            log.warning("chosen candidates without a trained model (skipped or not run): %s", ", ".join(missing))
        found = [p for p in found if p.name in only]
    if not found:
        raise KilnError(f"no trained candidates under {candidates_root}" + (f" among {', '.join(only)}" if only else ""))
    table = []
    for cand_dir in found:
        info = read_json(cand_dir / "candidate.json")
        preds = pd.read_parquet(cand_dir / PREDICTIONS_FILE)
        metrics = compute_metrics(preds["label"].to_numpy(), preds["score"].to_numpy(dtype=float))
        reasons = failed_thresholds(metrics, thresholds)
        write_json(cand_dir / METRICS_FILE, metrics)
        table.append({"candidate": info["candidate"], "framework": info["framework"], "dir": str(cand_dir),
                      "metrics": metrics, "passes": not reasons, "reasons": reasons})
    # Best by AUC, ties broken by log loss then name so the choice is deterministic; NaN ranks last.
    ranked = sorted(table, key=lambda r: (-np.nan_to_num(r["metrics"]["auc"], nan=-1.0),
                                          np.nan_to_num(r["metrics"]["log_loss"], nan=np.inf), r["candidate"]))
    best = ranked[0]
    verdict = {
        "candidates": ranked,
        "best": best["candidate"],
        "best_dir": best["dir"],
        "blessed": best["passes"],
        "thresholds": thresholds.__dict__,
    }
    write_json(evaluation_path, verdict)
    log.info("evaluation: %s", format_table(ranked))
    return {"best": best["candidate"], "blessed": best["passes"], "auc": best["metrics"]["auc"],
            "evaluation": str(evaluation_path), "candidates": len(ranked)}


def format_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'candidate':<22}{'auc':>8}{'log_loss':>10}{'accuracy':>10}{'ece':>8}  verdict"
    lines = [head]
    for r in rows:
        m = r["metrics"]
        verdict = "pass" if r["passes"] else "fail: " + "; ".join(r["reasons"])
        lines.append(f"{r['candidate']:<22}{m['auc']:>8.4f}{m['log_loss']:>10.4f}{m['accuracy']:>10.4f}"
                     f"{m['calibration_error']:>8.4f}  {verdict}")
    return "\n" + "\n".join(lines)
