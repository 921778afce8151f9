"""Kiln's pods on a real node: the stage's container really runs in Kiln's image and writes the artifact volume,
a pod over its memory limit is reported as OOM-killed, Services route and the cluster DNS names them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException

from tests.k8s.conftest import PodEvents, task_context, wait_until
from tests.node.conftest import POD_NAMESPACE as NAMESPACE
from tests.node.conftest import image

pytestmark = [pytest.mark.kubernetes, pytest.mark.real_node, pytest.mark.slow]
# The client pod: kube-proxy programs a new Service's rules within a second or two of its endpoint, so it retries.
CLIENT = """
import time, urllib.request
for attempt in range(30):
    try:
        print(urllib.request.urlopen("http://kiln-echo.kiln-pods.svc.cluster.local/transactions.yaml", timeout=5).read().decode())
        break
    except OSError as exc:
        print("not yet:", exc)
        time.sleep(1)
"""
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
    with PodEvents(kube.kubeconfig, NAMESPACE) as pods:
        op.execute(task_context("ingest", RUN_ID))
        [name] = pods.names("kiln-ingest-")
        wait_until(lambda: pods.deleted(name), timeout=30, what=f"the watch's last event of {name}")
    # A container that starts and ends between two of the kubelet's status syncs takes its pod from Pending to
    # Succeeded directly: its terminated state, not a Running phase, says that it ran.
    assert pods.phases(name)[-1] == "Succeeded"
    live = pods.of(name)[-1][1]
    (ended,) = [s.state.terminated for s in live.status.container_statuses if s.name == "base"]
    assert ended.exit_code == 0 and ended.started_at is not None
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
    with PodEvents(kube.kubeconfig, NAMESPACE) as pods, pytest.raises(AirflowException) as failure:
        op.execute(task_context("ingest", RUN_ID))
    assert type(failure.value) is AirflowException  # not AirflowFailException: Airflow retries it
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
                                           "command": ["python", "-c", CLIENT]}]}}
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


def test_a_stage_pod_killed_mid_run_is_retried_and_gives_the_undisturbed_result(on_the_node):
    """The stage's process killed (SIGKILL, as the OOM killer or a node's pressure would) while it writes: the try
    fails, nothing half-written is left, and the retry's partition equals that of a run nobody disturbed."""
    import subprocess
    import threading

    import pandas as pd

    kube, data_root = on_the_node
    raw = data_root / "transactions" / "raw" / f"ds={DS}"

    def partition() -> pd.DataFrame:
        return pd.read_parquet(raw).sort_values("entity_id", kind="stable").reset_index(drop=True)

    undisturbed, _ = stage_pod("ingest", data_root, "--rows", "1000000")
    undisturbed.execute(task_context("ingest", RUN_ID))
    expected = partition()
    subprocess.run(["rm", "-rf", str(raw)], check=True)

    killed_try, _ = stage_pod("ingest", data_root, "--rows", "1000000")
    failure: list[BaseException] = []

    def run() -> None:
        try:
            killed_try.execute(task_context("ingest", RUN_ID, try_number=1))
        except BaseException as exc:  # noqa: BLE001 (what the try saw)
            failure.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    pattern = f"ml_tasks ingest .*--ds {DS} .*--rows 1000000"
    # mid-write: the try's hidden temporary partition exists (it is being written)
    wait_until(lambda: any(".tmp-" in p.name for p in raw.parent.iterdir()) if raw.parent.exists() else False,
               timeout=120, what="the try writing its partition")
    killed = subprocess.run(["pkill", "-9", "-f", pattern])
    assert killed.returncode == 0, "the stage's process was gone before the kill"
    runner.join(timeout=120)
    assert failure and type(failure[0]) is AirflowException and "exit code 137" in str(failure[0]), failure  # retryable
    # Nothing half-written is visible: no partition, or (killed after its atomic promotion) the whole one. What the
    # killed writer was writing stays in its hidden temporary, which the next writer removes.
    if raw.exists():
        pd.testing.assert_frame_equal(partition(), expected)

    retry, result = stage_pod("ingest", data_root, "--rows", "1000000")
    retry.execute(task_context("ingest", RUN_ID, try_number=2))
    pd.testing.assert_frame_equal(partition(), expected)
    assert json.loads(result.read_text())["rows"] == 1000000
    assert not [p.name for p in raw.parent.iterdir() if ".tmp-" in p.name], "the killed try's temporary is still there"


def test_an_mxnet_worker_pod_deleted_mid_training_fails_the_task_naming_it_and_leaves_no_role(on_the_node, monkeypatch):
    from kiln.operators.mxnet import MXNetDistributedOperator

    from bench.common import write_features
    from ml_tasks.core.layout import Layout

    kube, data_root = on_the_node
    monkeypatch.setenv("KILN_POD_PRESETS", json.dumps({"medium": {"requests": {"cpu": "200m", "memory": "512Mi"}}}))
    write_features(Layout(data_root, "transactions", "2026-12-04", run_id="mx-fault"), rows=60_000)
    for path in [data_root / "transactions", *(data_root / "transactions").rglob("*")]:
        os.chown(path, 50000, 0)  # written here as root; the roles run as the image's user
    op = MXNetDistributedOperator(
        task_id="train_mxnet_dist", execution="kubernetes", num_servers=1, num_workers=2,
        worker_args=["--dataset", "transactions", "--data-root", str(data_root), "--ds", "2026-12-04", "--run-id", "mx-fault",
                     "--candidate", "mxnet_dist", "--mlp-epochs", "40"],
        result_path=str(data_root / "mx-result.json"), checkpoint_dir=str(data_root / "mx-ckpt"), cluster_timeout=300)
    name, labels = op.job_identity("kiln_training", "train_mxnet_dist", RUN_ID, 1)
    victim = f"{name}-worker-1"
    failure: list[BaseException] = []

    def run() -> None:
        try:
            op.run_on_kubernetes(task_context("train_mxnet_dist", RUN_ID))
        except BaseException as exc:  # noqa: BLE001 (what the task saw)
            failure.append(exc)

    import threading

    runner = threading.Thread(target=run)
    runner.start()
    # training: the worker's process is past its imports and the data (its log says it trains)
    wait_until(lambda: " epoch 1/" in kube.kubectl("logs", "-n", NAMESPACE, victim, check=False).stdout, timeout=240,
               what="the worker training")
    kube.kubectl("delete", "pod", "-n", NAMESPACE, victim, "--grace-period=0", "--force")
    runner.join(timeout=180)
    assert not runner.is_alive() and failure, "the task did not end"
    assert victim in str(failure[0]), failure[0]
    left = [o["metadata"]["name"] for kind in ("pods", "services")
            for o in kube.objects(kind, namespace=NAMESPACE, selector=f"kiln.io/mxnet-run={labels['kiln.io/mxnet-run']}")]
    assert left == []
