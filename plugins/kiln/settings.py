"""Project settings read at run time: Airflow variable first, then environment, then the variable's declared default
(``ml_tasks.core.environment``)."""

from __future__ import annotations

from ml_tasks.core.environment import ENV, env_given


def setting(variable: str, env: str) -> str:
    from airflow.sdk import Variable

    return Variable.get(variable, default=None) or env_given(env) or ENV[env].default_text()


def data_root() -> str:
    return setting("kiln_data_root", "KILN_DATA_ROOT")


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
