"""``MXNetDistributedOperator``: MXNet parameter-server training (kvstore ``dist_sync``) as one task.

Locally it runs 1 scheduler, S servers and W workers as real processes through
``ml_tasks.mxnet_cluster.run_cluster`` (role-prefixed logs, fail-fast, nothing left behind);
``on_kill`` stops them the same way. In Kubernetes mode it creates one pod per role plus a Service
for the scheduler (``build_role_manifests``, a pure builder tests compare field by field), waits for
the workers, and deletes everything. Rank 0's result manifest is the XCom in both modes.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

SCHEDULER_PORT = 9091
DEFAULT_IMAGE = "kiln/kiln:latest"


def build_role_manifests(
    *,
    name: str,
    namespace: str,
    image: str,
    worker_args: list[str],
    num_servers: int,
    num_workers: int,
    labels: dict[str, str],
    artifact_claim: str = "kiln-data",
) -> list[dict[str, Any]]:
    """Pods for scheduler, servers and workers, and the scheduler's Service, as plain manifests."""
    service = f"{name}-scheduler"
    common_env = [
        {"name": "DMLC_PS_ROOT_URI", "value": f"{service}.{namespace}.svc"},
        {"name": "DMLC_PS_ROOT_PORT", "value": str(SCHEDULER_PORT)},
        {"name": "DMLC_NUM_SERVER", "value": str(num_servers)},
        {"name": "DMLC_NUM_WORKER", "value": str(num_workers)},
        {"name": "DMLC_INTERFACE", "value": "eth0"},
        {"name": "DMLC_NODE_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "OMP_NUM_THREADS", "value": "1"},
    ]
    ps_cmd = ["python", "-c", "from ml_tasks.train_mxnet import import_mxnet; import_mxnet()"]
    worker_cmd = ["python", "-m", "ml_tasks", "train-mxnet", *worker_args, "--kvstore", "dist_sync"]

    def pod(role: str, index: int, command: list[str], cpu: str, memory: str) -> dict[str, Any]:
        pod_name = f"{name}-{role}" if role == "scheduler" else f"{name}-{role}-{index}"
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": namespace,
                         "labels": {**labels, "kiln.io/mxnet-role": role, "kiln.io/mxnet-job": name}},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": True, "runAsUser": 50000, "fsGroup": 0},
                "containers": [{
                    "name": role,
                    "image": image,
                    "command": command,
                    "env": [*common_env, {"name": "DMLC_ROLE", "value": role}],
                    "ports": [{"containerPort": SCHEDULER_PORT, "name": "ps"}] if role == "scheduler" else [],
                    "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}},
                    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}],
                }],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": artifact_claim}},
                            {"name": "tmp", "emptyDir": {}}],
            },
        }

    manifests: list[dict[str, Any]] = [{
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service, "namespace": namespace, "labels": {**labels, "kiln.io/mxnet-job": name}},
        "spec": {"selector": {"kiln.io/mxnet-job": name, "kiln.io/mxnet-role": "scheduler"},
                 "ports": [{"name": "ps", "port": SCHEDULER_PORT, "targetPort": SCHEDULER_PORT}]},
    }]
    manifests.append(pod("scheduler", 0, ps_cmd, "250m", "512Mi"))
    manifests += [pod("server", i, ps_cmd, "1", "2Gi") for i in range(num_servers)]
    manifests += [pod("worker", i, worker_cmd, "2", "4Gi") for i in range(num_workers)]
    return manifests


