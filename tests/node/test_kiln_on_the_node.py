"""Kiln deployed on the real node (k8s/overlays/node: Ignite's StatefulSet, the Spark Connect server, serving)
and kiln_training run with KILN_EXECUTION=kubernetes: every stage a pod that really executes, Spark stages
attached to the in-cluster Connect server, the MXNet parameter-server roles as pods training over the pod
network, Singa in Kiln's image; then the Ignite StatefulSet is warmed and the serving Deployment answers
through its Service, reading the registry at its own mount path (/data) while the stages wrote it at theirs; and
Airflow's api-server in a pod (the overlay's) shows the run's Report tab from the artifact volume."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from ml_tasks.core.layout import CandidateFiles, Layout
from tests.e2e.helpers import dags_test
from tests.k8s.conftest import PodEvents, wait_until
from tests.node.conftest import NAMESPACE, SMALL_NODE_PRESETS, RealNode, artifact_folder, node_overlay

pytestmark = [pytest.mark.kubernetes, pytest.mark.real_node, pytest.mark.slow]
DS = "2026-12-02"
CANDIDATES = ["spark_lr", "mxnet_dist", "singa_mlp"]


def service_ip(kube: RealNode, name: str) -> str:
    return kube.kubectl("get", "service", name, "-n", NAMESPACE, "-o", "jsonpath={.spec.clusterIP}").stdout


@pytest.fixture(scope="module")
def admin_password() -> str:
    """The password of the in-cluster api-server's admin (its Secret is created with the overlay)."""
    return secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def deployed(node_cluster: RealNode, admin_password: str, tmp_path_factory) -> tuple[RealNode, Path]:
    kube = node_cluster
    data_root = artifact_folder(tmp_path_factory.mktemp("e2e") / "data")
    users = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kiln-airflow-api-server", "namespace": NAMESPACE},
             "stringData": {"passwords.json": json.dumps({"admin": admin_password}), "jwt-secret": secrets.token_hex(32)}}
    docs = node_overlay(data_root, "kiln-e2e-data")
    after_namespace = next(i for i, doc in enumerate(docs) if doc["kind"] == "Namespace") + 1
    docs.insert(after_namespace, users)  # before the Deployment that mounts it, as docs/kubernetes.md says
    out = kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), check=False)
    assert out.returncode == 0, out.stderr
    # Serving becomes ready only with a champion in Ignite (its readiness probe); it is checked after the run.
    for what in ("statefulset/kiln-ignite", "deployment/kiln-spark-connect"):
        out = kube.kubectl("rollout", "status", "-n", NAMESPACE, what, "--timeout=110s", check=False)
        assert out.returncode == 0, f"{what} not ready: {out.stderr}\n" + kube.kubectl(
            "describe", "pods", "-n", NAMESPACE, check=False).stdout[-4000:]
    return kube, data_root


@pytest.fixture(scope="module")
def training_run(deployed, tmp_path_factory):
    kube, data_root = deployed
    env = {"KILN_EXECUTION": "kubernetes", "KILN_NAMESPACE": NAMESPACE, "KILN_POD_PRESETS": json.dumps(SMALL_NODE_PRESETS),
           "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps({"conn_type": "kubernetes", "extra": {
               "kube_config_path": str(kube.kubeconfig), "namespace": NAMESPACE}}),
           "AIRFLOW_CONN_SPARK_DEFAULT": "sc://kiln-spark-connect.kiln.svc:15002",  # resolved by the pods' DNS
           "AIRFLOW_CONN_IGNITE_DEFAULT": f"ignite://{service_ip(kube, 'kiln-ignite')}:10800"}  # via kube-proxy
    started = time.monotonic()
    with PodEvents(kube.kubeconfig) as pods:
        out = dags_test("kiln_training", DS, data_root, {"rows": 3000, "candidates": CANDIDATES, "mlp_epochs": 3},
                        timeout=1800, env=env)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-6000:]
    return kube, data_root, pods, out.stdout + out.stderr, time.monotonic() - started


