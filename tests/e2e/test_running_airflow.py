"""Kiln as users drive it, on a running Airflow: REST trigger, bad params, assets, backfill, kill, rerun."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.conftest import SUBSET
from tests.e2e.helpers import dataset_of_its_own, snapshot, task_pid

pytestmark = [pytest.mark.slow, pytest.mark.ignite]
CONF = {"rows": 6000, "candidates": SUBSET}
BACKFILL = ["2026-03-02", "2026-03-03", "2026-03-04"]


def trigger(server, conf: dict) -> dict:
    with server.api() as api:
        return api.post("/dags/kiln_training/dagRuns", json={"logical_date": None, "conf": conf})


def manual_runs(server) -> list[dict]:
    return [r for r in server.runs("kiln_training") if r["run_type"] == "manual"]  # the scheduler adds its own meanwhile


def test_a_bad_param_is_refused_before_any_task_runs(airflow_server):
    before = len(manual_runs(airflow_server))
    resp = trigger(airflow_server, {**CONF, "rows": 5})
    assert resp.status_code == 400
    assert "Invalid input for param rows: 5 is less than the minimum of 1000" in resp.json()["detail"]
    resp = trigger(airflow_server, {**CONF, "candidates": ["xgboost"]})
    assert resp.status_code == 400 and "param candidates" in resp.json()["detail"]
    assert len(manual_runs(airflow_server)) == before


def test_the_daily_schedule_runs_the_latest_interval_with_default_params(airflow_server):
    deadline = time.monotonic() + 120
    scheduled: list[dict] = []
    while not scheduled and time.monotonic() < deadline:
        scheduled = [r for r in airflow_server.runs("kiln_training") if r["run_type"] == "scheduled"]
        time.sleep(2)
    # catchup=False: unpausing creates the latest interval's run only, never the intervals since the start date; one
    # more appears when the server's life crosses midnight UTC (a CI run did), so the bound is a day and some hours.
    assert scheduled, "unpausing should create the latest interval's run"
    oldest_allowed = datetime.now(UTC) - timedelta(days=1, hours=3)
    assert all(datetime.fromisoformat(r["logical_date"]) >= oldest_allowed for r in scheduled), \
        f"older intervals were caught up: {[r['logical_date'] for r in scheduled]}"
    first = min(scheduled, key=lambda r: r["logical_date"])
    run = airflow_server.wait_for_run("kiln_training", first["dag_run_id"])
    tis = airflow_server.task_instances("kiln_training", run["dag_run_id"])
    assert run["state"] == "success", {t: ti["state"] for t, ti in tis.items()}
    for task in ("train_spark_lr", "train_spark_gbt", "train_mxnet", "train_mxnet_dist", "train_singa"):
        assert tis[task]["state"] == "success", task
    # this run's own verdict (a later run of the same day may have replaced the day's files since)
    with airflow_server.api() as api:
        xcom = api.get(f"/dags/kiln_training/dagRuns/{run['dag_run_id']}/taskInstances/evaluate/xcomEntries/return_value")
    assert xcom.status_code == 200, xcom.text
    verdict = xcom.json()["value"]
    verdict = json.loads(verdict) if isinstance(verdict, str) else verdict
    assert verdict["candidates"] == 5 and verdict["auc"] > 0.7


def run_dir(root, ds: str, run_id: str, dataset: str = "transactions"):
    from ml_tasks.core.layout import Layout

    return Layout(root, dataset, ds, run_id).run_dir


def test_rest_trigger_registers_a_model_and_the_asset_refreshes_the_cache(airflow_server, spark_stages_over_connect):
    # A dataset, so a model, of its own (a run registers only into its dataset's model): its first version is its
    # champion whatever other tests registered, so the champion changes, the cache is warmed and the asset event fires.
    dag_id = dataset_of_its_own(airflow_server, "rest_trigger", refresh=True)
    started = time.time()
    before = {r["dag_run_id"] for r in airflow_server.runs("kiln_cache_refresh_rest_trigger")}
    with airflow_server.api() as api:
        resp = api.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": {**CONF, "partition_date": "2026-03-01"}})
    assert resp.status_code == 200, resp.text
    run = airflow_server.wait_for_run(dag_id, resp.json()["dag_run_id"])
    tis = airflow_server.task_instances(dag_id, run["dag_run_id"])
    assert run["state"] == "success", {t: ti["state"] for t, ti in tis.items()}
    assert tis["train_spark_gbt"]["state"] == "skipped" and tis["train_mxnet"]["state"] == "success"
    state = json.loads((airflow_server.data_root / "registry/rest_trigger/registry.json").read_text())
    assert state["champion"] == "2026-03-01"
    assert tis["warm_feature_cache"]["state"] == "success"
    evaluation = json.loads((run_dir(airflow_server.data_root, "2026-03-01", run["dag_run_id"], "rest_trigger") / "evaluation.json").read_text())
    assert {c["candidate"] for c in evaluation["candidates"]} == set(SUBSET)
    # spark_default is an sc:// connection: preprocess ran as a thin client of the Spark Connect server
    preprocessed = json.loads((run_dir(airflow_server.data_root, "2026-03-01", run["dag_run_id"], "rest_trigger") / "_results/preprocess.json").read_text())
    assert preprocessed["spark_connect"] == spark_stages_over_connect.url
    # the champion changed, so the kiln_champion_rest_trigger asset was updated: its cache refresh run starts by itself
    deadline = time.monotonic() + 180
    fresh: list[dict] = []
    while not fresh and time.monotonic() < deadline:
        fresh = [r for r in airflow_server.runs("kiln_cache_refresh_rest_trigger") if r["dag_run_id"] not in before]
        time.sleep(3)
    assert fresh and fresh[0]["run_type"] == "asset_triggered"
    assert datetime.fromisoformat(fresh[0]["run_after"]).timestamp() >= started
    assert airflow_server.wait_for_run("kiln_cache_refresh_rest_trigger", fresh[0]["dag_run_id"], timeout=300)["state"] == "success"


def writing_into(folder: Path, pid: int, timeout: float = 120.0) -> bool:
    """Wait until a temporary output folder (``atomic``'s ``.*.tmp-*``) appears under ``folder`` while ``pid`` lives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if folder.exists() and next(folder.rglob(".*.tmp-*"), None) is not None:
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.1)
    return False