class MXNetDistributedOperator(BaseOperator):
    """Train the MXNet MLP with kvstore ``dist_sync`` on S servers and W workers.

    :param worker_args: ``train-mxnet`` arguments every worker gets (templated).
    :param result_path: where rank 0 writes its result manifest (templated).
    :param checkpoint_dir: where the launcher records role pids (templated).
    """

    template_fields: Sequence[str] = ("worker_args", "result_path", "checkpoint_dir", "num_servers", "num_workers",
                                      "cluster_timeout")
    ui_color = "#e9c46a"

    def __init__(
        self,
        *,
        worker_args: list[Any],
        result_path: str,
        checkpoint_dir: str,
        num_servers: int | str = 1,
        num_workers: int | str = 2,
        cluster_timeout: float | str = 1800.0,
        execution: str | None = None,
        image: str = DEFAULT_IMAGE,
        namespace: str = "kiln",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.worker_args = worker_args
        self.result_path = result_path
        self.checkpoint_dir = checkpoint_dir
        self.num_servers = num_servers
        self.num_workers = num_workers
        self.cluster_timeout = cluster_timeout
        self.execution = execution
        self.image = image
        self.namespace = namespace
        self._roles: list[Any] = []

    def execute(self, context: Any) -> dict[str, Any]:
        from kiln.execution import resolve_execution
        from kiln.settings import mask_kiln_connections

        mask_kiln_connections()  # the roles inherit the task's environment and their output is logged
        Path(self.result_path).unlink(missing_ok=True)
        if resolve_execution(self.execution) == "kubernetes":
            self._run_on_kubernetes(context)
        else:
            from ml_tasks.mxnet_cluster import run_cluster

            worker_cmd = [sys.executable, "-m", "ml_tasks", "train-mxnet", *map(str, self.worker_args),
                          "--kvstore", "dist_sync", "--result-file", self.result_path]
            run_cluster(worker_cmd, int(self.num_servers), int(self.num_workers), log=self.log.info,
                        timeout=float(self.cluster_timeout), pid_file=Path(self.checkpoint_dir) / "pids.json",
                        on_start=self._roles.extend)
        return json.loads(Path(self.result_path).read_text())

    def on_kill(self) -> None:
        from ml_tasks.mxnet_cluster import stop_all

        stop_all(self._roles)

    @staticmethod
    def job_identity(dag_id: str, task_id: str, run_id: str, try_number: int) -> tuple[str, dict[str, str]]:
        """The pods' name prefix, unique per try (a retry after a hard kill must not hit 409 AlreadyExists),
        and the labels that find every try's objects of this task and run, for cleanup."""
        run_hash = hashlib.sha256(f"{dag_id}/{task_id}/{run_id}".encode()).hexdigest()[:10]
        labels = {"app.kubernetes.io/part-of": "kiln", "kiln.io/dag": dag_id[:63], "kiln.io/task": task_id.replace("_", "-")[:63],
                  "kiln.io/mxnet-run": run_hash, "kiln.io/try": str(try_number)}
        return f"kiln-mx-{run_hash}-t{try_number}", labels

    def manifests(self, context: Any) -> list[dict[str, Any]]:
        ti = context["ti"]
        name, labels = self.job_identity(ti.dag_id, ti.task_id, ti.run_id, int(ti.try_number))
        return build_role_manifests(name=name, namespace=self.namespace, image=self.image,
                                    worker_args=[*map(str, self.worker_args), "--result-file", self.result_path],
                                    num_servers=int(self.num_servers), num_workers=int(self.num_workers), labels=labels)

    def _run_on_kubernetes(self, context: Any) -> None:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        core = KubernetesHook(conn_id="kubernetes_default").core_v1_client
        manifests = self.manifests(context)
        pods = [m["metadata"]["name"] for m in manifests if m["kind"] == "Pod"]
        workers = [p for p in pods if "-worker-" in p]
        self._delete_earlier_tries(core, manifests[0]["metadata"]["labels"]["kiln.io/mxnet-run"])
        try:
            for m in manifests:
                create = core.create_namespaced_service if m["kind"] == "Service" else core.create_namespaced_pod
                create(namespace=self.namespace, body=m)
            deadline = time.monotonic() + float(self.cluster_timeout)
            while time.monotonic() < deadline:
                phases = {p: core.read_namespaced_pod(p, self.namespace).status.phase for p in pods}
                failed = [p for p, ph in phases.items() if ph == "Failed"]
                if failed:
                    raise RuntimeError(f"MXNet pod {failed[0]} failed: "
                                       f"{core.read_namespaced_pod_log(failed[0], self.namespace, tail_lines=20)}")
                if all(phases[w] == "Succeeded" for w in workers):
                    return
                time.sleep(5)
            raise RuntimeError(f"MXNet pods timed out after {float(self.cluster_timeout):.0f}s")
        finally:
            for m in manifests:
                delete = core.delete_namespaced_service if m["kind"] == "Service" else core.delete_namespaced_pod
                try:
                    delete(m["metadata"]["name"], self.namespace)
                except Exception as exc:  # cleanup must try every object; report what could not go
                    self.log.warning("could not delete %s %s: %s", m["kind"], m["metadata"]["name"], exc)

    def _delete_earlier_tries(self, core: Any, run_hash: str) -> None:
        """An earlier try killed hard never ran its cleanup: remove its pods and Service before starting."""
        selector = f"kiln.io/mxnet-run={run_hash}"
        for pod in core.list_namespaced_pod(self.namespace, label_selector=selector).items:
            self.log.info("deleting pod %s of an earlier try", pod.metadata.name)
            core.delete_namespaced_pod(pod.metadata.name, self.namespace, grace_period_seconds=0)
        for service in core.list_namespaced_service(self.namespace, label_selector=selector).items:
            core.delete_namespaced_service(service.metadata.name, self.namespace)
