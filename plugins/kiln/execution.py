"""Where heavy steps run: ``KILN_EXECUTION`` = ``local`` (subprocess, the default) or ``kubernetes`` (pods).

Resolved at run time (argument > Airflow variable ``kiln_execution`` > environment > ``local``), so the
DAG file never changes between a laptop and a cluster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODES = ("local", "kubernetes")


def resolve_execution(explicit: str | None = None) -> str:
    from kiln.settings import setting

    mode = (explicit or setting("kiln_execution", "KILN_EXECUTION")).strip().lower()
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


def stage_exit(stage: str, code: int | None, reason: str, where: str) -> BaseException:
    """What a stage's non-zero exit means for its task, wherever it ran (``where``: "its process", "pod <name>"):
    the skip code skips, bad input fails without a retry, anything else fails (and may be retried); the stage's own
    error line is the reason."""
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

    from ml_tasks.core.errors import BAD_INPUT_EXIT_CODE, SKIP_EXIT_CODE

    if code == SKIP_EXIT_CODE:
        return AirflowSkipException(reason)
    if code == BAD_INPUT_EXIT_CODE:
        return AirflowFailException(f"stage {stage} rejected its input: {reason}")
    return AirflowException(f"stage {stage} failed in {where} (exit code {code}): {reason}")
