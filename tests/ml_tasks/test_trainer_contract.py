"""The trainer contract (ml_tasks/trainer.py): what a trainer gets, what it must leave, and the verdict on
trainers that break it (tests/trainers/broken_trainers.py), through the stage CLI like a DAG task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml_tasks.__main__ import main
from ml_tasks.core.atomic import LOCK_NAME, read_json
from ml_tasks.core.errors import BAD_INPUT_EXIT_CODE
from ml_tasks.core.layout import CandidateFiles, FeatureFiles, Layout
from ml_tasks.core.spec import SpecError, load_spec
from ml_tasks.trainer import TrainerFailed, load_scorer, run_trainer
from ml_tasks.training.candidates import TrainerRef
from tests.conftest import PROJECT_ROOT

BROKEN = PROJECT_ROOT / "tests" / "trainers"
DS = "2026-03-01"
HELD_OUT = 40


def write_features(features: FeatureFiles, rows: int = 200, width: int = 3) -> None:
    """Preprocessed rows as preprocess leaves them: entity_id, label, features (two files per split)."""
    rng = np.random.default_rng(5)
    for split, n in ((features.train, rows), (features.test, HELD_OUT)):
        split.mkdir(parents=True)
        x = rng.normal(size=(n, width))
        table = pa.table({"entity_id": [f"{split.name}-{i:03d}" for i in range(n)], "label": x @ [3.0, 1.0, 0.0] + 50,
                          "features": pa.array(x.tolist(), pa.list_(pa.float64()))})
        pq.write_table(table.slice(0, n // 2), split / "part-0.parquet")
        pq.write_table(table.slice(n // 2), split / "part-1.parquet")


def ref(entry: str, scorer: str = "broken_trainers:load") -> TrainerRef:
    return TrainerRef("mine", f"broken_trainers:{entry}", scorer, python_path=(str(BROKEN),))


def train(tmp_path: Path, entry: str, scorer: str = "broken_trainers:load") -> dict:
    features = FeatureFiles(tmp_path / "features")
    if not features.train.exists():
        write_features(features)
    return run_trainer(ref(entry, scorer), task="regression", features=features, candidate=CandidateFiles(tmp_path / "cand"),
                       checkpoint_dir=tmp_path / "ckpt", params={"alpha": 1}, seed=3, failure_file=tmp_path / "failed.json")


def test_a_good_trainer_is_published_with_every_held_out_prediction_and_its_scorer(tmp_path):
    result = train(tmp_path, "good")
    cand = CandidateFiles(tmp_path / "cand")
    preds = pd.read_parquet(cand.predictions)
    assert len(preds) == HELD_OUT and list(preds.entity_id) == [f"test-{i:03d}" for i in range(HELD_OUT)]  # the files' order
    info = read_json(cand.info)
    assert info["scorer"] == "broken_trainers:load" and info["trainer"] == "broken_trainers:good"
    assert info["params"] == {"alpha": 1} and info["seed"] == 3 and info["python_path"] == [str(BROKEN)]
    assert result["test_rows"] == HELD_OUT and np.isfinite(result["test_rmse"])
    x = np.stack(pq.read_table(tmp_path / "features" / "test").column("features").to_pylist())
    np.testing.assert_allclose(load_scorer(info["scorer"], cand.dir, info["python_path"])(x), preds.score)
    assert not (tmp_path / "failed.json").exists()


@pytest.mark.parametrize(("entry", "scorer", "reason"), [
    ("raises", "broken_trainers:load", "raised RuntimeError: the GPU is on fire"),
    ("returns_nothing", "broken_trainers:load", "returned NoneType, expected Trained"),
    ("nan_scores", "broken_trainers:load", f"6 of {HELD_OUT} held-out predictions are NaN or infinite"),
    ("no_artifact", "broken_trainers:load", "left no model artifact in its output folder"),
    ("disagrees", "broken_trainers:load_off_by_a_bit",
     "its scorer broken_trainers:load_off_by_a_bit, loaded from the written model, does not reproduce its held-out "
     "predictions: differs by up to"),
    ("good", "broken_trainers:missing", "its scorer broken_trainers:missing failed on the written model"),
])
def test_a_trainer_that_breaks_the_contract_fails_with_the_reason_and_leaves_no_model(tmp_path, entry, scorer, reason):
    train(tmp_path, "good")  # an earlier try's model, which must not compete in this try's place
    with pytest.raises(TrainerFailed, match="candidate mine") as err:
        train(tmp_path, entry, scorer)
    assert reason in str(err.value)
    assert not (tmp_path / "cand").exists()
    assert reason in read_json(tmp_path / "failed.json")["reason"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != LOCK_NAME], "temporary folder left behind"


def test_a_secondary_worker_publishes_nothing(tmp_path):
    assert train(tmp_path, "secondary") == {"rank": 1, "candidate": "mine", "secondary": True}
    assert not (tmp_path / "cand").exists()


SPEC = """
task: regression
source: {kind: sklearn, dataset: diabetes}
key: row_id
label: target
features: {numeric: [age, sex, bmi, bp, s1, s2, s3, s4, s5, s6]}
python_path: [PATH]
trainers:
  mean:
    entry: broken_trainers:good
    params:
      alpha: {type: number, minimum: 0, maximum: 5, default: 1.5}
  fire:
    entry: broken_trainers:raises
