from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.e2e.airflow_server import ROOT, AirflowServer
from tests.e2e.helpers import ARTIFACTS

# Cheap candidates for runs on the running Airflow: on 2 cores parallel Spark JVMs only share the CPU.
SUBSET = ["mxnet_mlp"]


@pytest.fixture(scope="package", autouse=True)
def spark_stages_over_connect(spark_connect):
    """The DAGs' Spark stages attach to the session's Spark Connect server, as under `make` (a test may still pass
    a spark:// connection of its own)."""
    before = os.environ.get("AIRFLOW_CONN_SPARK_DEFAULT")
    os.environ["AIRFLOW_CONN_SPARK_DEFAULT"] = spark_connect.url
    yield spark_connect
    if before is None:
        os.environ.pop("AIRFLOW_CONN_SPARK_DEFAULT", None)
    else:
        os.environ["AIRFLOW_CONN_SPARK_DEFAULT"] = before


@pytest.fixture(scope="package")  # stopped when tests/e2e is done: its scheduler and parser use CPU
def airflow_server(tmp_path_factory, ignite_node, spark_stages_over_connect, kafka_broker):
    """A real Airflow (PostgreSQL, LocalExecutor, 4 components) on its own ports and data root.

    Unpausing kiln_training lets the scheduler create the run of the latest daily interval at once.
    """
    base = tmp_path_factory.mktemp("airflow")
    # PostgreSQL runs as the postgres user, which cannot enter pytest's root-only temp folders.
    state = Path(tempfile.mkdtemp(prefix="kiln-airflow-state-"))
    state.chmod(0o755)
    datasets = base / "datasets"  # the shipped specs; tests add their own while the server runs
    shutil.copytree(ROOT / "datasets", datasets)
    kafka = {"conn_type": "kafka", "extra": {"bootstrap.servers": kafka_broker.bootstrap, "group.id": "kiln-e2e",
                                              "auto.offset.reset": "earliest"}}
    server = AirflowServer(state=state, data_root=base / "data", ignite_uri=ignite_node.connection_uri(), datasets=datasets,
                           extra_env={"AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(kafka),
                                      # a second person: the approval tests assign a request to her alone
                                      "KILN_AIRFLOW_USERS": "admin:admin,reviewer:user"})
    server.up()
    try:
        for dag_id in ("kiln_training", "kiln_cache_refresh"):
            server.wait_for_dag(dag_id)
            with server.api() as api:
                assert api.patch(f"/dags/{dag_id}", json={"is_paused": False}).status_code == 200
        yield server
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        run_logs = server.state / "run"
        if run_logs.exists():
            shutil.copytree(run_logs, ARTIFACTS / "airflow-server", dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.pid", ".s.*"))
        server.down()
        leftovers = server.leftovers()
        shutil.rmtree(state, ignore_errors=True)
        assert not leftovers, f"airflow.sh down left {leftovers}"
