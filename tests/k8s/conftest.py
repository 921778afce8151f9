"""A real Kubernetes control plane for tests/k8s (scripts/k8s.sh on its own ports, stopped when these tests
are done), Kiln's prod overlay applied to it, and the Airflow worker's ServiceAccount as the identity the
operators run with."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pendulum
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PORTS = {"KILN_K8S_API_PORT": 6543, "KILN_K8S_ETCD_PORT": 2479, "KILN_K8S_CONTROLLER_PORT": 10357,
         "KILN_K8S_SCHEDULER_PORT": 10359, "KILN_K8S_KUBELET_PORT": 10350}
NAMESPACE = "kiln"  # the prod overlay's


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Cluster:
    state: Path
    kubeconfig: Path = field(init=False)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KILN_K8S_DIR": str(self.state), "KILN_K8S_NODE": "kwok",
                **{k: str(v) for k, v in PORTS.items()}}

    def script(self, action: str, timeout: int = 900) -> subprocess.CompletedProcess:
        return subprocess.run([str(ROOT / "scripts" / "k8s.sh"), action], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], capture_output=True,
                             text=True, input=input, timeout=120)
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr}")
        return out

    def objects(self, kind: str, namespace: str = NAMESPACE, selector: str | None = None) -> list[dict]:
        args = ["get", kind, "-n", namespace, "-o", "json", *(["-l", selector] if selector else [])]
        return json.loads(self.kubectl(*args).stdout)["items"]

    def pids(self) -> list[int]:
        run = self.state / "run"
        return [int(p.read_text()) for p in run.glob("*.pid")] if run.exists() else []

    def service_account_kubeconfig(self, name: str, namespace: str, path: Path) -> Path:
        """A kubeconfig that authenticates as a ServiceAccount (a real token from the TokenRequest API)."""
        token = self.kubectl("create", "token", name, "-n", namespace, "--duration", "2h").stdout.strip()
        admin = yaml.safe_load(self.kubeconfig.read_text())
        cluster = admin["clusters"][0]["cluster"]
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [{"name": "kiln", "cluster": cluster}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "kiln", "user": name, "namespace": namespace}}],
        }))
        return path


def wait_until(condition, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what} not reached within {timeout} s")


@pytest.fixture(scope="package")
def cluster(tmp_path_factory) -> Cluster:
    """etcd, kube-apiserver, controller manager, scheduler and kwok; everything stopped at the end."""
    busy = [p for p in PORTS.values() if port_open(p)]
    assert not busy, f"ports {busy} are taken: a control plane of an earlier run is still up?"
    kube = Cluster(tmp_path_factory.mktemp("k8s"))
    out = kube.script("up")
    assert out.returncode == 0, out.stdout + out.stderr
    kube.kubeconfig = Path(out.stdout.strip().splitlines()[-1])
    try:
        yield kube
    finally:
        pids = kube.pids()
        down = kube.script("down", timeout=120)
        assert down.returncode == 0, down.stderr
        left = [p for p in pids if Path(f"/proc/{p}").exists()]
        assert not left, f"control-plane processes left behind: {left}"
        assert not [p for p in PORTS.values() if port_open(p)], "a control-plane port is still open"


def storage_for(kube: Cluster, namespace: str) -> None:
    """What a cluster's storage provisioner would do: a volume bound to the artifact claim (kwok runs
    nothing, so a hostPath under the test's folder is never written)."""
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{namespace}-data"},
        "spec": {"capacity": {"storage": "50Gi"}, "accessModes": ["ReadWriteMany"],
                 "hostPath": {"path": str(kube.state / "volumes" / namespace)},
                 "claimRef": {"namespace": namespace, "name": "kiln-data"}}}))


@pytest.fixture(scope="package")
def prod(cluster: Cluster) -> Cluster:
    """``kubectl apply -k k8s/overlays/prod`` (no extra flags): namespace kiln, RBAC, Ignite, serving."""
    storage_for(cluster, NAMESPACE)  # first: the claim binds the moment it exists
    out = cluster.kubectl("apply", "-k", str(ROOT / "k8s" / "overlays" / "prod"), check=False)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: cluster.kubectl("-n", NAMESPACE, "get", "serviceaccount", "default", check=False).returncode == 0,
               what="the namespace's default ServiceAccount")
    return cluster


