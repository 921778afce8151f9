"""Kiln's pods on a real node: the stage's container really runs in Kiln's image and writes the artifact volume,
a pod over its memory limit is reported as OOM-killed, Services route and the cluster DNS names them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException

from tests.k8s.conftest import PodEvents, task_context, wait_until
from tests.node.conftest import NAMESPACE, image

pytestmark = [pytest.mark.kubernetes, pytest.mark.real_node, pytest.mark.slow]
DS = "2026-12-01"
RUN_ID = "scheduled__2026-12-01T00:00:00+00:00"


@pytest.fixture
def on_the_node(node_namespace, monkeypatch):
    kube, data_root = node_namespace
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(
        {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kube.kubeconfig), "namespace": NAMESPACE}}))
    monkeypatch.setenv("KILN_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("KILN_DATA_ROOT", str(data_root))
    return kube, data_root


def stage_pod(stage: str, data_root: Path, *args: str, preset: str = "small"):
    from kiln.operators.pod import KilnPodOperator

    result = data_root / "transactions" / "runs" / f"ds={DS}" / "_results" / f"{stage}.json"
    return KilnPodOperator(task_id=stage.replace("-", "_"), stage=stage, preset=preset, data_mount=str(data_root),
                           stage_arguments=["--dataset", "transactions", "--data-root", str(data_root), "--ds", DS,
                                            "--run-id", RUN_ID, *args, "--result-file", str(result)],
                           image_pull_policy="Never", startup_timeout_seconds=120), result


def test_a_stage_pod_runs_in_kiln_s_image_and_writes_the_artifact_volume(on_the_node):
    kube, data_root = on_the_node
    op, result = stage_pod("ingest", data_root, "--rows", "2000")
    with PodEvents(kube.kubeconfig) as pods:
        op.execute(task_context("ingest", RUN_ID))
    [name] = pods.names("kiln-ingest-")
    assert pods.phases(name)[-2:] == ["Running", "Succeeded"] and pods.deleted(name)
    live = pods.of(name)[-1][1]
    assert live.spec.node_name == "kiln-node-0" and live.status.pod_ip.startswith("198.18.64.")
    written = json.loads(result.read_text())
    assert written["rows"] == 2000
    raw = data_root / "transactions" / "raw" / f"ds={DS}"
    assert any(raw.rglob("*.parquet")) and {p.stat().st_uid for p in raw.rglob("*")} == {50000}


def test_a_pod_over_its_memory_limit_is_reported_as_oom_killed(on_the_node):
    kube, data_root = on_the_node
    op, _ = stage_pod("ingest", data_root, "--rows", "100")
    # The stage's process is replaced by one that fills 1.5 GiB: the small preset allows 1 GiB.
    op.cmds = ["python", "-c", "import time; b = b'x' * (1536 << 20); time.sleep(30)"]
    op.arguments = []
    with PodEvents(kube.kubeconfig) as pods, pytest.raises(AirflowException) as failure:
        op.execute(task_context("ingest", RUN_ID))
    [name] = pods.names("kiln-ingest-")
    assert str(failure.value) == (f"stage ingest failed in pod {name} (exit code 137): OOM-killed: the container "
                                  "exceeded its memory limit (small preset: 1Gi)")
    assert pods.deleted(name)


def test_a_service_routes_to_its_pods_and_the_cluster_dns_names_it(on_the_node):
    kube, data_root = on_the_node
    labels = {"app.kubernetes.io/name": "kiln-echo"}
    security = {"runAsNonRoot": True, "runAsUser": 50000, "seccompProfile": {"type": "RuntimeDefault"}}
    container_security = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    kube.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kiln-echo"},
         "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kiln-echo", "labels": labels},
         "spec": {"securityContext": security, "automountServiceAccountToken": False, "containers": [{
             "name": "echo", "image": image(), "imagePullPolicy": "Never", "securityContext": container_security,
             "command": ["python", "-m", "http.server", "8080", "--directory", "/opt/kiln/datasets"],
             "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}]}},
    ]}))
    try:
        kube.kubectl("wait", "-n", NAMESPACE, "--for=condition=Ready", "pod/kiln-echo", "--timeout=120s")
        # From another pod: the Service's name through the cluster DNS, then kube-proxy to the pod.
        client = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kiln-echo-client"},
                  "spec": {"securityContext": security, "automountServiceAccountToken": False, "restartPolicy": "Never",
                           "containers": [{"name": "client", "image": image(), "imagePullPolicy": "Never",
                                           "securityContext": container_security,
                                           "command": ["python", "-c", "import urllib.request; print(urllib.request.urlopen("
                                                       "'http://kiln-echo.kiln.svc.cluster.local/transactions.yaml', "
                                                       "timeout=10).read().decode())"]}]}}
        kube.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(client))
        phase = wait_until(lambda: kube.kubectl("get", "-n", NAMESPACE, "pod/kiln-echo-client", "-o",
                                                "jsonpath={.status.phase}").stdout in ("Succeeded", "Failed") and
                           kube.kubectl("get", "-n", NAMESPACE, "pod/kiln-echo-client", "-o", "jsonpath={.status.phase}").stdout,
                           timeout=120, what="the client pod's end")
        log = kube.kubectl("logs", "-n", NAMESPACE, "kiln-echo-client").stdout
        assert phase == "Succeeded", log
        assert "task: binary" in log
    finally:
        kube.kubectl("delete", "-n", NAMESPACE, "pod/kiln-echo", "pod/kiln-echo-client", "service/kiln-echo",
                     "--grace-period=0", "--force", "--ignore-not-found", check=False)
