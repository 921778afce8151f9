"""The streaming DAGs on a running Airflow: a scheduled-style run of kiln_streaming_<name> applies the waiting
events, and the alert its batch raises reaches kiln_stream_alerts_<name> through the triggerer's Kafka AssetWatcher."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from ml_tasks.core.spec import load_spec
from ml_tasks.features.events import produce_events

pytestmark = [pytest.mark.slow, pytest.mark.ignite, pytest.mark.kafka]


def xcom(server, dag_id: str, run_id: str, task_id: str) -> dict:
    with server.api() as api:
        resp = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")
    assert resp.status_code == 200, resp.text
    value = resp.json()["value"]
    return json.loads(value) if isinstance(value, str) else value


def test_a_stream_run_applies_the_events_and_its_alert_triggers_the_alerts_dag(airflow_server, kafka_broker):
    # A dataset of its own (the transactions spec under another name): its topics and feature alias are untouched
    # by the other end-to-end tests.
    shutil.copy(airflow_server.datasets / "transactions.yaml", airflow_server.datasets / "cards.yaml")
    spec = load_spec(airflow_server.datasets / "cards.yaml")
    for dag_id in ("kiln_streaming_cards", "kiln_stream_alerts_cards"):
        airflow_server.wait_for_dag(dag_id)
    with airflow_server.api() as api:  # the alerts DAG's watcher must listen before the alert is sent
        for dag_id in ("kiln_stream_alerts_cards", "kiln_streaming_cards"):
            assert api.patch(f"/dags/{dag_id}", json={"is_paused": False}).status_code == 200

    # Half of the events malformed: the batch's dead-letter share is over the spec's alert threshold (0.2).
    sent = produce_events(spec, kafka_broker.bootstrap, spec.topic("events"), rate=1000, seconds=2, entities=500,
                          malformed_share=0.5)
    with airflow_server.api() as api:
        resp = api.post("/dags/kiln_streaming_cards/dagRuns", json={"logical_date": None, "conf": {"stream_mode": "available_now"}})
    assert resp.status_code == 200, resp.text
    run = airflow_server.wait_for_run("kiln_streaming_cards", resp.json()["dag_run_id"], timeout=600)
    with airflow_server.api() as api:  # no more scheduled stream runs for the rest of the session
        api.patch("/dags/kiln_streaming_cards", json={"is_paused": True})
    assert run["state"] == "success", airflow_server.task_log("kiln_streaming_cards", run["dag_run_id"], "stream_events")[-3000:]
    # Unpausing may also have started the schedule's run, which then took the events first: count over every run.
    results = []
    for other in airflow_server.runs("kiln_streaming_cards"):
        done = airflow_server.wait_for_run("kiln_streaming_cards", other["dag_run_id"], timeout=300)
        assert done["state"] == "success", other
        results.append(xcom(airflow_server, "kiln_streaming_cards", other["dag_run_id"], "stream_events"))
    assert sum(r["events"] for r in results) == sent["produced"], results
    assert sum(r["dead_letters"] for r in results) == sent["malformed"], results
    assert all(r["mode"] == "available_now" for r in results) and sum(r["entities"] for r in results) > 0

    deadline, alerted = time.monotonic() + 180, []
    while not alerted and time.monotonic() < deadline:
        alerted = [r for r in airflow_server.runs("kiln_stream_alerts_cards") if r["run_type"] == "asset_triggered"]
        time.sleep(3)
    assert alerted, "no kiln_stream_alerts_cards run: the AssetWatcher did not turn the stream's alert into an asset event"
    done = airflow_server.wait_for_run("kiln_stream_alerts_cards", alerted[0]["dag_run_id"], timeout=180)
    assert done["state"] == "success"
    summary = xcom(airflow_server, "kiln_stream_alerts_cards", done["dag_run_id"], "summarise_dead_letters")
    assert summary["alert"]["kind"] == "dead_letters" and summary["dead_letters"] > 0
    assert set(summary["by_rule"]) <= {"value is not a JSON object", spec.key, spec.timestamp, spec.features.numeric[0]}
