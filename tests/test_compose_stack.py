"""docker-compose.yaml, up: the whole stack under podman-compose, a training run through Airflow's REST API, a
prediction from the serving container, and down, leaving nothing of the project behind.

Nothing is built here (`make images` builds Kiln's image and the local stand-ins for postgres, apache/ignite and
apache/kafka). The stack file is the repo's own, as a user runs it, with only what a test on a shared 2-core machine
needs changed (written to a temporary folder, relative paths made absolute): every published port on a free
loopback port (the file publishes the api-server on every interface, and 8080/8000/... may be taken), smaller
JVM heaps and Spark offers, its own project name and network (in the benchmarking range 198.18.0.0/15), and the
datasets folder a copy whose built-in spec has no schedule, so unpausing kiln_training adds no scheduled run
with the default (every candidate) settings beside the light one the test triggers.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.containers]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "compose-stack"
PROJECT = "kiln-compose-test"
NETWORK = f"{PROJECT}_default"  # the name podman-compose gives the file's default network
SUBNET = "198.19.200.0/24"
CONTAINERS_CONF = ROOT / "containers" / "containers.conf"
IMAGES = ("kiln/kiln:0.1.0", "postgres:15-bookworm", "apache/ignite:2.17.0", "apache/kafka:4.1.0")
# What must be healthy before a run is triggered (serving is healthy only once a champion is warmed: after the run).
HEALTHY_FIRST = ("postgres", "airflow-api-server", "spark-master", "spark-connect", "ignite", "ignite-2", "kafka")
RUNNING = ("airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "spark-worker-1", "spark-worker-2",
           "streaming", "serving")
# A light run: fewer rows, one cheap candidate (a Spark stage over Spark Connect, like preprocess).
CONF = {"rows": 6000, "candidates": ["spark_lr"]}
UP_TIMEOUT = 15 * 60
RUN_TIMEOUT = 20 * 60
DAG = "kiln_training"


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    out = subprocess.run(["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout)
    if check and out.returncode:
        raise AssertionError(f"podman {' '.join(args)}: exit {out.returncode}\n{out.stderr}")
    return out


def container(service: str) -> str:
    return f"{PROJECT}_{service}_1"


def leftovers() -> dict[str, list[str]]:
    """Whatever of the project podman still holds."""
    label = f"label=io.podman.compose.project={PROJECT}"
    found = {
        "containers": podman("ps", "-a", "--filter", label, "--format", "{{.Names}}").stdout.split(),
        "pods": podman("pod", "ps", "--filter", label, "--format", "{{.Name}}").stdout.split(),
        "volumes": podman("volume", "ls", "--filter", label, "--format", "{{.Name}}").stdout.split(),
        "networks": [n for n in podman("network", "ls", "--format", "{{.Name}}").stdout.split() if n == NETWORK],
    }
    return {kind: names for kind, names in found.items() if names}


def stack_file(folder: Path, ports: dict[str, dict[int, int]]) -> Path:
    """The repo's docker-compose.yaml for this test (see the module's docstring); ``ports`` is filled in."""
    stack = json.loads(json.dumps(yaml.safe_load((ROOT / "docker-compose.yaml").read_text())))  # anchors resolved, unshared
    datasets = folder / "datasets"
    shutil.copytree(ROOT / "datasets", datasets)
    spec = datasets / "transactions.yaml"
    assert not re.search(r"^schedule:", spec.read_text(), re.M)
    spec.write_text(spec.read_text() + "schedule: null  # the compose test: no scheduled run beside the triggered one\n")
    for name, svc in stack["services"].items():
        if "build" in svc:
            svc["build"]["context"] = str(ROOT)
        volumes = []
        for volume in svc.get("volumes", []):
            source, _, rest = volume.partition(":")
            if source == "./datasets":
                source = str(datasets)
            elif source.startswith("./"):
                source = str(ROOT / source[2:])
            volumes.append(f"{source}:{rest}")
        if volumes:
            svc["volumes"] = volumes
        if "ports" in svc:
            targets = [int(str(p).rsplit(":", 1)[1]) for p in svc["ports"]]
            ports[name] = {target: free_port() for target in targets}
            svc["ports"] = [f"127.0.0.1:{ports[name][t]}:{t}" for t in targets]
        command = svc.get("command")
        if name.startswith("spark-worker"):  # 2 GB for executors (Spark's default executor takes 1 GB), 3 GB in all
            command[command.index("--memory") + 1] = "2g"
            svc["mem_limit"] = "3g"
        if name == "spark-connect":
            command[command.index("--driver-memory") + 1] = "1g"
            svc["mem_limit"] = "2g"
        if name in ("ignite", "ignite-2"):
            opts = svc["environment"]["JVM_OPTS"].replace("-Xms1g -Xmx2g", "-Xms256m -Xmx1g")
            svc["environment"]["JVM_OPTS"] = opts + " -Dkiln.ignite.region.bytes=536870912"
        if name == "kafka":
            svc["environment"]["KAFKA_HEAP_OPTS"] = "-Xms256m -Xmx512m"
    path = folder / "docker-compose.yaml"
    path.write_text(yaml.safe_dump(stack, sort_keys=False))
    return path


@dataclass
class Stack:
    file: Path
    env: dict[str, str]
    ports: dict[str, dict[int, int]]
    healthy_after: float
    api_url: str
    serving_url: str
    password: str = ""

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(["podman-compose", "-p", PROJECT, "-f", str(self.file), *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def reload_network(self) -> None:
        """Re-create the project's firewall rules (published ports, masquerade): another tool on a shared machine
        that cleans up iptables chains (a Kubernetes node's teardown removing CNI-* chains) can take podman's with it,
        and a published port then accepts connections that never reach the container."""
        names = podman("ps", "--filter", f"label=io.podman.compose.project={PROJECT}", "--format", "{{.Names}}").stdout.split()
        if names:
            print(f"reloading the firewall rules of {len(names)} containers")
            podman("network", "reload", *names, check=False)

    def request(self, method: str, url: str, deadline: float, **kwargs) -> httpx.Response:
        """One HTTP request to a published port, retried (after a network reload) until ``deadline`` on transport errors."""
        while True:
            try:
                return httpx.request(method, url, **{"timeout": 90, **kwargs})
            except httpx.TransportError as exc:
                assert time.monotonic() < deadline, f"{method} {url}: {exc!r}"
                self.reload_network()
                time.sleep(5)

    def api(self) -> httpx.Client:
        if not self.password:
            generated = podman("exec", container("airflow-api-server"), "cat",
                               "/opt/airflow/simple_auth_manager_passwords.json.generated").stdout
            self.password = json.loads(generated)["admin"]
        # The first requests of a fresh api-server on a loaded 2-core machine can take long: wait, then retry.
        token = self.request("POST", f"{self.api_url}/auth/token", time.monotonic() + 600,
                             json={"username": "admin", "password": self.password})
        assert token.status_code in (200, 201), token.text
        return httpx.Client(base_url=f"{self.api_url}/api/v2", timeout=180,
                            headers={"Authorization": f"Bearer {token.json()['access_token']}"})


def wait_until_up(started: float) -> None:
    """Every health check passes (podman runs them on request here: no systemd timers), airflow-init migrated the
    database and exited 0, and the other services run."""
    deadline = started + UP_TIMEOUT
    pending = set(HEALTHY_FIRST)
    init_done = False
    while pending or not init_done:
        for service in sorted(pending):
            if podman("healthcheck", "run", container(service), check=False, timeout=60).returncode == 0:
                pending.discard(service)
                print(f"{service} healthy after {time.monotonic() - started:.0f} s")
        state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", container("airflow-init"),
                       check=False).stdout.split()
        if state == ["exited", "0"] and not init_done:
            init_done = True
            print(f"airflow-init done after {time.monotonic() - started:.0f} s")
        if time.monotonic() > deadline:
            status = podman("ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}",
                            "--format", "{{.Names}} {{.Status}}").stdout
            raise AssertionError(f"not up within {UP_TIMEOUT} s: unhealthy {sorted(pending)}, airflow-init {state}\n{status}")
        if pending or not init_done:
            time.sleep(5)
    for service in RUNNING:
        status = podman("inspect", "--format", "{{.State.Status}}", container(service)).stdout.strip()
        assert status == "running", (service, status)


def save_logs() -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    names = podman("ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}", "--format", "{{.Names}}",
                   check=False).stdout.split()
    for name in names:
        out = podman("logs", name, check=False, timeout=60)
        (ARTIFACTS / f"{name}.log").write_text(out.stdout + out.stderr)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    if not shutil.which("podman-compose"):
        pytest.fail("podman-compose is not installed (scripts/system_deps.sh)")
    missing = [image for image in IMAGES if podman("image", "exists", image, check=False).returncode]
    if missing:
        pytest.fail(f"images missing: {', '.join(missing)}: run make images")
    assert not leftovers(), f"an earlier run left {leftovers()}: podman-compose -p {PROJECT} down -v"
    folder = tmp_path_factory.mktemp("compose")
    ports: dict[str, dict[int, int]] = {}
    path = stack_file(folder, ports)
    env = {**podman_env(), "KILN_PG_PASSWORD": secrets.token_hex(16),
           "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32), "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32)}
    stack = Stack(path, env, ports, 0.0, f"http://127.0.0.1:{ports['airflow-api-server'][8080]}",
                  f"http://127.0.0.1:{ports['serving'][8000]}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # The project's network, made before podman-compose (which then takes it as it is): podman's next free subnet
    # would be in 10/8; this one is in the benchmarking range, and the labels make `leftovers` see it.
    podman("network", "create", "--subnet", SUBNET, "--label", f"io.podman.compose.project={PROJECT}",
           "--label", f"com.docker.compose.project={PROJECT}", NETWORK)
    try:
        # Without DNS on the network every service fails on its first peer's name, and the stack never comes up.
        assert podman("network", "inspect", "--format", "{{.DNSEnabled}}", NETWORK).stdout.strip() == "true", (
            "the project's network has no DNS: CNI's dnsname plugin is missing (scripts/system_deps.sh containers)")
        started = time.monotonic()
        up = stack.compose("up", "-d", "--no-build")
        (ARTIFACTS / "up.log").write_text(up.stdout + up.stderr)
        assert up.returncode == 0, up.stderr[-4000:]
        wait_until_up(started)
        stack.healthy_after = time.monotonic() - started
        print(f"stack up and healthy after {stack.healthy_after:.0f} s")
        yield stack
    finally:
        save_logs()
        down = stack.compose("down", "-v", timeout=600)
        (ARTIFACTS / "down.log").write_text(down.stdout + down.stderr)
        podman("network", "rm", "-f", NETWORK, check=False)
        left = leftovers()
        assert down.returncode == 0, down.stderr[-4000:]
        assert not left, f"down left {left}"


def task_log(api: httpx.Client, run_id: str, ti: dict) -> str:
    """A task instance's log through the API (the api-server asks the scheduler's log server), else from the
    scheduler's own files."""
    resp = api.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{max(ti['try_number'], 1)}",
                   params={"full_content": True, "map_index": ti.get("map_index", -1)})
    text = ""
    if resp.status_code == 200:
        content = resp.json().get("content", [])
        text = "\n".join(c.get("event", json.dumps(c)) if isinstance(c, dict) else str(c) for c in content)
    if "Could not read" in text or "Could not fetch" in text or not text.strip():
        found = podman("exec", container("airflow-scheduler"), "bash", "-c",
                       f"find /opt/airflow/logs -path '*{run_id}*' -path '*task_id={ti['task_id']}*' -type f "
                       "| sort | xargs -r tail -n 200", check=False)
        text += "\n--- from the scheduler's log files ---\n" + found.stdout + found.stderr
    return text


