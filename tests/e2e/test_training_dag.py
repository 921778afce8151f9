"""kiln_training end to end on real Airflow (`airflow dags test`) and real Spark, over consecutive days."""

from __future__ import annotations

import json

import pytest

from tests.e2e.helpers import dags_test, snapshot

pytestmark = pytest.mark.slow
DATES = ["2026-02-01", "2026-02-02", "2026-02-03"]
CONF = {"rows": 6000, "gbt_max_iter": 10}
AUC_FLOOR = 0.72  # the generator's hidden rule gives ~0.78; a pipeline that learns nothing gives 0.5


@pytest.fixture(scope="module")
def three_days(tmp_path_factory, ignite_node):
    data_root = tmp_path_factory.mktemp("e2e") / "data"
    for ds in DATES:
        out = dags_test("kiln_training", ds, data_root, CONF)
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return data_root


def test_each_day_registers_its_own_version_and_a_champion(three_days):
    registry = three_days / "registry" / "transactions"
    state = json.loads((registry / "registry.json").read_text())
    assert sorted(state["versions"]) == DATES
    assert state["champion"] in DATES
    champion = state["versions"][state["champion"]]
    assert champion["auc"] > AUC_FLOOR
    assert champion["candidate"] in {"spark_lr", "spark_gbt", "mxnet_mlp", "mxnet_dist"}
    for ds in DATES:
        version = registry / "versions" / ds
        lineage = json.loads((version / "lineage.json").read_text())
        assert lineage["data_partition"].endswith(f"raw/ds={ds}")
        assert lineage["dag_run_id"].startswith("manual__") and lineage["params"]["rows"] == 6000
        assert lineage["git_commit"] and len(lineage["git_commit"]) == 40
        candidate = json.loads((version / "model" / "candidate.json").read_text())
        assert (version / "model" / candidate["artifact"]).exists()
        assert (version / "transform" / "portable_transform.json").exists()
        assert json.loads((version / "metrics.json").read_text())["auc"] > AUC_FLOOR
    evaluation = json.loads((three_days / "runs" / f"ds={DATES[0]}" / "evaluation.json").read_text())
    assert {c["candidate"] for c in evaluation["candidates"]} == {"spark_lr", "spark_gbt", "mxnet_mlp", "mxnet_dist"}
    # nothing half-written is left behind
    assert not [p for p in three_days.rglob(".*tmp-*")]


def test_rerunning_the_middle_day_changes_only_its_own_outputs(three_days):
    middle = DATES[1]
    own = (f"raw/ds={middle}/", f"runs/ds={middle}/", f"registry/transactions/versions/{middle}/")
    before = snapshot(three_days)
    state_before = (three_days / "registry/transactions/registry.json").read_text()
    metrics_before = (three_days / f"runs/ds={middle}/evaluation.json").read_text()

    out = dags_test("kiln_training", middle, three_days, CONF)
    assert out.returncode == 0, out.stdout[-4000:]

    after = snapshot(three_days)
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    assert changed, "the rerun wrote nothing"
    foreign = sorted(p for p in changed if not p.startswith(own) and not p.startswith("registry/transactions/registry.json")
                     and not p.startswith("registry/transactions/.lock"))
    assert foreign == []
    # same partition and params -> the same result, and the same registry decisions
    assert (three_days / f"runs/ds={middle}/evaluation.json").read_text() == metrics_before
    assert (three_days / "registry/transactions/registry.json").read_text() == state_before
