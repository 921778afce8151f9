"""Singa training on the shared small partition: real Apache Singa (built from source by setup), CPU."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from ml_tasks.core.layout import CandidateFiles
from ml_tasks.trainer import train_candidate
from ml_tasks.training.candidates import BUILTIN_TRAINERS
from ml_tasks.training.mlp import MLPConfig, count_rows

pytestmark = pytest.mark.slow
CFG = MLPConfig(epochs=3, batch_size=128)


def run(features, tmp_path, name: str, cfg: MLPConfig = CFG, task: str = "binary") -> dict:
    lay = features["layout"]
    return train_candidate(BUILTIN_TRAINERS["singa_mlp"], cfg.as_settings(), task=task, features=lay.features,
                           candidate=CandidateFiles(tmp_path / name / "candidate"), checkpoint_dir=tmp_path / name / "ckpt",
                           transform_dir=lay.transform_dir)


def test_singa_mlp_learns_logs_each_epoch_and_writes_the_candidate(small_features, tmp_path, caplog):
    caplog.set_level("INFO")
    result = run(small_features, tmp_path, "a")
    cand = CandidateFiles(tmp_path / "a" / "candidate")
    preds = pd.read_parquet(cand.predictions)
    assert result["framework"] == "singa" and result["test_auc"] > 0.72
    assert roc_auc_score(preds.label, preds.score) == pytest.approx(result["test_auc"])
    assert len(preds) == count_rows(small_features["layout"].features.test)  # every held-out row scored
    epochs = [line for line in caplog.messages if line.startswith("singa epoch")]
    assert [e.split()[2] for e in epochs] == ["1/3", "2/3", "3/3"] and all("loss=" in e and "val_auc=" in e for e in epochs)
    losses = [float(e.split("loss=")[1].split()[0]) for e in epochs]
    assert losses[-1] < losses[0]  # the optimizer really steps (Singa's shipped MLP example does not on CPU)
    assert set(np.load(cand.singa_states).files) == {"hidden0.W", "hidden0.b", "hidden1.W", "hidden1.b", "out.W", "out.b"}


def test_the_exported_mlp_scores_what_singa_scored(small_features, tmp_path):
    """What serving loads (no Singa import) reproduces Singa's own held-out scores."""
    from ml_tasks.serving.portable import predict_score

    run(small_features, tmp_path, "a")
    cand = CandidateFiles(tmp_path / "a" / "candidate")
    test = pq.read_table(small_features["layout"].features.test, columns=["entity_id", "features"]).to_pandas()
    offline = pd.read_parquet(cand.predictions).set_index("entity_id")["score"]
    test = test.drop_duplicates("entity_id", keep=False)
    served = predict_score(np.stack(test["features"].to_numpy()), json.loads(cand.portable_model.read_text()))
    assert np.max(np.abs(served - offline.loc[test["entity_id"]].to_numpy())) < 1e-5
