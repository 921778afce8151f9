"""On a running Airflow: a searched run fans its trials out as mapped tasks, waits for a person before promotion
(approved through the REST API in one run, rejected in another), and writes a report that the Kiln plugin serves
only to a signed-in user and only from the data root."""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import SUBSET
from tests.e2e.helpers import answer, datasets_of_their_own, trigger, wait_for_approval_request

pytestmark = [pytest.mark.slow, pytest.mark.ignite]
# One searched candidate, few trials, no cache warming: this file is about the search, the approval and the report.
CONF = {"rows": 6000, "candidates": SUBSET, "warm_cache": False, "require_approval": True}
SEARCH = {"search_candidates": SUBSET, "search_trials": 3, "search_seed": 11}


def registry(server, model: str) -> dict:
    return json.loads((server.data_root / "registry" / model / "registry.json").read_text())


def xcom(server, run_id: str, task_id: str, map_index: int = -1, dag_id: str = "kiln_training_approved_rest"):
    with server.api() as api:
        resp = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
                       params={"map_index": map_index})
    assert resp.status_code == 200, resp.text
    value = resp.json()["value"]
    return json.loads(value) if isinstance(value, str) else value


class Watch(threading.Thread):
    """``wait_for_approval_request`` in the background: a request that times out a minute after it is made must be
    seen while it waits, whichever test runs then."""

    def __init__(self, server, run_id: str, dag_id: str):
        super().__init__(daemon=True)
        self.server, self.run_id, self.dag_id = server, run_id, dag_id
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            wait_for_approval_request(self.server, self.run_id, dag_id=self.dag_id)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the test)
            self.error = exc


@pytest.fixture(scope="module")
def runs(airflow_server) -> dict[str, Any]:
    """Every run of this file (dataset name: DAG id, run id; "unanswered_watch": that request's Watch), triggered
    together, each in a DAG, so a model, of its own (no champion yet): no run waits for another (max_active_runs is
    per DAG), their waits for the scheduler, for an answer and for the timeout overlap, and one parse of the DAG
    folder brings all four DAGs."""
    dag_ids = datasets_of_their_own(airflow_server, {
        "unanswered": "", "approved_rest": "", "rejected_rest": "",
        "reviewed": "approval: {required: true, approvers: {users: [reviewer]}}\n"})
    confs = {"unanswered": {**CONF, "partition_date": "2026-04-04", "approval_timeout_minutes": 1},
             "approved_rest": {**CONF, **SEARCH, "partition_date": "2026-04-01"},
             "rejected_rest": {**CONF, "partition_date": "2026-04-02"},
             "reviewed": {**CONF, "partition_date": "2026-04-03"}}
    started: dict[str, Any] = {}
    for (name, conf), dag_id in zip(confs.items(), dag_ids, strict=True):
        started[name] = (dag_id, trigger(airflow_server, conf, dag_id))
        if name == "unanswered":  # first: its minute starts at its request
            unanswered_watch = Watch(airflow_server, started[name][1], dag_id)
            unanswered_watch.start()
    started["unanswered_watch"] = unanswered_watch
    return started


@pytest.fixture(scope="module")
def approved_run(airflow_server, runs) -> str:
    """The searched run, approved through the REST API."""
    dag_id, run_id = runs["approved_rest"]
    request = wait_for_approval_request(airflow_server, run_id, dag_id=dag_id)
    # the person sees the metrics and that there is no champion to compare with; nothing is promoted meanwhile
    assert "Promote approved_rest/2026-04-01" in request["subject"]
    assert "| auc (ranks) |" in request["body"] and "no champion yet" in request["body"]
    waiting = registry(airflow_server, "approved_rest")
    assert waiting["champion"] is None and waiting["versions"]["2026-04-01"]["reasons"] == ["awaiting approval"]
    answer(airflow_server, run_id, "Approve", "validation and search look right", dag_id)
    run = airflow_server.wait_for_run(dag_id, run_id)
    assert run["state"] == "success", airflow_server.task_instances(dag_id, run_id)
    return run_id


def test_an_approval_through_rest_promotes_the_version_with_who_and_why(airflow_server, approved_run):
    state = registry(airflow_server, "approved_rest")
    version = state["versions"]["2026-04-01"]
    assert state["champion"] == "2026-04-01" and version["promoted"]
    assert version["approval"]["state"] == "approved" and version["approval"]["by"] == "admin"
    assert version["approval"]["reason"] == "validation and search look right"
    assert xcom(airflow_server, approved_run, "promotion_decision")["champion_changed"]


def test_only_the_specs_approvers_may_answer_and_the_form_cannot_turn_approval_off(airflow_server, runs):
    """A spec that requires approval by a named person: a trigger that turns approval off is refused before a run
    starts; the request is that person's alone (Airflow refuses the admin's answer, 403), and her answer decides."""
    dag_id, run_id = runs["reviewed"]
    with airflow_server.api() as api:
        off = api.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None,
                                                        "conf": {**CONF, "require_approval": False}})
    assert off.status_code in (400, 422), off.text
    assert [r["dag_run_id"] for r in airflow_server.runs(dag_id)] == [run_id]  # refused: no run of its own
    request = wait_for_approval_request(airflow_server, run_id, dag_id=dag_id)
    assert [u["id"] for u in request["assigned_users"]] == ["reviewer"]
    answer(airflow_server, run_id, "Approve", "I own this model", dag_id, user="admin", expect=403)
    assert registry(airflow_server, "reviewed")["champion"] is None
    answer(airflow_server, run_id, "Approve", "checked by its approver", dag_id, user="reviewer")
    run = airflow_server.wait_for_run(dag_id, run_id)
    assert run["state"] == "success", airflow_server.task_instances(dag_id, run_id)
    state = registry(airflow_server, "reviewed")
    assert state["champion"] == "2026-04-03"
    assert state["versions"]["2026-04-03"]["approval"]["by"] == "reviewer"


