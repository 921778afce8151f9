"""kiln_training end to end through `airflow dags test` on real Airflow, Spark, MXNet and Ignite.

Consecutive days, backfills, reruns and the full candidate set run on a running Airflow
(test_running_airflow.py); here the form's `candidates` keeps the run short on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml_tasks.feature_cache import current_version
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
    assert lineage["data_partition"].endswith(f"raw/ds={DS}")
    assert lineage["dag_run_id"].startswith("manual__") and lineage["params"]["rows"] == 6000
    assert lineage["params"]["candidates"] == CANDIDATES
    assert lineage["git_commit"] and len(lineage["git_commit"]) == 40
    candidate = json.loads((version / "model" / "candidate.json").read_text())
    assert (version / "model" / candidate["artifact"]).exists()
    assert (version / "transform" / "portable_transform.json").exists()
    assert not list(data_root.rglob(".*tmp-*")), "half-written output left behind"


def test_chosen_candidates_compete_and_singa_is_skipped_with_its_reason(one_day):
    data_root, log = one_day
    (run_dir,) = (data_root / "runs" / f"ds={DS}").glob("run=*")  # this run's own folder
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert {c["candidate"] for c in evaluation["candidates"]} == {"mxnet_mlp"}
    assert all(c["metrics"]["auc"] > AUC_FLOOR for c in evaluation["candidates"])
    assert "Apache Singa is not installed in this environment" in log
    assert not (run_dir / "candidates" / "singa_mlp").exists()


def test_the_new_champion_warmed_the_online_cache_with_its_own_features(one_day, ignite_node):
    from ml_tasks.feature_cache import source_version

    data_root, _ = one_day
    state = json.loads((data_root / "registry" / "transactions" / "registry.json").read_text())
    champion_features = Path(state["versions"][DS]["path"]) / "online_features.parquet"
    assert current_version(ignite_node.client(), "kiln_features") == f"{DS}-{source_version(champion_features)}"
