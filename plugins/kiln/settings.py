"""Project settings read at run time: Airflow variable first, then environment, then a local default."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def setting(variable: str, env: str, default: str) -> str:
    from airflow.sdk import Variable

    return Variable.get(variable, default=None) or os.environ.get(env) or default


def data_root() -> str:
    return setting("kiln_data_root", "KILN_DATA_ROOT", str(PROJECT_ROOT / "data"))
