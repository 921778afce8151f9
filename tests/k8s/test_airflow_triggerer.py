"""KILN_EXECUTION=kubernetes with deferrable pods on a running Airflow (scheduler, worker, triggerer):
kiln_training's first heavy stage runs as a pod, the task defers, the triggerer watches the pod to its
end, and the worker maps its exit code: bad input fails the task with no retry, the skip code skips it.

The transactions spec runs unscheduled here: unpausing a scheduled kiln_training would first run the latest
interval, all in pods kwok ends without the stages' results (ingest fails, is retried, fails), and the
triggered run would wait behind it (max_active_runs=1). The skip run goes to a copy of the spec, so a DAG of
its own, and both runs are triggered together and run side by side (their pods only sleep in kwok)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.e2e.airflow_server import ROOT, AirflowServer
from tests.k8s.conftest import NAMESPACE

pytestmark = [pytest.mark.kubernetes, pytest.mark.slow]
SKIP_DATASET = "transactions_skip"  # the transactions spec again, as a DAG of its own
BAD_INPUT_DAG, SKIP_DAG = "kiln_training", f"kiln_training_{SKIP_DATASET}"

# Airflow's cluster policy for pods, loaded by every Airflow process from $AIRFLOW_HOME/config: it
# tells kwok how a pod's container ends (kwok runs none), by the DAG run the pod belongs to. A pod lasts
# 15 s, as a real one at least does (image, start, imports): one that ends within seconds of the deferral
# meets an Airflow race (see tries_airflow_failed) in most runs on a busy machine.
LOCAL_SETTINGS = '''
OUTCOMES = {"kwok_bad_input": ("2", "ERROR: input path '/nowhere.csv' does not exist"),
            "kwok_skip": ("99", "SKIPPED: this stage cannot run here")}


def pod_mutation_hook(pod):
    run_id = (pod.metadata.labels or {}).get("run_id", "")
    for prefix, (code, message) in OUTCOMES.items():
        if run_id.startswith(prefix):
            pod.metadata.annotations = {**(pod.metadata.annotations or {}), "kwok.kiln.dev/exit-code": code,
                                        "kwok.kiln.dev/message": message, "kwok.kiln.dev/run-duration": "15s"}
'''


@pytest.fixture(scope="module")
def k8s_airflow(worker_connection, tmp_path_factory):
    """Its own Airflow on its own ports, every Kiln stage in Kubernetes, pods deferred to the triggerer."""
    state = Path(tempfile.mkdtemp(prefix="kiln-airflow-state-k8s-"))
    state.chmod(0o755)
    (state / "home" / "config").mkdir(parents=True)
    (state / "home" / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
    base = tmp_path_factory.mktemp("k8s-airflow")
    datasets = base / "datasets"
    shutil.copytree(ROOT / "datasets", datasets)
    unscheduled = (ROOT / "datasets" / "transactions.yaml").read_text() + "schedule: null\n"
    for name in ("transactions", SKIP_DATASET):
        (datasets / f"{name}.yaml").write_text(unscheduled)
    server = AirflowServer(state=state, data_root=base / "data", datasets=datasets,
                           ignite_uri="ignite://127.0.0.1:10999", port=8280, pg_port=5633, log_port=8993,
                           extra_env={"KILN_EXECUTION": "kubernetes", "KILN_POD_DEFERRABLE": "true",
                                      "KILN_POD_LOGS": "false", "KILN_NAMESPACE": NAMESPACE,
                                      "AIRFLOW_CONN_KUBERNETES_DEFAULT": worker_connection})
    server.up()
    try:
        for dag_id in (BAD_INPUT_DAG, SKIP_DAG):
            server.wait_for_dag(dag_id)
        yield server
    finally:
        server.down()
        leftovers = server.leftovers()
        shutil.rmtree(state, ignore_errors=True)
        assert not leftovers, f"airflow.sh down left {leftovers}"


def trigger(server: AirflowServer, dag_id: str, run_id: str) -> None:
    with server.api() as api:
        assert api.patch(f"/dags/{dag_id}", json={"is_paused": False}).status_code == 200
        resp = api.post(f"/dags/{dag_id}/dagRuns", json={
            "dag_run_id": run_id, "logical_date": None,
            "conf": {"rows": 2000, "candidates": ["mxnet_mlp"], "partition_date": "2026-03-01"}})
    assert resp.status_code == 200, resp.text


@pytest.fixture(scope="module")
def run_ids(k8s_airflow) -> dict[str, str]:
    """Both runs, triggered together (each in its own DAG, so neither waits for the other); each test waits for its own."""
    now = int(time.time())
    runs = {BAD_INPUT_DAG: f"kwok_bad_input_{now}", SKIP_DAG: f"kwok_skip_{now}"}
    for dag_id, run_id in runs.items():
        trigger(k8s_airflow, dag_id, run_id)
    return runs


def pods_of(prod, dag_id: str, run_id: str) -> list[str]:
    return [p["metadata"]["name"] for p in prod.objects("pods") if p["metadata"]["labels"].get("dag_id") == dag_id
            and p["metadata"]["labels"].get("run_id", "").startswith(run_id[:20])]


def tries_airflow_failed(server: AirflowServer, dag_id: str, run_id: str, task_id: str) -> set[int]:
    """Tries Airflow's scheduler, not Kiln, failed: apache/airflow#71580/#72716, a trigger that fires soon
    after the deferral races the executor's stale report of the deferring process, and the resumed try is
    failed as "killed externally" (audit log: "state mismatch") and retried."""
    return {e["try_number"] for e in server.audit_log(dag_id, run_id, task_id, "state mismatch")}


def last_try_log(server: AirflowServer, dag_id: str, run_id: str, ti: dict) -> str:
    """The log of the task's last try; any earlier try must have been ended by that race, never by Kiln."""
    tries = ti["try_number"]
    assert set(range(1, tries)) <= tries_airflow_failed(server, dag_id, run_id, ti["task_id"]), \
        server.task_log(dag_id, run_id, ti["task_id"], 1)
    return server.task_log(dag_id, run_id, ti["task_id"], tries)


