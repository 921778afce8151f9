"""Run DAGs for real with `airflow dags test` against an isolated data root, and drive runs on a running Airflow."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def dags_test(dag_id: str, ds: str, data_root: Path, conf: dict | None = None, timeout: int = 600,
              datasets: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "KILN_DATA_ROOT": str(data_root), **({"KILN_DATASETS_DIR": str(datasets)} if datasets else {}),
           **(env or {})}
    cmd = ["airflow", "dags", "test", dag_id, ds]
    if conf:
        cmd += ["-c", json.dumps(conf)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"{dag_id}-{ds}.log").write_text(out.stdout + out.stderr)
    return out


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def dataset_of_its_own(server, name: str, refresh: bool = False, extra: str = "") -> str:
    """A copy of the transactions spec as dataset ``name`` (so a model of its own: a run registers only into its
    dataset's model), without its stream and schedule, plus the spec text ``extra``, added to the running server;
    its training DAG's id, unpaused (and its cache refresh DAG's, with ``refresh``)."""
    return datasets_of_their_own(server, {name: extra}, refresh)[0]


def datasets_of_their_own(server, extras: dict[str, str], refresh: bool = False) -> list[str]:
    """``dataset_of_its_own`` for each name of ``extras`` (name: extra spec text), all written before waiting, so the
    DAG processor parses them in one pass; their training DAGs' ids, in order."""
    root = Path(__file__).resolve().parents[2]
    for name, extra in extras.items():
        text = (root / "datasets" / "transactions.yaml").read_text().replace("stream: {}\n", "") + "schedule: null\n" + extra
        (server.datasets / f"{name}.yaml").write_text(text)
    for name in extras:
        for dag_id in [f"kiln_training_{name}", *([f"kiln_cache_refresh_{name}"] if refresh else [])]:
            server.wait_for_dag(dag_id)
            with server.api() as api:
                assert api.patch(f"/dags/{dag_id}", json={"is_paused": False}).status_code == 200
    return [f"kiln_training_{name}" for name in extras]


def trigger(server, conf: dict, dag_id: str = "kiln_training") -> str:
    with server.api() as api:
        resp = api.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
    assert resp.status_code == 200, resp.text
    return resp.json()["dag_run_id"]


def task_pid(ti_id: str) -> int | None:
    """The LocalExecutor worker running task instance ``ti_id`` (its process title names it), if one does."""
    out = subprocess.run(["pgrep", "-f", f"airflow worker -- {ti_id}$"], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    return pids[0] if pids else None


def wait_until_the_scheduler_saw_the_task_leave_its_worker(server, ti_id: str, timeout: float = 120) -> None:
    """Airflow 3.3.2 fails a task instance whose executor reports its process's end only after the task was resumed
    (apache/airflow#72716, 'state mismatch' in the audit log): an approval answered within a second of the request
    loses that try, and the retry asks again. So answer once the worker has let the task go (its result is then
    queued) and two scheduler heartbeats later (the loop reads the executor's results before each heartbeat)."""
    from datetime import UTC, datetime

    deadline = time.monotonic() + timeout
    while task_pid(ti_id) is not None:
        assert time.monotonic() < deadline, f"task instance {ti_id} never left its worker"
        time.sleep(0.2)
    seen = datetime.now(UTC)
    with server.api() as api:
        for _ in range(2):
            while True:
                beat = api.get("/monitor/health").json()["scheduler"]["latest_scheduler_heartbeat"]
                if beat and datetime.fromisoformat(beat) > seen:
                    seen = datetime.fromisoformat(beat)
                    break
                assert time.monotonic() < deadline, "the scheduler did not heartbeat"
                time.sleep(0.5)


def wait_for_approval_request(server, run_id: str, timeout: float = 600, dag_id: str = "kiln_training") -> dict:
    """The run's approval request once its task waits for input and the scheduler knows it (fails early when the
    run ends instead)."""
    deadline = time.monotonic() + timeout
    with server.api() as api:
        while time.monotonic() < deadline:
            ti = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/approve_promotion").json()
            if ti.get("state") == "awaiting_input":
                wait_until_the_scheduler_saw_the_task_leave_its_worker(server, ti["id"])
                detail = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/approve_promotion/-1/hitlDetails")
                assert detail.status_code == 200, detail.text
                return detail.json()
            run = api.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()
            assert run["state"] not in ("success", "failed"), \
                f"run ended {run['state']} without asking: {server.task_instances(dag_id, run_id)}"
            time.sleep(1)
    raise AssertionError(f"run {run_id} did not ask for approval within {timeout}s")


def answer(server, run_id: str, option: str, reason: str, dag_id: str = "kiln_training", user: str = "admin",
           expect: int = 200) -> None:
    with server.api(user) as api:
        resp = api.patch(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/approve_promotion/-1/hitlDetails",
                         json={"chosen_options": [option], "params_input": {"reason": reason}})
    assert resp.status_code == expect, resp.text
