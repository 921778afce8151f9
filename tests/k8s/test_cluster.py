"""The control plane itself and Kiln's manifests against it: admission, RBAC and what controllers create."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.k8s.conftest import NAMESPACE, ROOT, storage_for, wait_until

pytestmark = [pytest.mark.kubernetes, pytest.mark.slow]  # a real control plane (scripts/k8s.sh)


def test_the_control_plane_answers_with_a_ready_kwok_node(cluster):
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert version["gitVersion"] == "v1.34.4"
    nodes = cluster.objects("nodes", namespace="default")
    assert [n["metadata"]["name"] for n in nodes] == ["kiln-kwok-node-0"]
    ready = next(c for c in nodes[0]["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    enabled = cluster.kubectl("get", "--raw", "/api/v1").stdout
    assert '"pods"' in enabled


def test_pod_security_restricted_refuses_a_pod_that_does_not_comply(prod):
    """The control: the namespace really enforces `restricted`, so Kiln's pods being admitted means something."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "no-seccomp", "namespace": NAMESPACE},
           "spec": {"containers": [{"name": "c", "image": "kiln/kiln:0.1.0",
                                    "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                                        "capabilities": {"drop": ["ALL"]}}}]}}
    out = prod.kubectl("create", "-f", "-", input=yaml.safe_dump(pod), check=False)
    assert out.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in out.stderr and "seccompProfile" in out.stderr


def pods_created(kube, namespace: str, rendered: list[dict]) -> dict[str, int]:
    """Each workload's pods its controller managed to create (Pod Security refuses non-compliant ones)."""
    counts = {}
    for obj in rendered:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            selector = ",".join(f"{k}={v}" for k, v in obj["spec"]["selector"]["matchLabels"].items())
        elif obj["kind"] == "Job":
            selector = f"batch.kubernetes.io/job-name={obj['metadata']['name']}"
        else:
            continue
        counts[obj["metadata"]["name"]] = len(kube.objects("pods", namespace, selector=selector))
    return counts


@pytest.mark.parametrize("overlay", ["prod", "dev"])
def test_every_overlay_applies_with_no_extra_flags_and_its_controllers_create_every_pod(prod, overlay):
    namespace = {"prod": NAMESPACE, "dev": "kiln-dev"}[overlay]
    storage_for(prod, namespace)
    out = prod.kubectl("apply", "-k", str(ROOT / "k8s" / "overlays" / overlay), check=False)
    assert out.returncode == 0, out.stderr
    labels = prod.objects("namespaces", namespace="default")
    ns = next(n for n in labels if n["metadata"]["name"] == namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    rendered = [o for o in yaml.safe_load_all(prod.kubectl("kustomize", str(ROOT / "k8s" / "overlays" / overlay)).stdout) if o]
    autoscaled = {o["spec"]["scaleTargetRef"]["name"]: o["spec"]["minReplicas"]
                  for o in rendered if o["kind"] == "HorizontalPodAutoscaler"}
    workloads = {o["metadata"]["name"]: autoscaled.get(o["metadata"]["name"], o["spec"].get("replicas", 1))
                 for o in rendered if o["kind"] in ("Deployment", "StatefulSet", "Job")}
    assert workloads, "the overlay has workloads"
    seen: list[dict[str, int]] = []

    def all_created() -> bool:
        seen.append(pods_created(prod, namespace, rendered))
        return seen[-1] == workloads

    try:
        wait_until(all_created, timeout=60, what=f"every workload's pods in {namespace} ({workloads})")
    finally:
        refused = [e["message"] for e in prod.objects("events", namespace) if e["reason"] == "FailedCreate"]
        assert not refused, refused
        assert seen[-1] == workloads

    # No Kiln pod calls the Kubernetes API, so none carries a token a process in it could use; each carries the
    # label Kiln's network policies select it by, and only Kiln's pods are denied by default (not Airflow's).
    pods = prod.objects("pods", namespace)
    assert [p["metadata"]["name"] for p in pods if p["spec"].get("automountServiceAccountToken") is not False] == []
    assert [v["name"] for p in pods for v in p["spec"].get("volumes", []) if v["name"].startswith("kube-api-access")] == []
    assert {p["metadata"]["labels"].get("app.kubernetes.io/part-of") for p in pods} == {"kiln"}
    deny = next(o for o in rendered if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "default-deny-ingress")
    assert deny["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/part-of": "kiln"}}


def can_i(kube, verb: str, resource: str, namespace: str = NAMESPACE) -> bool:
    resource, _, subresource = resource.partition("/")  # `can-i create pods/exec` would ask about pods
    out = kube.kubectl("auth", "can-i", verb, resource, *(["--subresource", subresource] if subresource else []),
                       "-n", namespace,
                       "--as", f"system:serviceaccount:{NAMESPACE}:airflow-worker", check=False)
    return out.stdout.strip() == "yes"


ALLOWED = [("create", "pods"), ("get", "pods"), ("list", "pods"), ("watch", "pods"), ("delete", "pods"),
           ("patch", "pods"), ("get", "pods/log"), ("create", "services"), ("get", "services"),
           ("list", "services"), ("delete", "services"), ("list", "events")]
DENIED = [("create", "pods/exec"), ("create", "pods/attach"), ("create", "pods/portforward"), ("get", "pods/exec"),
          ("update", "pods"), ("get", "secrets"), ("list", "secrets"),
          ("create", "deployments"), ("delete", "statefulsets"), ("create", "roles"), ("create", "rolebindings"),
          ("patch", "services"), ("delete", "persistentvolumeclaims"), ("create", "jobs"), ("get", "configmaps")]


def test_the_airflow_worker_account_may_do_what_the_operators_need_and_no_more(prod):
    assert [a for a in ALLOWED if not can_i(prod, *a)] == []
    assert [d for d in DENIED if can_i(prod, *d)] == []
    # Nothing outside its namespace, nothing cluster-wide.
    assert not can_i(prod, "create", "pods", namespace="default")
    assert not can_i(prod, "list", "nodes", namespace="default")
    assert not can_i(prod, "create", "namespaces", namespace="default")


def test_k8s_down_leaves_no_process_and_a_second_up_starts_clean(tmp_path):
    """A second control plane beside the session's, on its own ports: up, down, nothing left."""
    from tests.k8s.conftest import Cluster

    other = Cluster(tmp_path / "k8s")
    ports = {"KILN_K8S_API_PORT": "6643", "KILN_K8S_ETCD_PORT": "2579", "KILN_K8S_CONTROLLER_PORT": "10457",
             "KILN_K8S_SCHEDULER_PORT": "10459", "KILN_K8S_KUBELET_PORT": "10450"}

    def script(action: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(ROOT / "scripts" / "k8s.sh"), action], env={**other.env, **ports},
                              capture_output=True, text=True, timeout=300)

    up = script("up")
    assert up.returncode == 0, up.stderr
    kubeconfig = up.stdout.strip().splitlines()[-1]
    assert "export KUBECONFIG=" + kubeconfig in up.stderr
    pids = other.pids()
    assert len(pids) == 5
    assert subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "get", "ns", "default"], capture_output=True).returncode == 0
    assert script("up").returncode == 0  # already up: says so, changes nothing
    assert other.pids() == pids
    down = script("down")
    assert down.returncode == 0, down.stderr
    from pathlib import Path

    assert not [p for p in pids if Path(f"/proc/{p}").exists()]
    assert script("status").returncode == 1


@pytest.mark.parametrize("template", ["driver.yaml", "executor.yaml"])
def test_spark_pod_templates_pass_restricted_admission(prod, template):
    """What spark-submit makes of each template (it adds name, image and command), admitted server-side."""
    config = next(c for c in prod.objects("configmaps") if c["metadata"]["name"] == "kiln-spark-pod-templates")
    pod = yaml.safe_load(config["data"][template])
    pod["metadata"] = {"name": f"spark-{template.removesuffix('.yaml')}", "namespace": NAMESPACE}
    pod["spec"]["containers"][0].update(image="kiln/kiln:0.1.0", command=["/opt/spark/bin/spark-class"])
    out = prod.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod), check=False)
    assert out.returncode == 0, out.stderr
