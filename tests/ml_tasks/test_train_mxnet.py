"""MXNet training on the shared small partition: real MXNet, one process."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.metrics import r2_score, roc_auc_score

from ml_tasks.errors import KilnError
from ml_tasks.layout import CandidateFiles
from ml_tasks.mlp import MLPConfig, iter_minibatches
from ml_tasks.train_mxnet import train_mxnet

pytestmark = pytest.mark.slow
CFG = MLPConfig(epochs=3, batch_size=128)


def run(small_features, tmp_path, name: str, cfg: MLPConfig = CFG) -> dict:
    lay = small_features["layout"]
    return train_mxnet(lay.features, CandidateFiles(tmp_path / name / "candidate"), tmp_path / name / "ckpt", lay.transform_dir, cfg)


def test_single_process_mlp_learns_and_writes_the_candidate(small_features, tmp_path):
    result = run(small_features, tmp_path, "a")
    cand = tmp_path / "a" / "candidate"
    preds = pd.read_parquet(cand / "predictions.parquet")
    assert result["test_auc"] > 0.72
    assert roc_auc_score(preds.label, preds.score) == pytest.approx(result["test_auc"])
    assert {"model-symbol.json", "model-0000.params", "candidate.json"} <= {p.name for p in cand.iterdir()}


def test_same_data_and_seed_give_the_same_model(small_features, tmp_path):
    assert run(small_features, tmp_path, "a")["params_digest"] == run(small_features, tmp_path, "b")["params_digest"]


def test_a_stopped_run_resumes_from_its_checkpoint_to_the_same_model(small_features, tmp_path, caplog):
    straight = run(small_features, tmp_path, "straight")["params_digest"]
    run(small_features, tmp_path, "resumed", MLPConfig(epochs=2, batch_size=128))
    caplog.set_level("INFO")
    resumed = run(small_features, tmp_path, "resumed")
    assert "resuming after epoch 2" in caplog.text
    assert resumed["params_digest"] == straight


def test_worker_shards_are_disjoint_and_equal_in_steps(small_features):
    train = small_features["layout"].features.train
    shards = [list(iter_minibatches(train, 100, rank, 2, 20, 7, 1)) for rank in (0, 1)]
    assert [len(s) for s in shards] == [20, 20]
    first_rows = [{tuple(b[0][0]) for b in s} for s in shards]
    assert not first_rows[0] & first_rows[1]


def test_too_little_data_for_the_batch_is_named(small_features, tmp_path):
    with pytest.raises(KilnError, match="too few for batch_size 65536 x 1 workers"):
        run(small_features, tmp_path, "x", MLPConfig(batch_size=65536))


def test_a_rerun_with_fewer_epochs_is_a_model_of_that_many_epochs(small_features, tmp_path):
    two = run(small_features, tmp_path, "two", MLPConfig(epochs=2, batch_size=128))["params_digest"]
    run(small_features, tmp_path, "lowered", MLPConfig(epochs=4, batch_size=128))
    lowered = run(small_features, tmp_path, "lowered", MLPConfig(epochs=2, batch_size=128))
    assert lowered["params_digest"] == two  # never the epoch-4 weights under a 2-epoch label


def test_regression_mlp_learns_on_the_standardised_label_and_answers_in_its_unit(diabetes_features, tmp_path):
    lay = diabetes_features["layout"]
    cand = CandidateFiles(tmp_path / "reg")
    result = train_mxnet(lay.features, cand, tmp_path / "ckpt", lay.transform_dir, MLPConfig(epochs=30, batch_size=16),
                         task="regression")
    preds = pd.read_parquet(cand.predictions)
    assert result["task"] == "regression" and result["test_rmse"] == pytest.approx(((preds.label - preds.score) ** 2).mean() ** 0.5)
    assert r2_score(preds.label, preds.score) > 0.2 and 50 < preds.score.mean() < 250  # the label's unit
