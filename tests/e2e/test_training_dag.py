"""kiln_training end to end through `airflow dags test` on real Airflow, Spark, MXNet and Ignite.

Consecutive days, backfills, reruns and the full candidate set run on a running Airflow
(test_running_airflow.py); here the form's `candidates` keeps the run short on 2 cores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from ml_tasks.feature_cache import current_version
from ml_tasks.layout import CandidateFiles, VersionFiles
from ml_tasks.spec import load_spec
from tests.conftest import PROJECT_ROOT as ROOT
from tests.e2e.helpers import dags_test

pytestmark = [pytest.mark.slow, pytest.mark.ignite]
DS = "2026-02-01"
CANDIDATES = ["mxnet_mlp", "singa_mlp"]
AUC_FLOOR = 0.72  # the generator's hidden rule gives ~0.78; a pipeline that learns nothing gives 0.5


@pytest.fixture(scope="module")
def one_day(tmp_path_factory, ignite_node):
    data_root = tmp_path_factory.mktemp("e2e") / "data"
    out = dags_test("kiln_training", DS, data_root, {"rows": 6000, "candidates": CANDIDATES})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return data_root, out.stdout + out.stderr


def test_the_whole_dag_registers_a_champion_that_learned(one_day):
    data_root, _ = one_day
    registry = data_root / "registry" / "transactions"
    state = json.loads((registry / "registry.json").read_text())
    assert state["champion"] == DS
    assert state["versions"][DS]["auc"] > AUC_FLOOR
    version = Path(state["versions"][DS]["path"])
    assert version.parent == registry / "versions" / DS
    assert state["versions"][DS]["servability"]["servable"] is True  # loaded and scored as serving does, before promotion
    assert (version / "online_features.parquet").exists()  # the features the cache must hold while it is champion
    lineage = json.loads((version / "lineage.json").read_text())
    assert lineage["data_partition"].endswith(f"transactions/raw/ds={DS}") and lineage["dataset"] == "transactions"
    assert lineage["dag_run_id"].startswith("manual__") and lineage["params"]["rows"] == 6000
    assert lineage["params"]["candidates"] == CANDIDATES
    assert lineage["git_commit"] and len(lineage["git_commit"]) == 40
    files = VersionFiles(version)
    (run_dir,) = (data_root / "transactions" / "runs" / f"ds={DS}").glob("run=*")
    best = json.loads((run_dir / "evaluation.json").read_text())["best"]
    assert json.loads(files.model.info.read_text())["candidate"] == best == state["versions"][DS]["candidate"]
    assert (files.model.mxnet_params if best == "mxnet_mlp" else files.model.portable_model).exists()
    assert files.transform.portable.exists()
    assert not list(data_root.rglob(".*tmp-*")), "half-written output left behind"


def test_chosen_candidates_compete_singa_trained_for_real_beside_mxnet(one_day):
    data_root, log = one_day
    (run_dir,) = (data_root / "transactions" / "runs" / f"ds={DS}").glob("run=*")  # this run's own folder
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    metrics = {c["candidate"]: c["metrics"] for c in evaluation["candidates"]}
    assert set(metrics) == {"mxnet_mlp", "singa_mlp"}
    assert all(m["auc"] > AUC_FLOOR for m in metrics.values())
    assert metrics["singa_mlp"]["auc"] != metrics["mxnet_mlp"]["auc"]  # its own numbers, not a copy
    assert "singa epoch 4/4 loss=" in log and "Apache Singa is not installed" not in log
    singa = json.loads(CandidateFiles(run_dir / "candidates" / "singa_mlp").info.read_text())
    assert singa["framework"] == "singa" and singa["test_rows"] == metrics["singa_mlp"]["rows"]


def test_the_new_champion_warmed_the_online_cache_with_its_own_features(one_day, ignite_node):
    from ml_tasks.feature_cache import source_version

    data_root, _ = one_day
    state = json.loads((data_root / "registry" / "transactions" / "registry.json").read_text())
    champion_features = Path(state["versions"][DS]["path"]) / "online_features.parquet"
    assert current_version(ignite_node.client(), "kiln_features_transactions") == f"{DS}-{source_version(champion_features)}"


def credit_csv(path: Path, rows: int = 3_000) -> None:
    """A user's own table: an id, 30 numeric features, a 0/1 label not called 'label', a date and a category."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(rows, 30))
    logit = x[:, :6] @ np.array([1.2, -0.8, 0.6, 0.5, -0.4, 0.3]) - 0.5
    frame = pd.DataFrame(x, columns=[f"f_{i:02d}" for i in range(30)])
    frame.insert(0, "customer_ref", [f"CR-{i:06d}" for i in range(rows)])
    frame["branch"] = rng.choice(["north", "south", "west"], rows)
    frame["opened_at"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 86_400 * 30, rows), unit="s")
    frame["defaulted"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame.to_csv(path, index=False)


@pytest.fixture(scope="module")
def user_csv(tmp_path_factory, ignite_node):
    """A user's CSV from infer-dataset through its own DAG to a registered, warmed model."""
    base = tmp_path_factory.mktemp("user-csv")
    datasets = base / "datasets"
    shutil.copytree(ROOT / "datasets", datasets)
    credit_csv(base / "credit.csv")
    drafted = subprocess.run([sys.executable, "-m", "ml_tasks", "infer-dataset", str(base / "credit.csv"), "--label", "defaulted"],
                             capture_output=True, text=True, timeout=120)
    assert drafted.returncode == 0, drafted.stderr
    (datasets / "credit.yaml").write_text(drafted.stdout)
    # Singa alone, so its model is the champion that serving must load (the other families serve in other tests)
    out = dags_test("kiln_training_credit", DS, base / "data", {"candidates": ["singa_mlp"]}, datasets=datasets)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return base / "data", load_spec(datasets / "credit.yaml")


def test_a_users_csv_trains_registers_and_serves_a_singa_champion_as_its_own_pipeline(user_csv, ignite_node):
    from ml_tasks.serving import Route, Settings
    from tests.ml_tasks.test_serving import running_service

    data_root, spec = user_csv
    assert (spec.key, spec.label, spec.timestamp, spec.features.categorical) == ("customer_ref", "defaulted", "opened_at", ["branch"])
    assert len(spec.features.numeric) == 30
    state = json.loads((data_root / "registry" / "credit" / "registry.json").read_text())
    assert state["champion"] == DS and state["versions"][DS]["auc"] > 0.75
    assert state["versions"][DS]["candidate"] == "singa_mlp" and state["versions"][DS]["servability"]["servable"]
    (run_dir,) = (data_root / "credit" / "runs" / f"ds={DS}").glob("run=*")
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    offline = pd.read_parquet(CandidateFiles(Path(evaluation["best_dir"])).predictions).set_index("entity_id").score
    assert current_version(ignite_node.client(), spec.feature_cache).startswith(DS)  # the DAG warmed it
    route = Route(spec.name, spec.registry_name, spec.feature_cache, spec.task)
    with running_service(Settings(data_root=data_root, routes=[route], ignite_port=ignite_node.port)) as url, \
            httpx.Client(base_url=url) as http:
        entities = list(offline.index[:5])
        answers = http.post("/datasets/credit/predict", json={"entity_ids": entities}).json()["predictions"]
        assert [a["entity_id"] for a in answers] == entities
        # served by the exported MLP in float64 from the raw row; Singa scored in float32
        np.testing.assert_allclose([a["score"] for a in answers], offline.loc[entities].to_numpy(), atol=1e-5)


def test_the_diabetes_spec_trains_a_regression_champion(tmp_path_factory):
    data_root = tmp_path_factory.mktemp("diabetes") / "data"
    out = dags_test("kiln_training_diabetes", DS, data_root, {"candidates": ["spark_lr", "mxnet_mlp", "singa_mlp"],
                                                              "warm_cache": False})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    state = json.loads((data_root / "registry" / "diabetes" / "registry.json").read_text())
    assert state["champion"] == DS and state["primary_metric"] == "rmse" and state["higher_is_better"] is False
    metrics = json.loads(VersionFiles(Path(state["versions"][DS]["path"])).metrics.read_text())
    print(f"diabetes champion {state['versions'][DS]['candidate']}: held-out {metrics}")
    assert metrics["r2"] >= 0.35
    (run_dir,) = (data_root / "diabetes" / "runs" / f"ds={DS}").glob("run=*")
    evaluation = {c["candidate"]: c["metrics"] for c in json.loads((run_dir / "evaluation.json").read_text())["candidates"]}
    print({name: round(m["r2"], 3) for name, m in evaluation.items()})
    assert set(evaluation) == {"spark_lr", "mxnet_mlp", "singa_mlp"} and np.isfinite(evaluation["singa_mlp"]["rmse"])