@pytest.fixture(scope="module")
def training_run(stack: Stack) -> dict:
    with stack.api() as api:
        deadline = time.monotonic() + 300
        while (dag := api.get(f"/dags/{DAG}")).status_code != 200:  # the DAG processor's first parse
            assert time.monotonic() < deadline, f"{DAG} was not parsed within 300 s: {dag.text}"
            time.sleep(3)
        assert api.patch(f"/dags/{DAG}", json={"is_paused": False}).status_code == 200
        resp = api.post(f"/dags/{DAG}/dagRuns", json={"logical_date": None, "conf": CONF})
        assert resp.status_code == 200, resp.text
        run_id = resp.json()["dag_run_id"]
    started = time.monotonic()
    while True:
        try:
            with stack.api() as api:  # a fresh token each round: the run may outlast one
                run = api.get(f"/dags/{DAG}/dagRuns/{run_id}").json()
                if run["state"] in ("success", "failed") or time.monotonic() - started > RUN_TIMEOUT:
                    return finished_run(api, run, time.monotonic() - started)
        except httpx.TransportError:  # the published port lost its rules (see Stack.reload_network)
            assert time.monotonic() - started < RUN_TIMEOUT + 600, "the api-server stopped answering"
            stack.reload_network()
            continue
        time.sleep(10)


