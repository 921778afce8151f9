"""Shared fixtures: a fresh data root per test, and one small preprocessed partition per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("KILN_SPARK_MASTER", "local[2]")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The same Airflow settings `make test` exports, so a bare `pytest` run behaves alike.
for key, value in {
    "AIRFLOW_HOME": str(PROJECT_ROOT / ".airflow"),
    "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW_CONN_SPARK_DEFAULT": "spark://local%5B%2A%5D",
    "PYSPARK_PYTHON": sys.executable,
}.items():
    os.environ.setdefault(key, value)
# spark-submit and airflow come from the venv, as under `make`.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


def transactions_spec():
    """The built-in dataset's spec, as shipped in datasets/."""
    from ml_tasks.core.spec import load_spec

    return load_spec(PROJECT_ROOT / "datasets" / "transactions.yaml")


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture(scope="session", autouse=True)
def _stop_spark_at_exit():
    """Stop an in-process SparkSession before interpreter exit (py4j otherwise logs to closed streams)."""
    yield
    if "pyspark.sql" in sys.modules:
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()


@pytest.fixture(scope="session")
def small_features(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One synthetic partition (8 000 rows) preprocessed on real Spark, shared by the training tests."""
    from ml_tasks.core.layout import Layout
    from ml_tasks.features.preprocess import preprocess
    from ml_tasks.ingestion.ingest import ingest

    spec = transactions_spec()
    layout = Layout(tmp_path_factory.mktemp("features"), "transactions", "2026-03-02")
    ingest(spec, layout.ds, layout.raw_dir, rows=8_000)
    summary = preprocess(layout.raw_dir, layout.features, layout.transform, pca_k=spec.default("pca_k"))
    return {"layout": layout, "summary": summary}  # type: ignore[dict-item]


@pytest.fixture(scope="session")
def diabetes_features(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """scikit-learn's diabetes set (a regression) preprocessed on real Spark as its shipped spec says."""
    from ml_tasks.core.layout import Layout
    from ml_tasks.core.spec import load_spec
    from ml_tasks.features.preprocess import preprocess
    from ml_tasks.ingestion.ingest import ingest

    spec = load_spec(PROJECT_ROOT / "datasets" / "diabetes.yaml")
    layout = Layout(tmp_path_factory.mktemp("diabetes"), "diabetes", "2026-03-02")
    ingest(spec, layout.ds, layout.raw_dir)
    summary = preprocess(layout.raw_dir, layout.features, layout.transform, pca_k=spec.default("pca_k"),
                         test_fraction=spec.default("test_fraction"))
    return {"layout": layout, "summary": summary, "spec": spec}  # type: ignore[dict-item]


@pytest.fixture(scope="session")
def ignite_node(tmp_path_factory: pytest.TempPathFactory):
    """One real Ignite node for the test session (its own ports, native persistence), stopped at the end."""
    from tests.ignite_node import IgniteNode

    node = IgniteNode(tmp_path_factory.mktemp("ignite"))
    node.start()
    os.environ["AIRFLOW_CONN_IGNITE_DEFAULT"] = node.connection_uri()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def secured_ignite_node(tmp_path_factory: pytest.TempPathFactory):
    """A real Ignite node whose thin clients must log in (persistence on: Ignite keeps its users there). Its one
    user is Ignite's first, ``node.username``/``node.password``: changing it takes SQL, which Kiln's nodes lack."""
    from tests.ignite_node import IgniteNode

    node = IgniteNode(tmp_path_factory.mktemp("ignite-secured"), port=10995, discovery_port=47730,
                      communication_port=47340, authentication=True)
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory):
    """One real Kafka broker (KRaft, scripts/kafka.sh, port 9192) for the test session."""
    from tests.kafka_broker import KafkaBroker

    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def spark_connect(tmp_path_factory: pytest.TempPathFactory):
    """One real Spark Connect server (scripts/spark_connect.sh, its own ports) for the session's Spark stages."""
    from tests.spark_cluster import SparkConnectServer

    server = SparkConnectServer(tmp_path_factory.mktemp("spark-connect"))
    server.start()
    yield server
    server.stop()
    assert not server.running(), "spark_connect.sh down left the server running"
