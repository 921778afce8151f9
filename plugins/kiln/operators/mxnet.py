"""``MXNetDistributedOperator``: MXNet parameter-server training (kvstore ``dist_sync``) as one task.

Locally it runs 1 scheduler, S servers and W workers as real processes through
``ml_tasks.training.mxnet_cluster.run_cluster`` (role-prefixed logs, fail-fast, nothing left behind);
``on_kill`` stops them the same way. In Kubernetes mode it builds one pod per role plus a Service for
the scheduler (``build_role_objects``, from the same ``kiln.pod_spec`` pieces as ``KilnPodOperator``)
and hands them to ``KilnKubernetesHook``: create, wait for the workers, delete, also on failure and
``on_kill``. Names are unique per try and an earlier try's leftovers are deleted first. Rank 0's result
manifest is the XCom in both modes.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from ml_tasks.core.run_settings import SETTINGS
from ml_tasks.training.mxnet_cluster import CLUSTER_TIMEOUT_S

ROLE_PRESETS = {"scheduler": "small", "server": "medium", "worker": "medium"}


def build_role_objects(
    *,
    name: str,
    namespace: str,
    image: str,
    worker_args: list[str],
    num_servers: int,
    num_workers: int,
    labels: dict[str, str],
    data_mount: str,
) -> list[Any]:
    """The scheduler's Service, then pods for scheduler, servers and workers (``V1Service``/``V1Pod``)."""
    from kubernetes.client import models as k8s

    from kiln import pod_spec
    from ml_tasks.core.stages import stage_command
    from ml_tasks.training.mxnet_cluster import SCHEDULER_PORT, dmlc_env, ps_role_command, worker_arguments

    service = f"{name}-scheduler"
    pod_ip = k8s.V1EnvVarSource(field_ref=k8s.V1ObjectFieldSelector(field_path="status.podIP"))
    common = dmlc_env(SCHEDULER_PORT, num_servers, num_workers, interface="eth0", scheduler=f"{service}.{namespace}.svc",
                      node_host=None)

    def dmlc(role: str) -> list[k8s.V1EnvVar]:
        """The roles reach the scheduler through its Service; the scheduler itself binds the address it is given
        (ps-lite listens on DMLC_PS_ROOT_URI), so it is given its own pod's IP instead."""
        return [*(k8s.V1EnvVar(name=k, value=v) for k, v in common.items()
                  if not (role == "scheduler" and k == "DMLC_PS_ROOT_URI")),
                *([k8s.V1EnvVar(name="DMLC_PS_ROOT_URI", value_from=pod_ip)] if role == "scheduler" else []),
                k8s.V1EnvVar(name="DMLC_NODE_HOST", value_from=pod_ip), k8s.V1EnvVar(name="DMLC_ROLE", value=role)]
    ps_cmd = ps_role_command("python")
    worker_cmd = stage_command("train-mxnet", worker_arguments(worker_args))
    job_labels = {**labels, "kiln.io/mxnet-job": name}

    def role_pod(role: str, index: int, command: list[str]) -> k8s.V1Pod:
        ports = [k8s.V1ContainerPort(container_port=SCHEDULER_PORT, name="ps")] if role == "scheduler" else None
        return pod_spec.pod(
            name=f"{name}-{role}" if role == "scheduler" else f"{name}-{role}-{index}", namespace=namespace,
            labels={**job_labels, "kiln.io/mxnet-role": role},
            containers=[pod_spec.container(name=role, image=image, command=command, preset=ROLE_PRESETS[role],
                                           data_mount=data_mount, ports=ports,
                                           env=dmlc(role))])

    return [
        k8s.V1Service(api_version="v1", kind="Service",
                      metadata=k8s.V1ObjectMeta(name=service, namespace=namespace, labels=job_labels),
                      spec=k8s.V1ServiceSpec(selector={"kiln.io/mxnet-job": name, "kiln.io/mxnet-role": "scheduler"},
                                             ports=[k8s.V1ServicePort(name="ps", port=SCHEDULER_PORT,
                                                                      target_port=SCHEDULER_PORT)])),
        role_pod("scheduler", 0, ps_cmd),
        *(role_pod("server", i, ps_cmd) for i in range(num_servers)),
        *(role_pod("worker", i, worker_cmd) for i in range(num_workers)),
    ]


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
        num_servers: int | str = SETTINGS["mxnet_servers"].default,
        num_workers: int | str = SETTINGS["mxnet_workers"].default,
        cluster_timeout: float | str = CLUSTER_TIMEOUT_S,
        execution: str | None = None,
        image: str | None = None,
        namespace: str | None = None,
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
        self._roles: list[Any] = []  # local role processes, for on_kill
        self._pods: tuple[Any, list[Any], str] | None = None  # hook, objects, namespace: for on_kill

    def execute(self, context: Any) -> dict[str, Any]:
        from kiln.execution import read_result, resolve_execution
        from kiln.settings import mask_kiln_connections

        mask_kiln_connections()  # the roles' output is logged (their environment: ml_tasks.core.processes.stage_environment)
        Path(self.result_path).unlink(missing_ok=True)
        if resolve_execution(self.execution) == "kubernetes":
            self.run_on_kubernetes(context)
        else:
            from ml_tasks.core.layout import CheckpointFiles
            from ml_tasks.core.stages import stage_command
            from ml_tasks.training.mxnet_cluster import run_cluster, worker_arguments

            worker_cmd = stage_command("train-mxnet", worker_arguments(self.rendered_worker_args()), python=sys.executable)
            run_cluster(worker_cmd, int(self.num_servers), int(self.num_workers), log=self.log.info,
                        timeout=float(self.cluster_timeout), pid_file=CheckpointFiles(Path(self.checkpoint_dir)).pids,
                        on_start=self._roles.extend)
        return read_result("train-mxnet (dist_sync)", self.result_path)

    def rendered_worker_args(self) -> list[str]:
        """Every worker's ``train-mxnet`` arguments, then where rank 0 writes the result."""
        return [*map(str, self.worker_args), "--result-file", self.result_path]

    def on_kill(self) -> None:
        from ml_tasks.training.mxnet_cluster import stop_all

        stop_all(self._roles)
        if self._pods is not None:
            hook, objects, namespace = self._pods
            hook.delete_objects(objects, namespace, self.log.warning)

    @staticmethod
    def job_identity(dag_id: str, task_id: str, run_id: str, try_number: int) -> tuple[str, dict[str, str]]:
        """The pods' name prefix, unique per try (a retry after a hard kill must not hit 409 AlreadyExists),
        and the labels that find every try's objects of this task and run, for cleanup."""
        run_hash = hashlib.sha256(f"{dag_id}/{task_id}/{run_id}".encode()).hexdigest()[:10]
        labels = {"app.kubernetes.io/part-of": "kiln", "kiln.io/dag": dag_id[:63], "kiln.io/task": task_id.replace("_", "-")[:63],
                  "kiln.io/mxnet-run": run_hash, "kiln.io/try": str(try_number)}
        return f"kiln-mx-{run_hash}-t{try_number}", labels

    def role_objects(self, context: Any) -> list[Any]:
        """This try's Service and role pods (image and namespace default as for every Kiln pod)."""
        from kiln import pod_spec
        from kiln.settings import data_root

        ti = context["ti"]
        name, labels = self.job_identity(ti.dag_id, ti.task_id, ti.run_id, int(ti.try_number))
        return build_role_objects(name=name, namespace=self.namespace or pod_spec.default_namespace(),
                                  image=self.image or pod_spec.default_image(),
                                  worker_args=self.rendered_worker_args(),
                                  num_servers=int(self.num_servers), num_workers=int(self.num_workers),
                                  labels=labels, data_mount=data_root())

    def run_on_kubernetes(self, context: Any) -> None:
        """Create this try's role pods and Service, wait for the workers, delete everything (also on failure)."""
        from kiln.hooks.kubernetes import KilnKubernetesHook

        hook = KilnKubernetesHook()
        objects = self.role_objects(context)
        namespace = objects[0].metadata.namespace
        pods = [o.metadata.name for o in objects if o.kind == "Pod"]
        workers = [o.metadata.name for o in objects if o.metadata.labels.get("kiln.io/mxnet-role") == "worker"]
        # An earlier try killed hard never ran its cleanup: its pods would hold the slots and the Service.
        earlier = hook.delete_labelled(f"kiln.io/mxnet-run={objects[0].metadata.labels['kiln.io/mxnet-run']}",
                                       namespace, self.log.warning)
        if earlier:
            self.log.info("deleted %d objects of earlier tries: %s", len(earlier), ", ".join(earlier))
        self._pods = (hook, objects, namespace)
        try:
            hook.create_objects(objects, namespace)
            self.log.info("created %s in namespace %s; waiting for workers %s", ", ".join(pods), namespace,
                          ", ".join(workers))
            hook.wait_for_pods(pods, workers, namespace, timeout=float(self.cluster_timeout))
        finally:
            hook.delete_objects(objects, namespace, self.log.warning)
            self._pods = None