def finished_run(api: httpx.Client, run: dict, duration: float) -> dict:
    """The run's task states and, if it succeeded, the registry's decision; each failed task's log printed."""
    run_id = run["dag_run_id"]
    tis = api.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances", params={"limit": 100}).json()["task_instances"]
    states = {ti["task_id"]: ti["state"] for ti in tis}
    print(f"run {run_id}: {run['state']} after {duration:.0f} s; tasks {states}")
    for ti in tis:
        if ti["state"] in ("failed", "up_for_retry") or (run["state"] != "success" and ti["state"] in ("running", "queued")):
            print(f"===== {ti['task_id']} ({ti['state']}, try {ti['try_number']}) =====")
            print(task_log(api, run_id, ti)[-12000:])
    decision = None
    if run["state"] == "success":
        xcom = api.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/promotion_decision/xcomEntries/return_value")
        assert xcom.status_code == 200, xcom.text
        decision = xcom.json()["value"]
        decision = json.loads(decision) if isinstance(decision, str) else decision
    return {"run": run, "states": states, "duration": duration, "decision": decision}


def test_the_two_ignite_nodes_form_one_cluster(stack: Stack):
    for service in ("ignite", "ignite-2"):
        log = podman("logs", container(service)).stdout
        assert "servers=2" in log, f"{service} never saw both nodes:\n{log[-3000:]}"


