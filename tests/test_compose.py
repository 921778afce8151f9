"""docker-compose.yaml, checked offline with compose-spec's own loader (tools/composecheck, Go).

There is no Docker engine on Kiln's machines, so the file is loaded, validated and normalised the way
`docker compose config` does it, then checked against the repo: images, commands, ports, mounts, order.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_COMMANDS = {"airflow-init": ["airflow", "db", "migrate"], "airflow-api-server": ["airflow", "api-server", "--port", "8080"],
                    "airflow-scheduler": ["airflow", "scheduler"], "airflow-dag-processor": ["airflow", "dag-processor"],
                    "airflow-triggerer": ["airflow", "triggerer"]}


@pytest.fixture(scope="module")
def composecheck(tmp_path_factory) -> Path:
    if not shutil.which("go"):
        pytest.fail("Go is needed to build tools/composecheck (compose-spec's loader); install golang")
    binary = tmp_path_factory.mktemp("bin") / "composecheck"
    out = subprocess.run(["go", "build", "-o", str(binary), "."], cwd=ROOT / "tools" / "composecheck",
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return binary


@pytest.fixture(scope="module")
def project(composecheck, tmp_path_factory) -> dict:
    env = tmp_path_factory.mktemp("env") / ".env"
    env.write_text("KILN_PG_PASSWORD=pw\nAIRFLOW__API_AUTH__JWT_SECRET=jwt\nAIRFLOW__API__SECRET_KEY=key\n")
    out = subprocess.run([str(composecheck), str(ROOT / "docker-compose.yaml"), str(env)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_secrets_are_required_not_defaulted(composecheck):
    out = subprocess.run([str(composecheck), str(ROOT / "docker-compose.yaml")], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"})
    # the loader names the first missing one it meets, in no fixed order
    assert out.returncode == 1
    assert re.search(r"required variable (KILN_PG_PASSWORD|AIRFLOW__API_AUTH__JWT_SECRET|AIRFLOW__API__SECRET_KEY) "
                     r"is missing a value", out.stderr), out.stderr


def test_the_full_stack_is_there(project):
    assert set(project["services"]) == {"postgres", *AIRFLOW_COMMANDS, "spark-master", "spark-worker-1", "spark-worker-2",
                                        "spark-connect", "ignite", "ignite-2", "kafka", "streaming", "serving"}


def test_airflow_services_come_from_the_project_image(project):
    for name, command in AIRFLOW_COMMANDS.items():
        svc = project["services"][name]
        assert svc["image"] == "kiln/kiln:0.1.0" and svc["build"]["dockerfile"] == "Dockerfile"
        assert Path(svc["build"]["context"]).resolve() == ROOT
        assert svc["command"] == command
        assert svc["environment"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-api-server:8080/execution/"
        assert json.loads(svc["environment"]["AIRFLOW_CONN_IGNITE_DEFAULT"]) == {"conn_type": "ignite", "host": "ignite,ignite-2",
                                                                                  "port": 10800}
        assert any(v["target"] == "/data" for v in svc["volumes"])
    assert (ROOT / "Dockerfile").exists()


def test_ports_match_the_configs_they_come_from(project):
    published = {name: {int(p["target"]) for p in svc.get("ports", [])} for name, svc in project["services"].items()}
    assert published["airflow-api-server"] == {8080}
    assert published["serving"] == {8000} and "--port" in project["services"]["serving"]["command"]
    assert project["services"]["serving"]["command"][project["services"]["serving"]["command"].index("--port") + 1] == "8000"
    xml = (ROOT / "ignite" / "kiln-ignite.xml").read_text()
    thin_port = re.search(r"kiln.ignite.port'\] \?: '(\d+)'", xml).group(1)
    assert published["ignite"] == published["ignite-2"] == {int(thin_port)}
    assert "/api/v2/monitor/health" in " ".join(project["services"]["airflow-api-server"]["healthcheck"]["test"])


def test_unauthenticated_ports_are_published_on_loopback_only(project):
    authenticated = {"airflow-api-server"}  # Airflow's auth manager guards it; nothing else authenticates
    for name, svc in project["services"].items():
        for port in svc.get("ports", []):
            if name not in authenticated:
                assert port.get("host_ip") == "127.0.0.1", (name, port)


def test_ignite_mounts_the_repos_own_xml(project):
    ignite = project["services"]["ignite"]
    config = next(v for v in ignite["volumes"] if v["target"] == "/etc/kiln/kiln-ignite.xml")
    assert Path(config["source"]).resolve() == ROOT / "ignite" / "kiln-ignite.xml" and config["read_only"] is True
    assert ignite["environment"]["CONFIG_URI"] == config["target"]


def test_dependency_order_and_health_checks(project):
    services = project["services"]
    scheduler = services["airflow-scheduler"]["depends_on"]
    assert scheduler["postgres"]["condition"] == "service_healthy"
    assert scheduler["airflow-init"]["condition"] == "service_completed_successfully"
    assert scheduler["airflow-api-server"]["condition"] == "service_healthy"
    assert services["airflow-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("postgres", "airflow-api-server", "spark-master", "ignite", "serving"):
        assert services[name]["healthcheck"]["test"], name
    assert set(project["volumes"]) >= {"kiln-data", "postgres-data", "ignite-data"}


def test_spark_stages_attach_to_the_connect_server_on_the_cluster(project):
    services = project["services"]
    assert services["airflow-scheduler"]["environment"]["AIRFLOW_CONN_SPARK_DEFAULT"].startswith("sc://spark-connect:15002")
    connect = services["spark-connect"]
    command = connect["command"]
    assert command[command.index("--class") + 1] == "org.apache.spark.sql.connect.service.SparkConnectServer"
    assert command[command.index("--master") + 1] == "spark://spark-master:7077"
    assert "spark.connect.grpc.binding.port=15002" in command and "spark.driver.host=spark-connect" in command
    assert any(v["source"] == "kiln-data" and v["target"] == "/data" for v in connect["volumes"])  # it reads the data root
    assert connect["healthcheck"]["test"]


def test_the_stream_reads_the_kraft_broker_and_writes_both_ignite_nodes(project):
    services = project["services"]
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller" and "ZOOKEEPER" not in " ".join(kafka)
    assert kafka["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092" and services["kafka"]["healthcheck"]["test"]
    assert "ports" not in services["kafka"]  # no authentication: reachable on the compose network only
    stream = services["streaming"]
    assert stream["command"][:6] == ["python", "-m", "ml_tasks", "stream", "--stream-mode", "continuous"]
    assert stream["environment"]["KILN_KAFKA_BOOTSTRAP"] == "kafka:9092" and stream["environment"]["KILN_IGNITE_HOST"] == "ignite,ignite-2"
    assert stream["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert any(v["target"] == "/data" for v in stream["volumes"])  # its checkpoint lives in the data root
    conn = json.loads(services["airflow-scheduler"]["environment"]["AIRFLOW_CONN_KAFKA_DEFAULT"])
    assert conn["extra"]["bootstrap.servers"] == "kafka:9092"


def test_two_spark_workers_and_two_ignite_nodes_with_a_backup_each(project):
    services = project["services"]
    for name in ("spark-worker-1", "spark-worker-2"):
        worker = services[name]
        command = worker["command"]
        assert command[:3] == ["spark-class", "org.apache.spark.deploy.worker.Worker", "spark://spark-master:7077"]
        offered_gb = int(command[command.index("--memory") + 1].rstrip("g"))
        assert int(command[command.index("--cores") + 1]) <= float(worker["cpus"])  # offers no more than it may use
        assert offered_gb * 2**30 < int(worker["mem_limit"])  # and leaves room for the worker daemon itself
    nodes = {name: services[name]["environment"]["JVM_OPTS"] for name in ("ignite", "ignite-2")}
    for opts in nodes.values():
        assert "-Dkiln.ignite.backups=1" in opts and "-Dkiln.ignite.discovery=ignite:47500,ignite-2:47500" in opts
    assert services["ignite"]["volumes"] != services["ignite-2"]["volumes"]  # each node its own work folder
    assert services["serving"]["environment"]["KILN_IGNITE_HOST"] == "ignite,ignite-2"
