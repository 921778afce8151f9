"""Launch a real MXNet parameter-server cluster on this machine: 1 scheduler, S servers, W workers.

Every role is its own process group with the DMLC_* environment ``dist_sync`` needs on loopback.
Each line a role prints goes to ``log`` with the role as prefix. When any role fails (or the
timeout passes) the others are stopped and nothing is left running; the error names the role.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ml_tasks.core.atomic import read_json, write_json
from ml_tasks.core.errors import KilnError
from ml_tasks.core.processes import die_with_parent, kill_recorded, stage_environment

CLUSTER_TIMEOUT_S = 1800.0  # a distributed run's default bound, whoever starts it
SCHEDULER_PORT = 9091  # where a cluster of pods finds its scheduler (its Service's port); processes here take a free one


def ps_role_command(python: str = sys.executable) -> list[str]:
    """The scheduler's and the servers' command: MXNet imported with DMLC_ROLE set; numpy's aliases first (see
    ``import_mxnet``). ``python``: ``"python"`` in a pod, the image's."""
    return [python, "-c", "from ml_tasks.training.train_mxnet import import_mxnet; import_mxnet()"]


def worker_arguments(arguments: list[str]) -> list[str]:
    """A ``dist_sync`` worker's ``train-mxnet`` arguments: the run's, then the kvstore."""
    return [*arguments, "--kvstore", "dist_sync"]


class ClusterFailed(KilnError):
    """A role of the distributed run failed; the message names it."""


@dataclass
class Role:
    name: str
    proc: subprocess.Popen[str]
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=15))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dmlc_env(port: int, num_servers: int, num_workers: int, *, scheduler: str = "127.0.0.1", interface: str = "lo",
             node_host: str | None = "127.0.0.1") -> dict[str, str]:
    """What every role of a ``dist_sync`` cluster needs (but ``DMLC_ROLE``): here on loopback; a pod passes its
    scheduler's Service, ``eth0`` and ``node_host=None`` (it sets its own address from the pod's IP)."""
    env = {
        "DMLC_PS_ROOT_URI": scheduler,
        "DMLC_PS_ROOT_PORT": str(port),
        "DMLC_NUM_SERVER": str(num_servers),
        "DMLC_NUM_WORKER": str(num_workers),
        "DMLC_INTERFACE": interface,
        "OMP_NUM_THREADS": "1",  # each role one thread: a cluster on one machine must not oversubscribe it
    }
    return env if node_host is None else {**env, "DMLC_NODE_HOST": node_host}


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by signal {signal.Signals(-code).name}"
    return f"exited with code {code}"


def stop_all(roles: list[Role], grace: float = 5.0) -> None:
    """SIGTERM every live role's process group, then SIGKILL what is left after ``grace`` seconds."""
    for role in roles:
        if role.proc.poll() is None:
            with _ignore_missing():
                os.killpg(role.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for role in roles:
        try:
            role.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with _ignore_missing():
                os.killpg(role.proc.pid, signal.SIGKILL)
            role.proc.wait()


class _ignore_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        return exc_type is ProcessLookupError


def run_cluster(
    worker_cmd: list[str],
    num_servers: int,
    num_workers: int,
    log: Callable[[str], None],
    timeout: float = CLUSTER_TIMEOUT_S,
    pid_file: Path | None = None,
    on_start: Callable[[list[Role]], None] | None = None,
) -> None:
    """Run the cluster to completion or raise ``ClusterFailed`` naming the first role that failed."""
    if num_servers < 1 or num_workers < 1:
        raise KilnError(f"need at least one server and one worker, got {num_servers} and {num_workers}")
    # a killed earlier try: its roles must not train on beside this one
    if pid_file is not None and pid_file.exists() and (leftover := kill_recorded(read_json(pid_file), "ml_tasks")):
        log(f"stopped roles left by an earlier try: {', '.join(leftover)}")
    base = {**stage_environment(os.environ), **dmlc_env(free_port(), num_servers, num_workers)}  # never the worker's secrets
    plan = [("scheduler", ps_role_command(), "scheduler")]
    plan += [(f"server-{i}", ps_role_command(), "server") for i in range(num_servers)]
    plan += [(f"worker-{i}", worker_cmd, "worker") for i in range(num_workers)]
    roles: list[Role] = []
    threads: list[threading.Thread] = []

    def pump(role: Role) -> None:
        assert role.proc.stdout is not None
        for line in role.proc.stdout:
            role.tail.append(line.rstrip())
            log(f"[{role.name}] {line.rstrip()}")

    try:
        for name, cmd, dmlc_role in plan:
            proc = subprocess.Popen(cmd, env={**base, "DMLC_ROLE": dmlc_role}, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                    preexec_fn=die_with_parent)
            roles.append(Role(name, proc))
            threads.append(threading.Thread(target=pump, args=(roles[-1],), daemon=True))
            threads[-1].start()
        if pid_file is not None:
            write_json(pid_file, {r.name: r.proc.pid for r in roles})
        if on_start is not None:
            on_start(roles)
        deadline = time.monotonic() + timeout
        while True:
            failed = next((r for r in roles if r.proc.poll() not in (None, 0)), None)
            if failed is not None:
                for t in threads:
                    t.join(timeout=1)
                detail = "; ".join(ln for ln in failed.tail if ln)[-800:] or "no output"
                raise ClusterFailed(f"MXNet role {failed.name} {_describe_exit(failed.proc.returncode)}: {detail}")
            if all(r.proc.poll() == 0 for r in roles):
                break
            if time.monotonic() > deadline:
                alive = [r.name for r in roles if r.proc.poll() is None]
                raise ClusterFailed(f"MXNet cluster timed out after {timeout:.0f}s; still running: {', '.join(alive)}")
            time.sleep(0.2)
    finally:
        stop_all(roles)
        for t in threads:
            t.join(timeout=2)
    log(f"cluster finished: {json.dumps({r.name: r.proc.returncode for r in roles})}")