def test_backfill_three_days_survives_a_killed_task_and_a_cleared_day_reruns_alone(airflow_server):
    # Airflow 3 backfills carry their own run limit (default 10; the scheduler leaves backfill runs out of
    # the DAG's max_active_runs count), so the DAG's limit is passed on, as docs/operations.md says.
    out = airflow_server.script("cli", "backfill", "create", "--dag-id", "kiln_training", "--from-date", BACKFILL[0],
                                "--to-date", BACKFILL[-1], "--max-active-runs", "1", "--dag-run-conf", json.dumps(CONF))
    assert out.returncode == 0, out.stdout + out.stderr
    killed = killed_day = None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline:  # kill a day's preprocess while it writes its features
        for run in (r for r in airflow_server.runs("kiln_training") if r["run_type"] == "backfill"):
            ti = airflow_server.task_instances("kiln_training", run["dag_run_id"]).get("preprocess", {})
            if ti.get("state") == "running" and ti.get("try_number") == 1 and (pid := task_pid(ti["id"])):
                day = run["logical_date"][:10]
                # Not a fixed delay: on a fast machine the stage was done before it (the kill found no process).
                if writing_into(run_dir(airflow_server.data_root, day, run["dag_run_id"]), pid):
                    with contextlib.suppress(ProcessLookupError):  # it finished meanwhile: the next day's, then
                        os.killpg(os.getpgid(pid), signal.SIGKILL)
                        killed, killed_day = run["dag_run_id"], day
                break
        time.sleep(0.5)
    assert killed, "no backfill day's preprocess was seen writing its output"

    runs = []
    deadline = time.monotonic() + 1500
    while time.monotonic() < deadline:
        runs = sorted((r for r in airflow_server.runs("kiln_training") if r["run_type"] == "backfill"), key=lambda r: r["logical_date"])
        if len(runs) == 3 and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(5)
    assert [r["state"] for r in runs] == ["success"] * 3
    assert [r["logical_date"][:10] for r in runs] == BACKFILL
    for earlier, later in zip(runs, runs[1:], strict=False):  # max_active_runs=1: never two at once
        assert earlier["end_date"] <= later["start_date"]
    retried = airflow_server.task_instances("kiln_training", killed)["preprocess"]
    assert retried["state"] == "success" and retried["try_number"] == 2
    state = json.loads((airflow_server.data_root / "registry/transactions/registry.json").read_text())
    assert set(BACKFILL) <= set(state["versions"])
    features = run_dir(airflow_server.data_root, killed_day, killed) / "features"
    assert (features / "train" / "_SUCCESS").exists() and (features / "test" / "_SUCCESS").exists()
    assert not list(airflow_server.data_root.rglob(".*.tmp-*")), "half-written output left behind"
    assert not list(airflow_server.data_root.rglob(".*.old-*")), "replaced output left behind"

    clear_the_middle_day_and_check_only_its_outputs_change(airflow_server, {r["logical_date"][:10]: r for r in runs}[BACKFILL[1]])
    alias_serves_the_champions_features(airflow_server)


