"""``KilnPodOperator``: a ``python -m ml_tasks STAGE ...`` step as a Kubernetes pod.

A thin subclass of the provider's ``KubernetesPodOperator`` that fixes what every Kiln pod shares:
the project image, a resource preset, labels (KPO's dag/task/run/try plus Kiln's stage), a non-root user with a
read-only root filesystem (writable ``/tmp`` and the artifact volume only), the artifact location
mounted at the same path as locally, connection secrets as environment variables from a
Kubernetes Secret (never from code), and pods deleted when they finish. The result manifest the
stage writes to the artifact volume is the task's XCom (``KilnStageOperator`` reads it), not the
XCom sidecar, whose deferrable mode has lost XComs upstream.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

from ml_tasks.errors import SKIP_EXIT_CODE

DEFAULT_IMAGE = os.environ.get("KILN_IMAGE", "kiln/kiln:latest")
DEFAULT_NAMESPACE = os.environ.get("KILN_NAMESPACE", "kiln")
DATA_CLAIM = os.environ.get("KILN_DATA_CLAIM", "kiln-data")
SECRET_NAME = "kiln-connections"  # holds AIRFLOW_CONN_* values for the pods (k8s/base/airflow/secret-example.yaml)
RUN_AS_USER = 50000  # the image's non-root "kiln" user

PRESETS: dict[str, dict[str, dict[str, str]]] = {
    "small": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    "medium": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
    "large": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"cpu": "8", "memory": "32Gi"}},
    "gpu": {"requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
            "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}},
}


class KilnPodOperator(KubernetesPodOperator):
    """Run ``python -m ml_tasks <stage> ...`` in the Kiln image.

    :param stage: the ``ml_tasks`` stage.
    :param stage_arguments: its arguments (templated through ``arguments``).
    :param preset: one of ``small``, ``medium``, ``large``, ``gpu``.
    :param data_mount: path of the artifact volume in the pod (the same data root as locally).
    """

    def __init__(
        self,
        *,
        stage: str,
        stage_arguments: list[str],
        preset: str = "small",
        data_mount: str = "/data",
        image: str = DEFAULT_IMAGE,
        namespace: str = DEFAULT_NAMESPACE,
        **kwargs: Any,
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"preset {preset!r} is not one of {sorted(PRESETS)}")
        self.stage = stage
        self.preset = preset
        self.data_mount = data_mount
        kwargs.setdefault("on_finish_action", "delete_pod")
        kwargs.setdefault("get_logs", True)
        kwargs.setdefault("do_xcom_push", False)
        super().__init__(
            image=image,
            namespace=namespace,
            name=f"kiln-{stage}",
            cmds=["python", "-m", "ml_tasks", stage],
            arguments=stage_arguments,
            container_resources=k8s.V1ResourceRequirements(**PRESETS[preset]),
            security_context=k8s.V1PodSecurityContext(run_as_non_root=True, run_as_user=RUN_AS_USER, fs_group=0,
                                                      seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")),
            container_security_context=k8s.V1SecurityContext(
                allow_privilege_escalation=False, read_only_root_filesystem=True,
                capabilities=k8s.V1Capabilities(drop=["ALL"])),
            volumes=[k8s.V1Volume(name="data", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=DATA_CLAIM)),
                     k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource())],
            volume_mounts=[k8s.V1VolumeMount(name="data", mount_path=data_mount),
                           k8s.V1VolumeMount(name="tmp", mount_path="/tmp")],
            env_vars=[k8s.V1EnvVar(name="KILN_DATA_ROOT", value=data_mount), k8s.V1EnvVar(name="HOME", value="/tmp")],
            env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=SECRET_NAME, optional=True))],
            labels={"app.kubernetes.io/part-of": "kiln", "kiln.io/stage": stage},  # KPO adds dag/task/run/try
            skip_on_exit_code=SKIP_EXIT_CODE,  # the stage says why it cannot run here
            **kwargs,
        )

    @classmethod
    def for_stage(cls, stage_op: Any, context: Any) -> KilnPodOperator:
        """The pod for a ``KilnStageOperator`` (same task id, stage and rendered arguments)."""
        return cls(task_id=stage_op.task_id, stage=stage_op.stage,
                   stage_arguments=[*map(str, stage_op.arguments), "--result-file", stage_op.result_path],
                   preset=stage_op.pod_resources, deferrable=_deferrable(),
                   # the stage's timeout, enforced by the kubelet: it kills the pod, whatever happens to the task
                   active_deadline_seconds=int(float(stage_op.timeout_minutes) * 60) if stage_op.timeout_minutes else None,
                   **({"image": stage_op.image} if stage_op.image else {}))


def _deferrable() -> bool:
    return os.environ.get("KILN_POD_DEFERRABLE", "false").lower() == "true"
