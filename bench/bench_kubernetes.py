"""Kiln with Kubernetes on the real node vs the same work as local processes, measured in one run.

A cluster of its own (scripts/k8s.sh, KILN_K8S_NODE=real, bench ports; k8s/overlays/node applied), then:

- pod overhead per stage: ``ingest`` and ``validate`` as local processes and as pods (KilnPodOperator), three
  times each; creation -> container started and creation -> pod done, beside the local process's wall time.
  Goal: at most 3 s from creation to the container's start, with the image present on the node;
- ``kiln_training`` (``airflow dags test``, same conf) with KILN_EXECUTION=kubernetes on the node vs local
  processes (Spark Connect on loopback, as ``make demo``). Goal: the node's run within 1.5x of the local one;
- MXNet dist_sync: the ``mxnet_dist`` candidate's training throughput in those two runs (pods over the pod network
  vs local processes);
- serving: the same requests through the ``kiln-serving`` Service (kube-proxy) vs the same server as a local
  process on loopback, both reading the node run's registry and Ignite.

Results: bench/results/kubernetes/ (results.md, results.json).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins"))

from bench.results import Results  # noqa: E402
from ml_tasks.core.layout import CandidateFiles  # noqa: E402
from tests.node.conftest import SMALL_NODE_PRESETS, artifact_folder, node_overlay  # noqa: E402

PORTS = {"KILN_K8S_API_PORT": 6843, "KILN_K8S_ETCD_PORT": 2779, "KILN_K8S_CONTROLLER_PORT": 10857,
         "KILN_K8S_SCHEDULER_PORT": 10859, "KILN_K8S_KUBELET_PORT": 10850, "KILN_K8S_NODE_KUBELET_PORT": 10950,
         "KILN_K8S_NODE_PROXY_PORT": 10956, "KILN_K8S_NODE_PROXY_METRICS_PORT": 10949}
NAMESPACE = "kiln"
DS = "2026-12-03"
CONF = {"rows": 5000, "candidates": ["spark_lr", "mxnet_mlp", "mxnet_dist", "singa_mlp"], "mlp_epochs": 3}
CONNECT_PORT = 15902


class Cluster:
    def __init__(self, state: Path):
        self.state = state
        self.env = {**os.environ, "KILN_K8S_DIR": str(state), "KILN_K8S_NODE": "real", **{k: str(v) for k, v in PORTS.items()}}
        self.kubeconfig = state / "admin.kubeconfig"

    def script(self, action: str) -> None:
        subprocess.run([str(ROOT / "scripts" / "k8s.sh"), action], env=self.env, check=True, timeout=900)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], input=input, capture_output=True,
                              text=True, check=True, timeout=300).stdout

    def service_ip(self, name: str) -> str:
        return self.kubectl("get", "service", name, "-n", NAMESPACE, "-o", "jsonpath={.spec.clusterIP}")


def container_started(pod) -> bool:
    return any(s.state and (s.state.running or s.state.terminated) for s in pod.status.container_statuses or [])


def pod_done(pod) -> bool:
    from airflow.providers.cncf.kubernetes.utils.pod_manager import PodPhase

    return pod.status.phase in PodPhase.terminal_states


def deploy(kube: Cluster, data_root: Path) -> None:
    """k8s/overlays/node on the bench's data root, as tests/node deploys it, without Airflow's api-server (the bench
    reads no report)."""
    docs = [d for d in node_overlay(data_root, "kiln-bench-data") if d["metadata"]["name"] != "kiln-airflow-api-server"]
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    for what in ("statefulset/kiln-ignite", "deployment/kiln-spark-connect"):
        kube.kubectl("rollout", "status", "-n", NAMESPACE, what, "--timeout=280s")


def stage_args(stage: str, data_root: Path, run_id: str) -> list[str]:
    extra = ["--rows", "5000"] if stage == "ingest" else []
    return ["--dataset", "transactions", "--data-root", str(data_root), "--ds", "2026-12-01", "--run-id", run_id, *extra]


def pod_overhead(results: Results, kube: Cluster, data_root: Path, local_root: Path, env: dict[str, str]) -> None:
    from kiln.operators.pod import KilnPodOperator

    from tests.k8s.conftest import PodEvents, task_context, wait_until

    os.environ.update(env)
    stages = ("ingest", "validate")  # validate reads the run's ingested input: same run id
    local: dict[str, list[float]] = {stage: [] for stage in stages}
    started: dict[str, list[float]] = {stage: [] for stage in stages}
    done: dict[str, list[float]] = {stage: [] for stage in stages}
    with PodEvents(kube.kubeconfig, NAMESPACE) as events:
        for attempt in range(3):
            run_id = f"bench-{attempt}"
            for stage in stages:
                begin = time.monotonic()
                subprocess.run([sys.executable, "-m", "ml_tasks", stage, *stage_args(stage, local_root, run_id)],
                               check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")})
                local[stage].append(time.monotonic() - begin)
                op = KilnPodOperator(task_id=stage, stage=stage, data_mount=str(data_root), get_logs=False,
                                     stage_arguments=stage_args(stage, data_root, run_id))
                op.execute(task_context(stage, run_id))
                name = events.names(f"kiln-{stage}-")[-1]
                wait_until(lambda name=name: events.deleted(name), timeout=30, what=f"the watch's last event of {name}")
                added = events.first_seen(name)
                started[stage].append(events.first_seen(name, container_started) - added)
                done[stage].append(events.first_seen(name, pod_done) - added)
    for stage in stages:
        results.add("pod overhead", f"{stage}: creation to container start", statistics.median(started[stage]), "s",
                    baseline="the image present on the node", goal=("<=", 3.0))
        results.add("pod overhead", f"{stage}: creation to pod done, minus the local process",
                    statistics.median(done[stage]) - statistics.median(local[stage]), "s",
                    baseline=f"the same stage as a local process: {statistics.median(local[stage]):.1f} s")


def dag_run(data_root: Path, env: dict[str, str]) -> float:
    begin = time.monotonic()
    out = subprocess.run(["airflow", "dags", "test", "kiln_training", DS, "-c", json.dumps(CONF)], capture_output=True,
                         text=True, timeout=3600, env={**os.environ, "KILN_DATA_ROOT": str(data_root), **env})
    if out.returncode != 0:
        raise SystemExit(f"kiln_training failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return time.monotonic() - begin


def mxnet_dist_throughput(data_root: Path) -> float:
    (run,) = (data_root / "transactions" / "runs" / f"ds={DS}").glob("run=*")
    return json.loads(CandidateFiles(run / "candidates" / "mxnet_dist").info.read_text())["samples_per_s"]


def serving_load(url: str, entities: list[str], seconds: float = 15.0) -> tuple[float, float]:
    """Requests per second and median latency (ms) of one client, batches of 5 entities."""
    latencies = []
    with httpx.Client(base_url=url, timeout=10) as http:
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            batch = entities[i % (len(entities) - 5):][:5]
            begin = time.monotonic()
            response = http.post("/datasets/transactions/predict", json={"entity_ids": batch})
            latencies.append(time.monotonic() - begin)
            response.raise_for_status()
            i += 5
    return len(latencies) / sum(latencies), statistics.median(latencies) * 1000


def main() -> None:
    results = Results(ROOT / "bench" / "results" / "kubernetes", quick=False)
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-k8s-"))
    kube = Cluster(work / "cluster")
    node_data, local_data = work / "node-data", work / "local-data"
    for folder in (node_data, local_data):
        folder.mkdir()
    artifact_folder(node_data)
    kube.script("up")
    connect = {**os.environ, "KILN_SPARK_CONNECT_PORT": str(CONNECT_PORT), "KILN_SPARK_CONNECT_UI_PORT": "4945",
               "KILN_SPARK_CONNECT_DIR": str(work / "connect")}
    serving = None
    try:
        deploy(kube, node_data)
        node_env = {"KILN_EXECUTION": "kubernetes", "KILN_NAMESPACE": NAMESPACE, "KILN_POD_PRESETS": json.dumps(SMALL_NODE_PRESETS),
                    "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps({"conn_type": "kubernetes", "extra": {
                        "kube_config_path": str(kube.kubeconfig), "namespace": NAMESPACE}}),
                    "AIRFLOW_CONN_SPARK_DEFAULT": "sc://kiln-spark-connect.kiln.svc:15002",
                    "AIRFLOW_CONN_IGNITE_DEFAULT": f"ignite://{kube.service_ip('kiln-ignite')}:10800"}
        pod_overhead(results, kube, node_data, work / "local-stages", node_env)

        subprocess.run([str(ROOT / "scripts" / "spark_connect.sh"), "up"], env=connect, check=True, timeout=300)
        local_env = {"KILN_EXECUTION": "local", "AIRFLOW_CONN_SPARK_DEFAULT": f"sc://127.0.0.1:{CONNECT_PORT}",
                     "AIRFLOW_CONN_IGNITE_DEFAULT": node_env["AIRFLOW_CONN_IGNITE_DEFAULT"]}
        local_seconds = dag_run(local_data, local_env)
        subprocess.run([str(ROOT / "scripts" / "spark_connect.sh"), "down"], env=connect, check=True, timeout=120)
        node_seconds = dag_run(node_data, node_env)
        results.add("kiln_training", "run on the real node", node_seconds, "s",
                    baseline=f"local processes: {local_seconds:.0f} s")
        results.add("kiln_training", "node run / local run", node_seconds / local_seconds, "x", goal=("<=", 1.5))
        local_mx, node_mx = mxnet_dist_throughput(local_data), mxnet_dist_throughput(node_data)
        results.add("mxnet dist_sync", "samples/s, roles as pods", node_mx, "samples/s",
                    baseline=f"local processes: {local_mx:,.0f} samples/s")
        results.add("mxnet dist_sync", "pods / local processes", node_mx / local_mx, "x")

        state = json.loads((node_data / "registry" / "transactions" / "registry.json").read_text())
        version = node_data / "registry" / "transactions" / state["versions"][DS]["path"]
        entities = pd.read_parquet(version / "online_features.parquet", columns=["entity_id"]).entity_id.head(500).tolist()
        service = f"http://{kube.service_ip('kiln-serving')}"
        kube.kubectl("rollout", "status", "-n", NAMESPACE, "deployment/kiln-serving", "--timeout=200s")
        ignite = node_env["AIRFLOW_CONN_IGNITE_DEFAULT"].removeprefix("ignite://").split(":")
        serving = subprocess.Popen([sys.executable, "-m", "ml_tasks", "serve", "--host", "127.0.0.1", "--port", "8977",
                                    "--data-root", str(node_data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env={**os.environ, "KILN_IGNITE_HOST": ignite[0], "KILN_IGNITE_PORT": ignite[1]})
        for _ in range(120):
            try:
                if httpx.get("http://127.0.0.1:8977/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        local_rps, local_ms = serving_load("http://127.0.0.1:8977", entities)
        service_rps, service_ms = serving_load(service, entities)
        results.add("serving", "requests/s through the Service", service_rps, "req/s",
                    baseline=f"the same server on loopback: {local_rps:.0f} req/s")
        results.add("serving", "median latency through the Service", service_ms, "ms",
                    baseline=f"loopback: {local_ms:.1f} ms")
    finally:
        if serving is not None:
            serving.terminate()
            serving.wait(timeout=30)
        subprocess.run([str(ROOT / "scripts" / "spark_connect.sh"), "down"], env=connect, timeout=120)
        kube.script("down")
        shutil.rmtree(work, ignore_errors=True)
        results.finish()


if __name__ == "__main__":
    main()
