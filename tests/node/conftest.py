"""A real Kubernetes node for tests/node: scripts/k8s.sh with KILN_K8S_NODE=real on its own ports (containerd,
kubelet, bridge CNI, kube-proxy, CoreDNS; Kiln's image imported), and a check, when these tests are done, that
the machine is as it was before: no process, mount, network namespace, interface, iptables chain or kernel
setting of the node is left."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s.conftest import ROOT, Cluster, port_open, wait_until

PORTS = {"KILN_K8S_API_PORT": 6743, "KILN_K8S_ETCD_PORT": 2679, "KILN_K8S_CONTROLLER_PORT": 10657,
         "KILN_K8S_SCHEDULER_PORT": 10659, "KILN_K8S_KUBELET_PORT": 10650, "KILN_K8S_NODE_KUBELET_PORT": 10750,
         "KILN_K8S_NODE_PROXY_PORT": 10756, "KILN_K8S_NODE_PROXY_METRICS_PORT": 10749}
NAMESPACE = "kiln"      # the overlays' (test_kiln_on_the_node.py deploys k8s/overlays/node there)
POD_NAMESPACE = "kiln-pods"  # the single-pod tests' own, with an artifact claim of its own
SYSCTLS = ["vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops", "net.ipv4.ip_forward",
           "net.ipv4.conf.all.route_localnet", "net.bridge.bridge-nf-call-iptables", "net.netfilter.nf_conntrack_max",
           "net.netfilter.nf_conntrack_tcp_timeout_established", "net.netfilter.nf_conntrack_tcp_timeout_close_wait"]


class RealNode(Cluster):
    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KILN_K8S_DIR": str(self.state), "KILN_K8S_NODE": "real",
                **{k: str(v) for k, v in PORTS.items()}}


def image() -> str:
    return subprocess.run([str(ROOT / "scripts" / "images.sh"), "--print-tag", "kiln"], capture_output=True,
                          text=True, check=True).stdout.strip()


def machine_state() -> dict[str, object]:
    """What a node's teardown must give back, read from the kernel: the node's interfaces, its pods' network
    namespaces, the iptables chains of the kubelet and kube-proxy, kernel settings, mounts, cgroups, processes.
    (Other tools' own state, e.g. podman's networks, is not the node's and may come and go meanwhile.)"""
    def lines(*cmd: str) -> list[str]:
        return sorted(subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines())

    return {
        "links": [line for line in lines("ip", "-o", "link") if "kiln" in line],
        "addresses": [line for line in lines("ip", "-o", "-4", "addr") if " 198.18.0.1/" in line or " 198.18.64." in line],
        "netns": [ns for ns in (line.split()[0] for line in lines("ip", "netns", "list")) if ns.startswith("cni-")],
        "chains": [line.split()[0] for cmd in ("iptables-save", "ip6tables-save") for line in lines(cmd)
                   if re.match(r"^:KUBE-", line)],
        "sysctls": {s: subprocess.run(["sysctl", "-n", s], capture_output=True, text=True).stdout.strip() for s in SYSCTLS},
        "mounts": [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
                   if "kubelet" in line or "kiln-containerd" in line or "/cni-" in line],
        "cgroups": sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/kiln-node")),
        "processes": [line for line in lines("ps", "-eo", "args=")
                      if re.match(r"^(\S*/)?(containerd|containerd-shim-runc-v2|kubelet|kube-proxy|coredns|/pause)\b", line)],
    }


@pytest.fixture(scope="package")
def node_cluster(tmp_path_factory) -> RealNode:
    """The control plane and one real node; everything stopped at the end, the machine as it was."""
    busy = [p for p in PORTS.values() if port_open(p)]
    assert not busy, f"ports {busy} are taken: a cluster of an earlier run is still up?"
    before = machine_state()
    kube = RealNode(tmp_path_factory.mktemp("node"))
    kube.kubeconfig = kube.state / "admin.kubeconfig"
    try:  # down runs whatever happened to up (a half-done one leaves processes and interfaces too)
        out = kube.script("up", timeout=900)
        assert out.returncode == 0, out.stdout + out.stderr
        yield kube
    finally:
        down = kube.script("down", timeout=300)
        assert down.returncode == 0, down.stderr
        after = machine_state()
        assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}


def artifact_folder(path: Path) -> Path:
    """A folder of this machine (the node's disk) as the artifact volume: the stages' data root is the same path
    on the host and in the pods, writable by the image's user (gid 0, as the pods run)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 50000, 0)
    path.chmod(0o2775)
    return path


def artifact_volume(name: str, namespace: str, path: Path) -> dict:
    """The PersistentVolume on ``path``, reserved for ``namespace``'s artifact claim."""
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": "50Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                     "hostPath": {"path": str(path), "type": "Directory"},
                     "claimRef": {"namespace": namespace, "name": "kiln-data"}}}


# Requests that fit a 2-core node beside Ignite, Spark Connect and serving (the presets ask for production sizes), and
# small stages may use both cores, as a local process does.
SMALL_NODE_PRESETS = {"small": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "2"}},
                      "medium": {"requests": {"cpu": "200m", "memory": "512Mi"}}}


def node_overlay(data_root: Path, volume: str) -> list[dict]:
    """k8s/overlays/node as a user adapts it: the artifact claim bound to this machine's folder ``data_root`` (the
    volume first), which the Spark Connect server mounts where the workers' data root is (the stages' arguments
    name that path). Serving keeps /data: the registry it reads must not depend on where a writer mounted it."""
    built = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / "node")], capture_output=True,
                           text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    for doc in docs:
        if doc["kind"] == "PersistentVolumeClaim" and doc["metadata"]["name"] == "kiln-data":
            doc["spec"].update(volumeName=volume, storageClassName="")
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "kiln-spark-connect":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            container["volumeMounts"] = [{**m, "mountPath": str(data_root)} if m["name"] == "data" else m
                                         for m in container["volumeMounts"]]
            container["env"] = [{**e, "value": str(data_root)} if e["name"] == "KILN_DATA_ROOT" else e
                                for e in container["env"]]
    return [artifact_volume(volume, NAMESPACE, data_root), *docs]


def data_volume(kube: RealNode, namespace: str, path: Path) -> None:
    """``namespace``'s artifact claim bound to the folder ``path`` of this machine."""
    artifact_folder(path)
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(artifact_volume(f"{namespace}-data", namespace, path)))
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "kiln-data", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": f"{namespace}-data",
                 "resources": {"requests": {"storage": "50Gi"}}}}))


@pytest.fixture(scope="package")
def node_namespace(node_cluster: RealNode, tmp_path_factory) -> tuple[RealNode, Path]:
    """Namespace kiln-pods (Pod Security restricted enforced, as the overlays' kiln) with its artifact volume on
    this machine's disk."""
    data = tmp_path_factory.mktemp("node-data") / "data"
    node_cluster.kubectl("create", "namespace", POD_NAMESPACE)
    node_cluster.kubectl("label", "namespace", POD_NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
    wait_until(lambda: node_cluster.kubectl("-n", POD_NAMESPACE, "get", "serviceaccount", "default",
                                            check=False).returncode == 0, what="the namespace's ServiceAccount")
    data_volume(node_cluster, POD_NAMESPACE, data)
    return node_cluster, data
