"""MXNet training on the shared small partition: real MXNet, one process."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ml_tasks.core.layout import CandidateFiles
from ml_tasks.trainer import train_candidate
from ml_tasks.training.candidates import BUILTIN_TRAINERS
from ml_tasks.training.mlp import MLPConfig, iter_minibatches

pytestmark = pytest.mark.slow
CFG = MLPConfig(epochs=3, batch_size=128)


def run(small_features, tmp_path, name: str, cfg: MLPConfig = CFG) -> dict:
    lay = small_features["layout"]
    return train_candidate(BUILTIN_TRAINERS["mxnet_mlp"], cfg.as_settings(), task="binary", features=lay.features,
                           candidate=CandidateFiles(tmp_path / name / "candidate"), checkpoint_dir=tmp_path / name / "ckpt",
                           transform_dir=lay.transform_dir)


def test_single_process_mlp_learns_and_writes_the_candidate(small_features, tmp_path):
    result = run(small_features, tmp_path, "a")
    cand = tmp_path / "a" / "candidate"
    preds = pd.read_parquet(cand / "predictions.parquet")
    assert result["test_auc"] > 0.72
    assert roc_auc_score(preds.label, preds.score) == pytest.approx(result["test_auc"])
    assert {"model-symbol.json", "model-0000.params", "candidate.json"} <= {p.name for p in cand.iterdir()}


def test_worker_shards_are_disjoint_and_equal_in_steps(small_features):
    train = small_features["layout"].features.train
    shards = [list(iter_minibatches(train, 100, rank, 2, 20, 7, 1)) for rank in (0, 1)]
    assert [len(s) for s in shards] == [20, 20]
    first_rows = [{tuple(b[0][0]) for b in s} for s in shards]
    assert not first_rows[0] & first_rows[1]
