"""A spec's approval rules hold whatever the trigger chose (issue #31): a spec that requires approval cannot have it
turned off by the form nor by a stage's command line, and a spec's approvers are the only people whose answer counts.

Real Airflow objects, no running Airflow: the DAG parsed from a datasets folder as the DAG processor does, the approval
task as a worker builds it, Airflow's simple auth manager's own check (what the REST API asks before it accepts an
answer, else 403), and the operator's resume with the event Airflow hands it."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "kiln_datasets.py"
SPEC = """
task: binary
source: {kind: sklearn, dataset: breast_cancer}
key: row_id
label: target
features: {numeric: [mean_radius, mean_texture]}
schedule: null
approval:
  required: true
  approvers: {users: [reviewer], roles: [op]}
"""
USERS = "admin:admin,reviewer:viewer,oncall:op,bystander:user"


@pytest.fixture
def approved_dag(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "guarded.yaml").write_text(SPEC)
    monkeypatch.setenv("KILN_DATASETS_DIR", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER",
                       "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", USERS)
    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.get_dag("kiln_training_guarded")


def event(user: str | None, option: str = "Approve") -> dict:
    return {"chosen_options": [option], "params_input": {"reason": "checked"}, "responded_at": datetime.now(UTC),
            "responded_by_user": None if user is None else {"id": user, "name": user}}


def test_the_request_is_assigned_to_the_specs_approvers_and_airflow_refuses_anyone_else(approved_dag):
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    approve = approved_dag.get_task("approve_promotion")
    assigned = {user["id"] for user in approve.assigned_users}
    assert assigned == {"reviewer", "oncall"}  # the named user and the op role's user
    manager = SimpleAuthManager()
    for name, role, allowed in [("reviewer", "viewer", True), ("oncall", "op", True), ("admin", "admin", False),
                                ("bystander", "user", False)]:
        user = SimpleAuthManagerUser(username=name, role=role)
        assert manager.is_authorized_hitl_task(assigned_users=assigned, user=user) is allowed, name


def test_an_answer_from_anyone_but_an_approver_is_refused_when_the_task_resumes(approved_dag):
    from airflow.sdk.exceptions import AirflowFailException

    approve = approved_dag.get_task("approve_promotion")
    assert approve.execute_complete({}, event("reviewer"))["chosen_options"] == ["Approve"]
    assert approve.execute_complete({}, event(None, "Reject"))["chosen_options"] == ["Reject"]  # the timeout's default
    for intruder in ("admin", "bystander"):
        with pytest.raises(AirflowFailException, match=f"answer refused: '{intruder}' is not one of the approvers"):
            approve.execute_complete({}, event(intruder))


def test_a_spec_that_requires_approval_keeps_it_on_in_the_form_and_in_the_stage(approved_dag, tmp_path):
    from airflow.sdk.exceptions import ParamValidationError

    assert approved_dag.params["require_approval"] is True
    params = copy.deepcopy(approved_dag.params)
    with pytest.raises(ParamValidationError, match="Invalid input for param require_approval"):
        params["require_approval"] = False
        params.validate()
    out = subprocess.run([sys.executable, "-m", "ml_tasks", "register", "--dataset", "guarded", "--ds", "2026-03-01",
                          "--require-approval", "false"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "KILN_DATASETS_DIR": str(tmp_path), "KILN_DATA_ROOT": str(tmp_path / "data")})
    assert out.returncode == 2 and "option 'require_approval': False is not one of [True]" in out.stderr, out.stderr


def test_roles_need_an_auth_manager_that_lists_their_users(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "guarded.yaml").write_text(SPEC)
    monkeypatch.setenv("KILN_DATASETS_DIR", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager")
    bag = DagBag(dag_folder=str(DAG_FILE))
    [error] = bag.import_errors.values()
    assert str(tmp_path / "guarded.yaml") in error and "approval.approvers.roles needs Airflow's simple auth manager" in error