def test_every_stage_of_kiln_training_ran_as_a_pod_on_the_node(training_run):
    kube, data_root, pods, log, seconds = training_run
    names = [n for n in pods.names() if {"kiln.io/stage", "kiln.io/mxnet-role"} & set(pods.of(n)[-1][1].metadata.labels)]
    ran = {pods.of(n)[-1][1].metadata.labels.get("kiln.io/stage") for n in names} - {None}
    assert {"ingest", "validate", "preprocess", "train-spark", "train-singa", "evaluate", "register",
            "online-features", "report"} <= ran, sorted(ran)
    for name in names:  # each container really ran on the node and ended (a quick one may never be seen Running)
        final = pods.of(name)[-1][1]
        terminated = [c.state.terminated for c in final.status.container_statuses or [] if c.state.terminated]
        assert terminated and terminated[0].started_at and pods.deleted(name), (name, pods.phases(name))
        assert final.spec.node_name == "kiln-node-0" and final.status.pod_ip.startswith("198.18.64.")
    assert "singa epoch 3/3 loss=" in log and "Apache Singa is not installed" not in log
    print(f"kiln_training on the real node: {seconds:.0f} s, {len(names)} pods")


def test_the_mxnet_roles_ran_as_pods_and_trained_over_the_pod_network(training_run):
    kube, data_root, pods, log, _ = training_run
    roles = [n for n in pods.names() if pods.of(n)[-1][1].metadata.labels.get("kiln.io/mxnet-role")]
    kinds = {pods.of(n)[-1][1].metadata.labels["kiln.io/mxnet-role"] for n in roles}
    assert kinds == {"scheduler", "server", "worker"}, roles
    ips = {pods.of(n)[-1][1].status.pod_ip for n in roles} - {None}
    assert ips and all(ip.startswith("198.18.64.") for ip in ips)
    assert all(pods.deleted(n) for n in roles)  # no role left behind
    (run,) = (data_root / "transactions" / "runs" / f"ds={DS}").glob("run=*")
    info = json.loads(CandidateFiles(run / "candidates" / "mxnet_dist").info.read_text())
    assert info["framework"] == "mxnet" and info["test_auc"] > 0.6


def test_the_ignite_statefulset_is_warmed_and_serving_answers_through_its_service(training_run):
    kube, data_root, _, _, _ = training_run
    state = json.loads((data_root / "registry" / "transactions" / "registry.json").read_text())
    assert state["champion"] == DS
    version = data_root / "registry" / "transactions" / state["versions"][DS]["path"]
    entities = pd.read_parquet(version / "online_features.parquet", columns=["entity_id"]).entity_id.head(5).tolist()
    url = f"http://{service_ip(kube, 'kiln-serving')}"  # the Service's cluster IP, routed by kube-proxy

    def answered():
        try:
            response = httpx.post(f"{url}/datasets/transactions/predict", json={"entity_ids": entities}, timeout=10)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 and response.json().get("predictions") else None

    answer = wait_until(answered, timeout=120, what="a prediction through the kiln-serving Service")
    pod = kube.objects("pods", selector="app.kubernetes.io/name=kiln-serving")[0]
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0  # alive all along, though unready until now
    assert [p["entity_id"] for p in answer["predictions"]] == entities
    assert {p["model_version"] for p in answer["predictions"]} == {DS}


def test_the_report_tab_s_route_is_served_by_airflow_s_api_server_in_the_cluster_from_the_artifact_volume(
        training_run, admin_password):
    kube, data_root, _, _, _ = training_run
    (result,) = Layout.at(data_root, "transactions", DS).result_files_of_partition("report")
    run_id = json.loads(result.read_text())["run_id"]  # the report stage's result
    out = kube.kubectl("rollout", "status", "-n", NAMESPACE, "deployment/kiln-airflow-api-server", "--timeout=100s",
                       check=False)
    assert out.returncode == 0, out.stderr + kube.kubectl("logs", "-n", NAMESPACE, "deployment/kiln-airflow-api-server",
                                                          "--all-containers", "--tail=40", check=False).stdout
    url = f"http://{service_ip(kube, 'kiln-airflow-api-server')}:8080"  # through kube-proxy, as a browser would
    token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": admin_password}, timeout=30)
    token.raise_for_status()
    tab = f"{url}/kiln/reports/kiln_training/{run_id}"  # the run page's Report tab (plugins/kiln_plugin.py)
    assert httpx.get(tab, timeout=30).status_code == 401  # not without Airflow's token
    page = httpx.get(tab, headers={"Authorization": f"Bearer {token.json()['access_token']}"}, timeout=30)
    assert page.status_code == 200, page.text
    assert DS in page.text and page.headers["content-type"].startswith("text/html")
    assert "sandbox" in page.headers["content-security-policy"]
    (report,) = Layout.reports_of(data_root, "transactions", run_id)  # what the report stage's pod wrote
    assert page.content == report.read_bytes() and report.stat().st_uid == 50000