def test_the_search_fans_out_as_mapped_trials_and_the_best_trains_the_candidate(airflow_server, approved_run):
    with airflow_server.api() as api:
        trials = api.get(f"/dags/kiln_training_approved_rest/dagRuns/{approved_run}/taskInstances",
                         params={"task_id": "search_trials", "limit": 100}).json()["task_instances"]
    trials = [t for t in trials if t["task_id"] == "search_trials"]
    assert sorted(t["map_index"] for t in trials) == [0, 1, 2] and {t["state"] for t in trials} == {"success"}
    records = [xcom(airflow_server, approved_run, "search_trials", i) for i in range(3)]
    assert all(r["status"] == "ok" and r["metric"] == "auc" for r in records)
    best = max(records, key=lambda r: (r["value"], -r["trial"]))
    trained = xcom(airflow_server, approved_run, "train_mxnet")
    assert trained["search"]["best"] == best["key"]
    assert {k: trained["params"][k] for k in best["tuned"]} == best["tuned"]


def test_a_rejection_through_rest_keeps_the_version_registered_not_promoted_with_the_reason(airflow_server, runs):
    dag_id, run_id = runs["rejected_rest"]
    wait_for_approval_request(airflow_server, run_id, dag_id=dag_id)
    answer(airflow_server, run_id, "Reject", "calibration drifted", dag_id)
    run = airflow_server.wait_for_run(dag_id, run_id)
    tis = airflow_server.task_instances(dag_id, run_id)
    assert run["state"] == "success", tis
    state = registry(airflow_server, "rejected_rest")
    version = state["versions"]["2026-04-02"]
    assert state["champion"] is None and not version["promoted"]
    assert version["reasons"] == ["not approved: calibration drifted"] and version["approval"]["by"] == "admin"
    assert (airflow_server.data_root / "registry" / "rejected_rest" / version["path"]).is_dir()  # registered, kept
    assert tis["announce_champion"]["state"] == "skipped"  # no champion change to announce or warm
    assert tis["report"]["state"] == "success"


def test_no_answer_within_the_timeout_counts_as_a_rejection(airflow_server, runs):
    dag_id, run_id = runs["unanswered"]
    watch = runs["unanswered_watch"]  # wait_for_approval_request, from the moment of the trigger
    watch.join(timeout=900)
    assert not watch.is_alive(), "still waiting for the approval request"
    if watch.error is not None:
        raise watch.error
    run = airflow_server.wait_for_run(dag_id, run_id, timeout=300)  # the scheduler applies the default
    assert run["state"] == "success", airflow_server.task_instances(dag_id, run_id)
    state = registry(airflow_server, "unanswered")
    version = state["versions"]["2026-04-04"]
    assert state["champion"] is None and not version["promoted"]
    assert version["reasons"] == ["not approved: no answer within 1 minute"] and version["approval"]["by"] is None


def report_url(server, run_id: str) -> str:
    return f"{server.url}/kiln/reports/kiln_training_approved_rest/{run_id}"


def test_the_report_is_served_only_to_a_signed_in_user(airflow_server, approved_run):
    assert httpx.get(report_url(airflow_server, approved_run)).status_code == 401
    assert httpx.get(report_url(airflow_server, approved_run), headers={"Authorization": "Bearer not-a-token"}).status_code == 403
    assert httpx.get(report_url(airflow_server, approved_run), cookies={"_token": "forged"}).status_code == 403
    with airflow_server.api() as api:
        token = api.headers["Authorization"]
    page = httpx.get(report_url(airflow_server, approved_run), headers={"Authorization": token})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for part in ("Candidates", "Training curves", "Validation and drift", "Hyper-parameter search", "Registry",
                 "approved by admin (validation and search look right)"):
        assert part in page.text, part
    assert page.text.count("<svg") >= 6
    missing = httpx.get(report_url(airflow_server, "no_such_run"), headers={"Authorization": token})
    assert missing.status_code == 404 and "no report yet" in missing.text


def test_report_files_are_served_from_report_folders_under_the_data_root_only(airflow_server, approved_run, tmp_path):
    from ml_tasks.core.layout import Layout

    with airflow_server.api() as api:
        token = {"Authorization": api.headers["Authorization"]}
    report = Layout(airflow_server.data_root, "approved_rest", "2026-04-01", approved_run).report
    relative = report.relative_to(airflow_server.data_root.resolve())
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the report")
    (report.parent / "leak.txt").symlink_to(outside)  # a link planted in a report folder must not lead out

    def get(path: str, headers: dict | None = token) -> httpx.Response:
        # http.client sends the path as written: an HTTP library would resolve the dot segments before sending
        host, port = airflow_server.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", f"/kiln/files/{path}", headers=headers or {})
        raw = conn.getresponse()
        return httpx.Response(raw.status, content=raw.read())

    assert get(str(relative), headers=None).status_code == 401
    assert get(str(relative)).status_code == 200 and "<svg" in get(str(relative)).text
    for path in ["%2e%2e/%2e%2e/etc/passwd", f"{relative.parent}/%2e%2e/%2e%2e/evaluation.json", "/etc/passwd",
                 str(outside), f"{relative.parent}/leak.txt", "registry/approved_rest/registry.json",
                 "approved_rest/runs/ds=2026-04-01/x/evaluation.json"]:
        resp = get(path)
        assert resp.status_code == 404 and "not for the report" not in resp.text and "root:" not in resp.text, path
