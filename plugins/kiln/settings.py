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


# The connections Kiln's stages and hooks use. A stage gets those its operator names (and what it prints is
# logged), so they are registered with Airflow's masker first.
KILN_CONNECTIONS = ("ignite_default", "spark_default", "kubernetes_default")


def mask_kiln_connections() -> None:
    """Fetch each defined Kiln connection once: the Task SDK masks its password and extras on retrieval."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    for conn_id in KILN_CONNECTIONS:
        try:
            BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            continue