"""


@pytest.mark.parametrize(("edit", "message"), [
    (("broken_trainers:good", "no_such_module:train"), "field 'trainers.mean.entry': import path 'no_such_module:train': "
                                                       "no module 'no_such_module' in"),
    (("broken_trainers:good", "broken_trainers:nope"), "field 'trainers.mean.entry': import path 'broken_trainers:nope': "
                                                       ".*broken_trainers.py defines no 'nope' at its top level"),
    (("broken_trainers:good", "broken_trainers"), "import path 'broken_trainers' is not 'module.sub:function'"),
    (("  mean:", "  spark_lr:"), "field 'trainers.spark_lr': 'spark_lr' is taken by a built-in candidate"),
    (("  mean:", "  mxnet:"), "field 'trainers.mxnet': 'mxnet' is taken by a built-in candidate"),
    (("default: 1.5", "default: 9"), r"field 'trainers.mean.params.alpha': default 'mean_alpha': 9 is greater than the maximum of 5"),
])
def test_a_trainer_that_cannot_be_found_is_refused_when_the_spec_loads(tmp_path, edit, message):
    path = tmp_path / "mine.yaml"
    path.write_text(SPEC.replace("PATH", str(BROKEN)).replace(*edit))
    with pytest.raises(SpecError, match=message) as err:
        load_spec(path)
    assert str(err.value).startswith(str(path))


def test_through_the_cli_a_failed_trainer_is_left_out_and_named_and_alone_fails_evaluation(tmp_path, monkeypatch, capsys):
    datasets, data_root = tmp_path / "datasets", tmp_path / "data"
    datasets.mkdir()
    (datasets / "mine.yaml").write_text(SPEC.replace("PATH", str(BROKEN)))
    monkeypatch.setenv("KILN_DATASETS_DIR", str(datasets))
    lay = Layout.at(data_root, "mine", DS)
    write_features(lay.features)
    where = ["--dataset", "mine", "--data-root", str(data_root), "--ds", DS]

    assert main(["train", *where, "--candidate", "mean", "--param", "mean_alpha=2.5"]) == 0
    assert read_json(lay.candidate("mean").info)["params"] == {"alpha": 2.5}
    assert main(["train", *where, "--candidate", "mean", "--param", "mean_alpha=7"]) == BAD_INPUT_EXIT_CODE
    assert "option 'mean_alpha': 7.0 is greater than the maximum of 5" in capsys.readouterr().err
    assert main(["train", *where, "--candidate", "mean", "--param", "lr_reg=1"]) == BAD_INPUT_EXIT_CODE
    assert "candidate 'mean' takes mean_alpha=VALUE, mean_seed=VALUE" in capsys.readouterr().err
    assert main(["train", *where, "--candidate", "fire"]) == BAD_INPUT_EXIT_CODE
    assert "ERROR: candidate fire (trainer broken_trainers:raises): raised RuntimeError: the GPU is on fire" in capsys.readouterr().err

    assert main(["evaluate", *where, "--candidates", "mean,fire"]) == 0
    verdict = json.loads(lay.evaluation.read_text())
    assert [c["candidate"] for c in verdict["candidates"]] == ["mean"] and verdict["best"] == "mean"
    assert [f["candidate"] for f in verdict["failed"]] == ["fire"] and "GPU is on fire" in verdict["failed"][0]["reason"]
    capsys.readouterr()
    assert main(["report", *where]) == 0
    assert "fire                    left out: candidate fire (trainer broken_trainers:raises)" in capsys.readouterr().out
    assert main(["evaluate", *where, "--candidates", "fire"]) == BAD_INPUT_EXIT_CODE  # nothing valid: no verdict to register
    err = capsys.readouterr().err
    assert "no trained candidates" in err and "the GPU is on fire" in err


def test_the_readme_custom_candidate_trains_and_passes_the_contract_as_written(tmp_path):
    """The README's complete example (spec part and module), copied from it, loads and trains."""
    import re

    from ml_tasks.core.run_settings import resolve
    from ml_tasks.trainer import train_candidate

    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## Bring your own algorithm", 1)[1].split("\n## ", 1)[0]
    spec_part, module = re.findall(r"```(?:yaml|python)\n(.*?)```", section, re.S)
    assert len(module.splitlines()) + len(spec_part.splitlines()) <= 25  # what the README promises
    (tmp_path / "my_ridge.py").write_text(module)
    base = SPEC.split("python_path:")[0]
    (tmp_path / "mine.yaml").write_text(base + spec_part)
    spec = load_spec(tmp_path / "mine.yaml")
    assert "ridge_alpha" in spec.trainer_settings and spec.trainer_refs["ridge"].scorer == "my_ridge:load"
    features = FeatureFiles(tmp_path / "features")
    write_features(features)
    result = train_candidate(spec.trainer_refs["ridge"], resolve(spec, {"ridge_alpha": 0.5}), task="regression",
                             features=features, candidate=CandidateFiles(tmp_path / "cand"), checkpoint_dir=tmp_path / "ckpt")
    assert result["framework"] == "scikit-learn" and result["params"] == {"alpha": 0.5} and result["test_rmse"] < 1.0
