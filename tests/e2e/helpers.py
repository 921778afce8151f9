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


def trigger(server, conf: dict) -> str:
    with server.api() as api:
        resp = api.post("/dags/kiln_training/dagRuns", json={"logical_date": None, "conf": conf})
    assert resp.status_code == 200, resp.text
    return resp.json()["dag_run_id"]


def wait_for_approval_request(server, run_id: str, timeout: float = 600) -> dict:
    """The run's approval request once its task waits for input (fails early when the run ends instead)."""
    deadline = time.monotonic() + timeout
    with server.api() as api:
        while time.monotonic() < deadline:
            ti = api.get(f"/dags/kiln_training/dagRuns/{run_id}/taskInstances/approve_promotion").json()
            if ti.get("state") == "awaiting_input":
                detail = api.get(f"/dags/kiln_training/dagRuns/{run_id}/taskInstances/approve_promotion/-1/hitlDetails")
                assert detail.status_code == 200, detail.text
                return detail.json()
            run = api.get(f"/dags/kiln_training/dagRuns/{run_id}").json()
            assert run["state"] not in ("success", "failed"), \
                f"run ended {run['state']} without asking: {server.task_instances('kiln_training', run_id)}"
            time.sleep(3)
    raise AssertionError(f"run {run_id} did not ask for approval within {timeout}s")


def answer(server, run_id: str, option: str, reason: str) -> None:
    with server.api() as api:
        resp = api.patch(f"/dags/kiln_training/dagRuns/{run_id}/taskInstances/approve_promotion/-1/hitlDetails",
                         json={"chosen_options": [option], "params_input": {"reason": reason}})
    assert resp.status_code == 200, resp.text
