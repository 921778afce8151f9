"""What every MLP trainer promises (real MXNet and real Singa, one process, on the shared small partitions):
determinism, exact resume, no stale epochs, a named error for too little data, regression in the label's unit."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.metrics import r2_score

from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import CandidateFiles
from ml_tasks.trainer import train_candidate
from ml_tasks.training.candidates import BUILTIN_TRAINERS
from ml_tasks.training.mlp import MLPConfig

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("framework", ["mxnet", "singa"])]
TRAINERS = {"mxnet": BUILTIN_TRAINERS["mxnet_mlp"], "singa": BUILTIN_TRAINERS["singa_mlp"]}
CFG = MLPConfig(epochs=3, batch_size=128)


def run(framework: str, features, tmp_path, name: str, cfg: MLPConfig = CFG, task: str = "binary") -> dict:
    lay = features["layout"]
    return train_candidate(TRAINERS[framework], cfg.as_settings(), task=task, features=lay.features,
                           candidate=CandidateFiles(tmp_path / name / "candidate"), checkpoint_dir=tmp_path / name / "ckpt",
                           transform_dir=lay.transform_dir)


def test_same_data_and_seed_give_the_same_model(framework, small_features, tmp_path):
    a, b = (run(framework, small_features, tmp_path, name)["params_digest"] for name in ("a", "b"))
    assert a == b


def test_a_stopped_run_resumes_from_its_checkpoint_to_the_same_model(framework, small_features, tmp_path, caplog):
    straight = run(framework, small_features, tmp_path, "straight")["params_digest"]
    run(framework, small_features, tmp_path, "resumed", MLPConfig(epochs=2, batch_size=128))
    caplog.set_level("INFO")
    resumed = run(framework, small_features, tmp_path, "resumed")
    assert "resuming after epoch 2" in caplog.text
    assert resumed["params_digest"] == straight  # weights and the optimizer's state restored exactly


def test_a_rerun_with_fewer_epochs_is_a_model_of_that_many_epochs(framework, small_features, tmp_path):
    two = run(framework, small_features, tmp_path, "two", MLPConfig(epochs=2, batch_size=128))["params_digest"]
    run(framework, small_features, tmp_path, "lowered", MLPConfig(epochs=4, batch_size=128))
    lowered = run(framework, small_features, tmp_path, "lowered", MLPConfig(epochs=2, batch_size=128))
    assert lowered["params_digest"] == two  # never the epoch-4 weights under a 2-epoch label


def test_too_little_data_for_the_batch_is_named(framework, small_features, tmp_path):
    with pytest.raises(KilnError, match="too few for batch_size 65536"):
        run(framework, small_features, tmp_path, "x", MLPConfig(batch_size=65536))


def test_regression_mlp_learns_on_the_standardised_label_and_answers_in_its_unit(framework, diabetes_features, tmp_path):
    result = run(framework, diabetes_features, tmp_path, "reg", MLPConfig(epochs=30, batch_size=16), task="regression")
    preds = pd.read_parquet(CandidateFiles(tmp_path / "reg" / "candidate").predictions)
    assert result["task"] == "regression" and result["test_rmse"] == pytest.approx(((preds.label - preds.score) ** 2).mean() ** 0.5)
    assert r2_score(preds.label, preds.score) > 0.2 and 50 < preds.score.mean() < 250  # the label's unit