def test_bad_input_in_a_deferred_pod_fails_the_task_once_with_no_retry(k8s_airflow, prod, run_ids):
    dag_id, run_id = BAD_INPUT_DAG, run_ids[BAD_INPUT_DAG]
    run = k8s_airflow.wait_for_run(dag_id, run_id, timeout=300)
    tis = k8s_airflow.task_instances(dag_id, run_id)
    assert run["state"] == "failed" and tis["plan"]["state"] == "success"
    assert tis["ingest"]["state"] == "failed"
    log = last_try_log(k8s_airflow, dag_id, run_id, tis["ingest"])  # retries=1, yet bad input is not retried
    assert "Pausing task as DEFERRED" in log and "Trigger fired event" in log  # the triggerer watched the pod
    assert "stage ingest rejected its input: input path '/nowhere.csv' does not exist" in log
    assert pods_of(prod, dag_id, run_id) == []  # deleted after the trigger saw it end


def test_the_skip_code_in_a_deferred_pod_skips_the_task(k8s_airflow, prod, run_ids):
    dag_id, run_id = SKIP_DAG, run_ids[SKIP_DAG]
    k8s_airflow.wait_for_run(dag_id, run_id, timeout=300)
    tis = k8s_airflow.task_instances(dag_id, run_id)
    log = last_try_log(k8s_airflow, dag_id, run_id, tis["ingest"])
    if tis["ingest"]["try_number"] not in tries_airflow_failed(k8s_airflow, dag_id, run_id, "ingest"):
        assert tis["ingest"]["state"] == "skipped", json.dumps({t: ti["state"] for t, ti in tis.items()})
        assert tis["validate"]["state"] == "skipped"
    assert "Pausing task as DEFERRED" in log and "Trigger fired event" in log
    assert "this stage cannot run here" in log
    assert pods_of(prod, dag_id, run_id) == []
