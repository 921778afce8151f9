"""Child processes that cannot outlive the process that started them, and see only what they need."""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# What a stage process takes from its parent's environment: nothing else. The parent is an Airflow worker
# whose environment holds Airflow's own secrets (AIRFLOW__* : the JWT secret, the Fernet key, the metadata
# DB URL with its password) and every connection; a stage runs user code (a spec's trainer), so it gets the
# connections its operator hands it (``extra``) and these.
STAGE_ENV_NAMES = frozenset({
    "PATH", "HOME", "TMPDIR", "TEMP", "TMP", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME",
    "PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED", "VIRTUAL_ENV",
    "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "HADOOP_CONF_DIR",
})
STAGE_ENV_PREFIXES = ("LC_", "KILN_", "SPARK_", "PYSPARK_", "JAVA_", "MXNET_")
# Kiln's own settings may name a secret (KILN_PG_PASSWORD is the metadata DB's, KILN_SERVE_API_KEY serving's).
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|FERNET|CREDENTIAL|SQL_ALCHEMY", re.IGNORECASE)


def connection_variable(conn_id: str) -> str:
    """The variable a stage is handed an Airflow connection in (Airflow's own convention)."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def connection_fields(value: str, variable: str) -> dict[str, Any]:
    """A connection handed in Airflow's JSON form, its ``extra`` parsed too (the other form is a URI); naming the
    variable when it is not JSON."""
    from ml_tasks.core.errors import KilnError

    try:
        conn = json.loads(value)
        extra = conn.get("extra") or {}
        return {**conn, "extra": json.loads(extra) if isinstance(extra, str) else extra}
    except ValueError as exc:
        raise KilnError(f"{variable} is not valid JSON: {getattr(exc, 'msg', exc)}") from None


def stage_environment(parent: Mapping[str, str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a stage process: the allowed part of ``parent`` plus ``extra``.

    ``extra`` is what the operator decided the stage needs (its ``AIRFLOW_CONN_*`` connections,
    ``SPARK_REMOTE``); it is taken as given. From ``parent`` only ``STAGE_ENV_NAMES`` and names starting
    with ``STAGE_ENV_PREFIXES`` pass, never one that names a secret (the path of a secret's file, ``*_FILE``, does),
    never an ``AIRFLOW*`` variable.
    """
    env = {name: value for name, value in parent.items()
           if (name in STAGE_ENV_NAMES or name.startswith(STAGE_ENV_PREFIXES))
           and (not _SECRET_NAME.search(name) or name.endswith("_FILE"))}  # a file's path is not the secret
    env.update(extra or {})
    return env

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL when its parent dies, so a SIGKILLed task orphans nothing.

    Children run in sessions of their own (so a whole role or stage can be signalled as a group),
    which is exactly what hides them from a kill of the parent's group: this closes that gap.
    """
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def kill_recorded(pids: dict[str, int], marker: str) -> list[str]:
    """SIGKILL the process groups of recorded pids still running a command containing ``marker``.

    The check of the command line keeps a recycled pid (another program now) from being killed.
    """
    killed = []
    for name, pid in pids.items():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            try:
                os.killpg(pid, signal.SIGKILL)
                killed.append(name)
            except ProcessLookupError:
                pass
    return killed
