"""Where heavy steps run: ``KILN_EXECUTION`` = ``local`` (subprocess, the default) or ``kubernetes`` (pods).

Resolved at run time (argument > Airflow variable ``kiln_execution`` > environment > ``local``), so the
DAG file never changes between a laptop and a cluster.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MODES = ("local", "kubernetes")


def resolve_execution(explicit: str | None = None) -> str:
    mode = explicit
    if mode is None:
        from airflow.sdk import Variable

        mode = Variable.get("kiln_execution", default=None)
    mode = (mode or os.environ.get("KILN_EXECUTION") or "local").strip().lower()
    if mode not in MODES:
        raise ValueError(f"KILN_EXECUTION={mode!r} is not one of {MODES}")
    return mode


def read_result(stage: str, path: str) -> dict[str, Any]:
    """A finished stage's result manifest, the task's XCom; missing means the stage ran where we cannot see."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        from airflow.sdk.exceptions import AirflowException

        raise AirflowException(
            f"stage {stage} finished but its result {path} is not there: in Kubernetes mode the pods' artifact "
            "volume must be the data root this worker sees (docs/kubernetes.md)") from None