def clear_the_middle_day_and_check_only_its_outputs_change(airflow_server, middle: dict) -> None:
    root = airflow_server.data_root
    before = snapshot(root)
    middle_run = run_dir(root, BACKFILL[1], middle["dag_run_id"])
    evaluation_before = (middle_run / "evaluation.json").read_text()
    with airflow_server.api() as api:
        resp = api.post("/dags/kiln_training/clearTaskInstances",
                        json={"dag_run_id": middle["dag_run_id"], "dry_run": False, "only_failed": False, "reset_dag_runs": True})
        assert resp.status_code == 200, resp.text
    time.sleep(5)
    assert airflow_server.wait_for_run("kiln_training", middle["dag_run_id"])["state"] == "success"
    after = snapshot(root)
    own = (f"transactions/raw/ds={BACKFILL[1]}/", f"transactions/runs/ds={BACKFILL[1]}/", f"registry/transactions/versions/{BACKFILL[1]}/",
           "registry/transactions/registry.json", "registry/transactions/.lock")
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    assert changed and not sorted(p for p in changed if not p.startswith(own))
    assert (middle_run / "evaluation.json").read_text() == evaluation_before


def alias_serves_the_champions_features(airflow_server) -> None:
    """Whatever the backfill decided, the live feature alias holds the champion's own features."""
    from ml_tasks.evaluation.registry import champion_features
    from ml_tasks.features.feature_cache import current_version, source_version

    for refresh in airflow_server.runs("kiln_cache_refresh"):
        airflow_server.wait_for_run("kiln_cache_refresh", refresh["dag_run_id"], timeout=300)
    champion = champion_features(airflow_server.data_root / "registry", "transactions")
    client = airflow_server.ignite_client()
    assert current_version(client, "kiln_features_transactions") == f"{champion['version']}-{source_version(Path(champion['source']))}"


def test_server_secrets_are_private_and_never_printed(airflow_server):
    state = airflow_server.state
    secrets = dict(line.split("=", 1) for line in (state / "secrets.env").read_text().split())
    for private in (state / "secrets.env", state / "admin-password.json"):
        assert private.stat().st_mode & 0o077 == 0, f"{private} is readable by others"
    assert not list(state.rglob(".pgpass*")), "a password file left behind"
    printed = airflow_server.up_output + airflow_server.script("env").stdout + airflow_server.script("status").stdout
    for value in [*secrets.values(), airflow_server.password]:
        assert value not in printed
    hba = (state / "postgres" / "pg_hba.conf").read_text()
    rules = [line.split() for line in hba.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert rules and all(rule[-1] in ("peer", "scram-sha-256") for rule in rules), rules
    assert (state / "pg-socket").stat().st_mode & 0o077 == 0  # the server's socket folder is the postgres user's alone
