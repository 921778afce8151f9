"""A running Airflow (scripts/airflow.sh) on its own ports and state folder, and a small REST client."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.ports import shifted

ROOT = Path(__file__).resolve().parents[2]
# A Kiln connection with a password, unused in local execution: the masking test looks for it in task logs.
MASK_PROBE_PASSWORD = "kiln-Pa55-probe-7c1e"  # noqa: S105 (a probe value, not a secret)


@dataclass
class AirflowServer:
    state: Path
    data_root: Path
    ignite_uri: str
    datasets: Path | None = None
    port: int = 8180
    pg_port: int = 5533
    log_port: int = 8893
    extra_env: dict[str, str] = field(default_factory=dict)
    _tokens: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.port, self.pg_port, self.log_port = (shifted(p) for p in (self.port, self.pg_port, self.log_port))

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KILN_AIRFLOW_STATE": str(self.state), "KILN_AIRFLOW_PORT": str(self.port),
                "KILN_PG_PORT": str(self.pg_port), "KILN_LOG_SERVER_PORT": str(self.log_port),
                "KILN_DATA_ROOT": str(self.data_root), "AIRFLOW_CONN_IGNITE_DEFAULT": self.ignite_uri,
                "AIRFLOW_CONN_KUBERNETES_DEFAULT": f"kubernetes://kiln:{MASK_PROBE_PASSWORD}@localhost",
                **({"KILN_DATASETS_DIR": str(self.datasets)} if self.datasets else {}), **self.extra_env}

    def secret(self, name: str) -> str:
        return dict(line.split("=", 1) for line in (self.state / "secrets.env").read_text().split())[name]

    @property
    def source_uri(self) -> str:
        """The kiln_source database airflow.sh creates for datasets read from PostgreSQL."""
        return f"postgresql://kiln_source:{self.secret('KILN_SOURCE_PASSWORD')}@127.0.0.1:{self.pg_port}/kiln_source"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(ROOT / "scripts" / "airflow.sh"), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    up_output: str = ""

    def up(self) -> None:
        out = self.script("up")
        assert out.returncode == 0, out.stdout + out.stderr
        self.up_output = out.stdout + out.stderr

    def down(self) -> None:
        self.script("down")

    def ignite_client(self):
        from pyignite import Client

        host, port = self.ignite_uri.removeprefix("ignite://").split(":")
        client = Client(timeout=10.0)
        client.connect(host, int(port))
        return client

    def leftovers(self) -> list[str]:
        """Ports still answering and processes still running after ``down``: there must be none."""
        import socket

        found = []
        for port in (self.port, self.pg_port, self.log_port, self.log_port + 1):
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    found.append(f"port {port}")
        ps = subprocess.run(["pgrep", "-af", str(self.state)], capture_output=True, text=True).stdout.strip()
        return found + ([f"processes: {ps}"] if ps else [])

    @property
    def password(self) -> str:
        return self.password_of("admin")

    def password_of(self, user: str) -> str:
        return json.loads((self.state / "admin-password.json").read_text())[user]

    def api(self, user: str = "admin") -> httpx.Client:
        if user not in self._tokens:
            resp = httpx.post(f"{self.url}/auth/token", json={"username": user, "password": self.password_of(user)})
            resp.raise_for_status()
            self._tokens[user] = resp.json()["access_token"]
        return httpx.Client(base_url=f"{self.url}/api/v2", headers={"Authorization": f"Bearer {self._tokens[user]}"},
                            timeout=30)

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        with self.api() as api:
            while time.monotonic() < deadline:
                if api.get(f"/dags/{dag_id}").status_code == 200:
                    return
                time.sleep(1)
        raise AssertionError(f"{dag_id} was not parsed within {timeout}s")

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        with self.api() as api:
            return api.get(f"/dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "run_after"}).json()["dag_runs"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.api() as api:
            while time.monotonic() < deadline:
                run = api.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()
                if run["state"] in ("success", "failed"):
                    return run
                time.sleep(1)  # a request a second: each wait ends within a second of the run
        raise AssertionError(f"run {run_id} of {dag_id} did not finish within {timeout}s")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        with self.api() as api:
            resp = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                           params={"full_content": True}, headers={"Accept": "application/json"})
        assert resp.status_code == 200, resp.text
        return resp.text

    def audit_log(self, dag_id: str, run_id: str, task_id: str, event: str) -> list[dict[str, Any]]:
        """Airflow's audit-log entries of one kind for a task of a run (e.g. the scheduler's 'state mismatch')."""
        with self.api() as api:
            resp = api.get("/eventLogs", params={"dag_id": dag_id, "run_id": run_id, "task_id": task_id,
                                                 "event": event, "limit": 100})
        assert resp.status_code == 200, resp.text
        return resp.json()["event_logs"]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        with self.api() as api:
            tis = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100}).json()["task_instances"]
        return {t["task_id"]: t for t in tis}
