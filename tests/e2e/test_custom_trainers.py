"""Bring your own algorithm, end to end through `airflow dags test` on real Airflow, Spark, MXNet and Ignite:
the shipped examples' trainers (examples/) compete, register and are served from Ignite; trainers that break
the contract (tests/trainers/broken_trainers.py) fail their own task with the reason while the run goes on."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from ml_tasks.core.layout import CandidateFiles, VersionFiles
from ml_tasks.core.spec import load_spec
from ml_tasks.features.feature_cache import current_version
from tests.conftest import PROJECT_ROOT as ROOT
from tests.e2e.helpers import dags_test

pytestmark = [pytest.mark.slow, pytest.mark.ignite]
DS = "2026-02-01"
EXAMPLES = ROOT / "examples"


def champion(data_root: Path, model: str) -> tuple[dict, VersionFiles]:
    state = json.loads((data_root / "registry" / model / "registry.json").read_text())
    assert state["champion"] == DS
    return state["versions"][DS], VersionFiles(data_root / "registry" / model / state["versions"][DS]["path"])


def served_equals_offline(data_root: Path, spec, ignite_node, tolerance: float) -> None:
    """The champion answers /datasets/<name>/predict from Ignite's features with its offline held-out scores."""
    from ml_tasks.serving.service import Route, Settings
    from tests.ml_tasks.test_serving import running_service

    _, version = champion(data_root, spec.registry_name)
    offline = pd.read_parquet(version.model.predictions).drop_duplicates("entity_id", keep=False).set_index("entity_id").score
    assert current_version(ignite_node.client(), spec.feature_cache).startswith(DS)  # the DAG warmed it
    route = Route(spec.name, spec.registry_name, spec.feature_cache, spec.task)
    with running_service(Settings(data_root=data_root, routes=[route], ignite_port=ignite_node.port)) as url, \
            httpx.Client(base_url=url) as http:
        entities = list(offline.index[:8])
        answer = http.post(f"/datasets/{spec.name}/predict", json={"entity_ids": entities})
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
    assert [p["entity_id"] for p in predictions] == entities
    value = "score" if spec.task == "binary" else "prediction"
    np.testing.assert_allclose([p[value] for p in predictions], offline.loc[entities].to_numpy(), rtol=tolerance, atol=tolerance)


def test_the_scikit_learn_example_competes_beside_a_built_in_and_its_champion_is_served(tmp_path, ignite_node):
    folder = EXAMPLES / "sklearn_forest"
    spec = load_spec(folder / "cancer_forest.yaml")
    data_root = tmp_path / "data"
    # the built-in MLP barely trained (one epoch, a tiny step), so the forest is the champion whose scorer serving loads
    out = dags_test("kiln_training_cancer_forest", DS, data_root,
                    {"candidates": ["forest", "mxnet_mlp"], "mlp_epochs": 1, "mlp_learning_rate": 1e-5,
                     "forest_n_estimators": 100}, datasets=folder)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    (run_dir,) = (data_root / spec.name / "runs" / f"ds={DS}").glob("run=*")
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert {c["candidate"] for c in evaluation["candidates"]} == {"forest", "mxnet_mlp"} and evaluation["failed"] == []
    entry, version = champion(data_root, spec.registry_name)
    assert entry["candidate"] == "forest" and entry["servability"]["servable"] and entry["auc"] > 0.95
    info = json.loads(version.model.info.read_text())
    assert (info["framework"], info["scorer"], info["params"]) == (
        "scikit-learn", "sklearn_forest:load", {"n_estimators": 100, "max_depth": 8, "min_samples_leaf": 2})
    assert (version.model.dir / "forest.joblib").exists()
    assert json.loads(version.lineage.read_text())["params"]["forest_n_estimators"] == 100  # the form's value, in lineage
    served_equals_offline(data_root, spec, ignite_node, 1e-9)


def test_the_gluon_example_is_served_while_broken_trainers_fail_their_own_tasks_with_the_reason(tmp_path, ignite_node):
    raw = yaml.safe_load((EXAMPLES / "gluon_wide_deep" / "diabetes_wide_deep.yaml").read_text())
    raw["python_path"] = [str(EXAMPLES / "gluon_wide_deep"), str(ROOT / "tests" / "trainers")]
    raw["trainers"] |= {"fire": {"entry": "broken_trainers:raises"}, "nothing": {"entry": "broken_trainers:returns_nothing"},
                        "nan": {"entry": "broken_trainers:nan_scores"},
                        "drift": {"entry": "broken_trainers:disagrees", "scorer": "broken_trainers:load_off_by_a_bit"}}
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    (datasets / "diabetes_wide_deep.yaml").write_text(yaml.safe_dump(raw))
    spec = load_spec(datasets / "diabetes_wide_deep.yaml")
    data_root = tmp_path / "data"
    broken = ["fire", "nothing", "nan", "drift"]
    out = dags_test("kiln_training_diabetes_wide_deep", DS, data_root, {"candidates": ["wide_deep", *broken]}, datasets=datasets)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    reasons = {"fire": "raised RuntimeError: the GPU is on fire", "nothing": "returned NoneType, expected Trained",
               "nan": "held-out predictions are NaN or infinite", "drift": "does not reproduce its held-out predictions"}
    for name, reason in reasons.items():
        assert f"candidate {name} (trainer broken_trainers:" in log and reason in log, name
    (run_dir,) = (data_root / spec.name / "runs" / f"ds={DS}").glob("run=*")
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert [c["candidate"] for c in evaluation["candidates"]] == ["wide_deep"]
    assert {f["candidate"]: reasons[f["candidate"]] in f["reason"] for f in evaluation["failed"]} == dict.fromkeys(broken, True)
    assert not any((run_dir / "candidates" / name).exists() for name in broken)
    entry, version = champion(data_root, spec.registry_name)
    assert entry["candidate"] == "wide_deep" and entry["servability"]["servable"]
    metrics = json.loads(version.metrics.read_text())
    assert metrics["r2"] > 0.3, metrics  # it learned (the mean predicts r2 = 0)
    assert json.loads(CandidateFiles(version.model.dir).info.read_text())["framework"] == "mxnet-gluon"
    served_equals_offline(data_root, spec, ignite_node, 1e-5)