@pytest.fixture(scope="package")
def worker_connection(prod: Cluster, tmp_path_factory) -> str:
    """Airflow's ``kubernetes_default`` as the airflow-worker ServiceAccount: the operators get only its rights."""
    kubeconfig = prod.service_account_kubeconfig("airflow-worker", NAMESPACE,
                                                 tmp_path_factory.mktemp("sa") / "airflow-worker.kubeconfig")
    return json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig),
                                                            "namespace": NAMESPACE}})


@pytest.fixture
def as_airflow_worker(worker_connection, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", worker_connection)
    monkeypatch.setenv("KILN_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("KILN_POD_LOGS", "false")  # kwok keeps no log: a follow would hang or fail


class TaskInstance:
    """The parts of Airflow's task instance the pod operators read (labels, XCom of the pod's name)."""

    def __init__(self, task_id: str, run_id: str, try_number: int = 1, dag_id: str = "kiln_training"):
        self.dag_id, self.task_id, self.run_id, self.try_number = dag_id, task_id, run_id, try_number
        self.map_index = -1
        self.start_date = pendulum.now("UTC")
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def task_context(task_id: str, run_id: str, try_number: int = 1) -> dict[str, Any]:
    class Dag:
        dag_id = "kiln_training"

    return {"ti": TaskInstance(task_id, run_id, try_number), "run_id": run_id, "dag": Dag()}


class PodEvents:
    """Every pod event in a namespace while it runs, seen by a watch as the admin (an independent observer)."""

    def __init__(self, kubeconfig: Path, namespace: str = NAMESPACE):
        import threading

        from kubernetes import client, config, watch

        self._api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
        self._watch = watch.Watch()
        self.events: list[tuple[str, Any]] = []  # (ADDED|MODIFIED|DELETED, V1Pod)
        self.received: list[float] = []  # when each event arrived (time.monotonic)
        self._namespace = namespace
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from urllib3.exceptions import ProtocolError

        try:
            for event in self._watch.stream(self._api.list_namespaced_pod, self._namespace, timeout_seconds=600):
                self.received.append(time.monotonic())
                self.events.append((event["type"], event["object"]))
        except ProtocolError:  # stop() closed the stream
            pass

    def __enter__(self) -> PodEvents:
        self._thread.start()
        time.sleep(0.5)  # the watch is established before anything is created
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)  # the last events (DELETED) arrive
        self._watch.stop()

    def of(self, name: str) -> list[tuple[str, Any]]:
        return [(kind, pod) for kind, pod in self.events if pod.metadata.name == name]

    def first_seen(self, name: str, condition: Any = lambda pod: True) -> float:
        """When the first event of pod ``name`` satisfying ``condition`` arrived (time.monotonic)."""
        timed = zip(self.received, self.events, strict=False)  # the watch may be between its two appends
        return next(t for t, (_, pod) in timed if pod.metadata.name == name and condition(pod))

    def names(self, prefix: str = "") -> list[str]:
        return [n for n in dict.fromkeys(pod.metadata.name for _, pod in self.events) if n.startswith(prefix)]

    def phases(self, name: str) -> list[str]:
        return list(dict.fromkeys(pod.status.phase for _, pod in self.of(name) if pod.status and pod.status.phase))

    def deleted(self, name: str) -> bool:
        return any(kind == "DELETED" for kind, _ in self.of(name))


@pytest.fixture
def kwok_outcome(monkeypatch):
    """Tell kwok how a pod's container ends (it runs none): Airflow's pod mutation hook, the cluster
    policy every KubernetesPodOperator pod and every MXNet role pod goes through, annotates it."""
    outcomes: dict[str, dict[str, str]] = {}

    def annotate(pod) -> None:
        stage = (pod.metadata.labels or {}).get("kiln.io/stage") or (pod.metadata.labels or {}).get("kiln.io/mxnet-role")
        if stage in outcomes:
            pod.metadata.annotations = {**(pod.metadata.annotations or {}), **outcomes[stage]}

    monkeypatch.setattr("airflow.providers.cncf.kubernetes.operators.pod.pod_mutation_hook", annotate)
    monkeypatch.setattr("kiln.hooks.kubernetes.pod_mutation_hook", annotate)

    def set_outcome(stage: str, exit_code: int = 0, message: str = "", run_seconds: float | None = None) -> None:
        outcomes[stage] = {"kwok.kiln.dev/exit-code": str(exit_code), "kwok.kiln.dev/message": message,
                           **({"kwok.kiln.dev/run-duration": f"{run_seconds}s"} if run_seconds else {})}

    return set_outcome