def test_kiln_training_triggered_through_the_rest_api_succeeds(stack: Stack, training_run: dict):
    run, states = training_run["run"], training_run["states"]
    summary = {"up_and_healthy_s": round(stack.healthy_after), "run_id": run["dag_run_id"], "run_state": run["state"],
               "run_s": round(training_run["duration"]), "conf": CONF}
    print(summary)
    (ARTIFACTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    assert run["state"] == "success", states
    assert states["train_spark_lr"] == "success" and states["register"] == "success", states
    assert states["warm_feature_cache"] == "success", states  # the first champion of this fresh stack: warmed
    decision = training_run["decision"]
    assert decision["promoted"] and decision["champion_changed"] and decision["champion"] == decision["version"], decision


def test_the_serving_container_predicts_with_the_new_champion(stack: Stack, training_run: dict):
    assert training_run["run"]["state"] == "success", "the training run failed (see the test above)"
    decision = training_run["decision"]
    # Entities the champion's features (what warm_feature_cache loaded into Ignite) hold.
    read = podman("exec", container("airflow-scheduler"), "python", "-c",
                  "import json, sys, pyarrow.parquet as pq; "
                  "ids = pq.read_table(sys.argv[1], columns=['entity_id']).column('entity_id').to_pylist(); "
                  "print(json.dumps(sorted(set(ids))[:5]))", decision["champion_features"])
    entity_ids = json.loads(read.stdout)
    assert entity_ids, decision["champion_features"]
    # The service reloads the champion in the background: give it a little while after the run.
    deadline = time.monotonic() + 180
    while True:
        resp = stack.request("POST", f"{stack.serving_url}/datasets/transactions/predict", deadline,
                             json={"entity_ids": entity_ids})
        body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text
        if resp.status_code == 200 and isinstance(body, dict) and len(body["predictions"]) == len(entity_ids) and all(
                p["model_version"] == decision["champion"] for p in body["predictions"]):
            break
        assert time.monotonic() < deadline, f"serving answered {resp.status_code}: {body}"
        time.sleep(3)
    print(json.dumps(body["predictions"][:2]))
    assert body["unknown"] == []
    for prediction, entity in zip(body["predictions"], entity_ids, strict=True):
        assert prediction["entity_id"] == entity and 0.0 <= prediction["score"] <= 1.0
        assert prediction["dataset"] == "transactions" and prediction["model"] == "spark_lr"
    health = stack.request("GET", f"{stack.serving_url}/healthz", time.monotonic() + 300)
    assert health.status_code == 200 and health.json()["model_version"] == decision["champion"], health.text
