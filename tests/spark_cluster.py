"""A real Spark standalone cluster for tests: a master and two workers started with scripts/spark.sh on their own ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, action: str, env: dict[str, str]) -> str:
    """``scripts/<script> <action>``; its output, or an error with what it said."""
    out = subprocess.run([str(ROOT / "scripts" / script), action], env=env, capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        raise RuntimeError(f"{script} {action} failed: {out.stdout}\n{out.stderr}")
    return out.stdout


@dataclass
class SparkCluster:
    state_dir: Path
    master_port: int = 7177
    ui_port: int = 8190  # worker i's UI: ui_port + i
    workers: int = 2

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KILN_SPARK_DIR": str(self.state_dir), "KILN_SPARK_WORKERS": str(self.workers),
                "KILN_SPARK_MASTER_PORT": str(self.master_port), "KILN_SPARK_MASTER_UI_PORT": str(self.ui_port)}

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def _script(self, action: str) -> str:
        return run_script("spark.sh", action, self.env)

    def start(self) -> None:
        """Starts what is not running: the whole cluster, or a worker that was killed."""
        self._script("up")

    def stop(self) -> None:
        self._script("down")

    def master_json(self) -> dict:
        """The master's own JSON API: workers (with their state) and applications, active and completed."""
        return httpx.get(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5).json()

    def worker_json(self, i: int) -> dict:
        """Worker i's JSON API (1-based): its id and the executors it runs and ran, with their application ids."""
        return httpx.get(f"http://127.0.0.1:{self.ui_port + i}/json/", timeout=5).json()

    def worker_pid(self, i: int) -> int:
        return int((self.state_dir / "run" / f"worker-{i}.pid").read_text())

    def kill_worker(self, i: int) -> None:
        """kill -9 worker i with the executors it launched (its process group), as a lost machine goes."""
        os.killpg(self.worker_pid(i), signal.SIGKILL)

    def leftovers(self) -> list[str]:
        """Processes or ports still alive after a stop."""
        left = []
        for pidfile in (self.state_dir / "run").glob("*.pid"):
            left.append(f"pid file {pidfile.name}")
        for port in [self.master_port, self.ui_port, *(self.ui_port + i for i in range(1, self.workers + 1))]:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    left.append(f"port {port}")
        out = subprocess.run(["pgrep", "-f", str(self.state_dir)], capture_output=True, text=True)
        left += [f"process {pid}" for pid in out.stdout.split()]
        return left


@dataclass
class SparkConnectServer:
    """A Spark Connect server started with scripts/spark_connect.sh on its own ports."""

    state_dir: Path
    port: int = 15202
    ui_port: int = 4145

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KILN_SPARK_CONNECT_DIR": str(self.state_dir), "KILN_SPARK_CONNECT_PORT": str(self.port),
                "KILN_SPARK_CONNECT_UI_PORT": str(self.ui_port)}

    @property
    def url(self) -> str:
        return f"sc://127.0.0.1:{self.port}"

    def _script(self, action: str) -> str:
        return run_script("spark_connect.sh", action, self.env)

    def start(self) -> None:
        self._script("up")

    def stop(self) -> None:
        self._script("down")

    def running(self) -> bool:
        return subprocess.run([str(ROOT / "scripts" / "spark_connect.sh"), "status"], env=self.env,
                              capture_output=True).returncode == 0

    def jobs(self, status: str | None = None) -> list[dict]:
        """The server's Spark jobs from its own REST API (``status``: running, succeeded, failed)."""
        base = f"http://127.0.0.1:{self.ui_port}/api/v1/applications"
        (app,) = httpx.get(base, timeout=5).json()
        return httpx.get(f"{base}/{app['id']}/jobs", params={"status": status} if status else None, timeout=5).json()
