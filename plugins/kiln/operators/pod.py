"""``KilnPodOperator``: a ``python -m ml_tasks STAGE ...`` step as a Kubernetes pod.

A thin subclass of the provider's ``KubernetesPodOperator`` that fixes what every Kiln pod shares
(``kiln.pod_spec``: image, resource preset, Pod Security ``restricted`` contexts, the artifact volume
mounted at the same path as the data root, the stage's own connections from a Secret) plus labels (KPO's
dag/task/run/try and Kiln's stage), and deletes pods when they finish. Exit codes mean what they mean
locally: the skip code skips the task, bad input (2) fails it without a retry, with the stage's own
error line (the container's termination message) as the reason. The result manifest the stage writes
to the artifact volume is the task's XCom (``KilnStageOperator`` reads it), not the XCom sidecar, whose
deferrable mode has lost XComs upstream.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException, AirflowSkipException
from kubernetes.client import models as k8s

from kiln import pod_spec
from kiln.execution import stage_exit
from ml_tasks.core.environment import env_bool
from ml_tasks.core.errors import SKIP_EXIT_CODE, failure_reason
from ml_tasks.core.stages import stage_command


class KilnPodOperator(KubernetesPodOperator):
    """Run ``python -m ml_tasks <stage> ...`` in the Kiln image.

    :param stage: the ``ml_tasks`` stage.
    :param stage_arguments: its arguments (templated through ``arguments``).
    :param preset: one of ``small``, ``medium``, ``large``, ``gpu``.
    :param data_mount: where the artifact volume is mounted: the data root the arguments name.
    :param connections: the Airflow connections the stage reads: their keys of the ``kiln-connections`` Secret
        become its ``AIRFLOW_CONN_<ID>`` variables, and nothing else of the Secret does.
    """

    def __init__(
        self,
        *,
        stage: str,
        stage_arguments: list[str],
        preset: str = "small",
        data_mount: str = "/data",
        image: str | None = None,
        namespace: str | None = None,
        stage_env: dict[str, str] | None = None,
        connections: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.stage = stage
        self.preset = preset
        self.data_mount = data_mount
        kwargs.setdefault("on_finish_action", "delete_pod")
        kwargs.setdefault("get_logs", env_bool("KILN_POD_LOGS"))
        kwargs.setdefault("do_xcom_push", False)
        super().__init__(
            image=image or pod_spec.default_image(),
            namespace=namespace or pod_spec.default_namespace(),
            name=f"kiln-{stage}",
            cmds=stage_command(stage, []),  # the image's python; the (templated) arguments follow
            arguments=stage_arguments,
            container_resources=pod_spec.resources(preset),
            security_context=pod_spec.pod_security_context(),
            container_security_context=pod_spec.container_security_context(),
            volumes=pod_spec.volumes(),
            volume_mounts=pod_spec.volume_mounts(data_mount),
            env_vars=[*pod_spec.environment(data_mount), *(k8s.V1EnvVar(name=k, value=v) for k, v in (stage_env or {}).items()),
                      *pod_spec.connection_env(list(connections or []))],
            termination_message_policy="FallbackToLogsOnError",  # the stage's last lines explain a failure
            automount_service_account_token=False,  # a stage never calls the Kubernetes API: no token to steal
            labels={"app.kubernetes.io/part-of": "kiln", "kiln.io/stage": stage},  # KPO adds dag/task/run/try
            skip_on_exit_code=SKIP_EXIT_CODE,  # the stage says why it cannot run here
            **kwargs,
        )

    @classmethod
    def for_stage(cls, stage_op: Any, context: Any, data_root: str) -> KilnPodOperator:
        """The pod for a ``KilnStageOperator`` (same task id, stage and rendered arguments)."""
        return cls(task_id=stage_op.task_id, stage=stage_op.stage, stage_arguments=stage_op.stage_arguments,
                   preset=stage_op.pod_resources, deferrable=env_bool("KILN_POD_DEFERRABLE"),
                   data_mount=data_root,
                   # the stage's timeout, enforced by the kubelet: it kills the pod, whatever happens to the task
                   active_deadline_seconds=int(float(stage_op.timeout_minutes) * 60) if stage_op.timeout_minutes else None,
                   image=stage_op.image, stage_env=stage_op.stage_env(), connections=stage_op.connections)

    def cleanup(self, pod: k8s.V1Pod, remote_pod: k8s.V1Pod, *args: Any, **kwargs: Any) -> None:
        """KPO's cleanup (delete the pod, map the skip code), then the stage's exit codes with its reason."""
        code, message, terminated_by = exit_status(remote_pod, self.base_container_name)
        reason = failure_reason(message)
        if terminated_by == "OOMKilled":  # the kernel killed it: its own last lines do not say why
            limit = memory_limit(remote_pod, self.base_container_name)
            reason = f"OOM-killed: the container exceeded its memory limit ({self.preset} preset: {limit})" + (
                f"; last output: {reason}" if reason else "")
        try:
            super().cleanup(pod, remote_pod, *args, **kwargs)
        except AirflowSkipException as skip:
            raise AirflowSkipException(reason or str(skip)) from None
        except AirflowException as failure:
            name = pod.metadata.name if pod is not None else self.name
            raise stage_exit(self.stage, code, reason or str(failure), f"pod {name}") from failure


def memory_limit(remote_pod: k8s.V1Pod | None, container: str) -> str:
    """The container's memory limit as the pod was created with it."""
    containers = (remote_pod.spec.containers if remote_pod is not None and remote_pod.spec else None) or []
    limits = next((c.resources.limits for c in containers if c.name == container and c.resources), None) or {}
    return limits.get("memory", "none set")


def exit_status(remote_pod: k8s.V1Pod | None, container: str) -> tuple[int | None, str, str]:
    """The container's exit code, termination message and reason (``OOMKilled``, ``Error``...), if it terminated."""
    statuses = (remote_pod.status.container_statuses if remote_pod is not None and remote_pod.status else None) or []
    for status in statuses:
        if status.name == container and status.state and status.state.terminated:
            terminated = status.state.terminated
            return terminated.exit_code, terminated.message or "", terminated.reason or ""
    return None, "", ""
