"""Evaluation and the registry on real candidate folders (predictions Parquet, as trainers write them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_tasks.atomic import write_json
from ml_tasks.errors import KilnError
from ml_tasks.evaluate import Thresholds, compute_metrics, evaluate
from ml_tasks.layout import Layout
from ml_tasks.registry import champion_dir, register, rollback


def make_candidate(lay: Layout, name: str, signal: float, seed: int = 0) -> Path:
    """A candidate whose scores separate the classes with the given strength."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 2_000)
    scores = 1 / (1 + np.exp(-(signal * (labels - 0.5) * 2 + rng.normal(0, 1, 2_000) - 0.0)))
    cand = lay.candidate_dir(name)
    cand.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"entity_id": [f"e{i}" for i in range(2_000)], "label": labels, "score": scores}).to_parquet(cand / "predictions.parquet")
    write_json(cand / "candidate.json", {"candidate": name, "framework": "test"})
    (lay.transform_dir).mkdir(parents=True, exist_ok=True)
    write_json(lay.transform_dir / "portable_transform.json", {})
    return cand


def run_day(data_root: Path, ds: str, signal: float, margin: float = 0.0, thresholds: Thresholds | None = None) -> dict:
    lay = Layout(data_root, ds)
    make_candidate(lay, "weak", signal / 3, seed=1)
    make_candidate(lay, "strong", signal, seed=2)
    evaluate(lay.candidates_root, lay.evaluation, thresholds or Thresholds(min_auc=0.6, max_log_loss=5, max_calibration_error=1))
    return register(lay.evaluation, lay.registry_root, "m", ds, lay.transform_dir, margin)


def test_metrics_are_right_for_perfect_and_random_scores():
    labels = np.array([0, 0, 1, 1])
    perfect = compute_metrics(labels, np.array([0.1, 0.2, 0.8, 0.9]))
    assert perfect["auc"] == 1.0 and perfect["accuracy"] == 1.0
    assert compute_metrics(labels, np.array([0.5] * 4))["auc"] == 0.5
    with pytest.raises(KilnError, match="2 held-out scores are NaN"):
        compute_metrics(labels, np.array([0.1, np.nan, np.nan, 0.9]))


def test_best_candidate_wins_and_is_blessed(data_root):
    result = run_day(data_root, "2026-01-01", signal=1.5)
    verdict = json.loads(Layout(data_root, "2026-01-01").evaluation.read_text())
    assert verdict["best"] == "strong" and result["candidate"] == "strong"
    assert [c["candidate"] for c in verdict["candidates"]] == ["strong", "weak"]
    assert result["promoted"] and result["champion"] == "2026-01-01" and result["previous_champion"] is None
    assert (champion_dir(data_root / "registry", "m") / "model" / "predictions.parquet").exists()


def test_unblessed_model_is_registered_but_not_promoted(data_root):
    result = run_day(data_root, "2026-01-01", signal=0.05, thresholds=Thresholds(min_auc=0.9))
    assert not result["promoted"] and result["champion"] is None
    assert any("min_auc 0.9" in r for r in result["reasons"])
    with pytest.raises(KilnError, match="model 'm' has no champion"):
        champion_dir(data_root / "registry", "m")


def test_promotion_needs_the_margin_and_rollback_is_one_step(data_root):
    run_day(data_root, "2026-01-01", signal=1.0)
    better = run_day(data_root, "2026-01-02", signal=2.0, margin=0.05)
    assert better["promoted"] and better["champion"] == "2026-01-02"
    same = run_day(data_root, "2026-01-03", signal=2.0, margin=0.05)
    assert not same["promoted"] and "by margin 0.05" in same["reasons"][0]
    assert same["champion"] == "2026-01-02"
    assert rollback(data_root / "registry", "m") == {"rolled_back": "2026-01-02", "champion": "2026-01-01"}


def test_rerun_of_a_middle_day_keeps_the_same_decision_and_champion(data_root):
    for ds, signal in [("2026-01-01", 1.0), ("2026-01-02", 1.2), ("2026-01-03", 2.0)]:
        run_day(data_root, ds, signal)
    state_before = json.loads((data_root / "registry/m/registry.json").read_text())
    run_day(data_root, "2026-01-02", 1.2)
    state_after = json.loads((data_root / "registry/m/registry.json").read_text())
    assert state_after == state_before
    assert state_after["champion"] == "2026-01-03"


def test_evaluate_without_candidates_is_an_error(data_root):
    lay = Layout(data_root, "2026-01-01")
    with pytest.raises(KilnError, match="no trained candidates under"):
        evaluate(lay.candidates_root, lay.evaluation, Thresholds())
