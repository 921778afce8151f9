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

import time
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.utils.container import container_is_completed
from airflow.providers.cncf.kubernetes.utils.pod_manager import PodPhase
from airflow.sdk.exceptions import AirflowException, AirflowSkipException
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from kiln import pod_spec
from kiln.execution import stage_exit
from kiln.hooks.kubernetes import memory_limit
from ml_tasks.core.environment import env_bool
from ml_tasks.core.errors import SKIP_EXIT_CODE, failure_reason
from ml_tasks.core.stages import stage_command

FINAL_PHASE_WAIT_SECONDS = 30


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
        # KPO checks every 5 s whether the pod has started (the trigger too, when deferred): most stages are done
        # within that
        kwargs.setdefault("startup_check_interval_seconds", 1)
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

    def await_pod_completion(self, pod: k8s.V1Pod) -> None:
        """KPO's wait (the log followed to the container's end), then the pod's final phase, read every 0.25 s: the
        kubelet sets it a second or two after the container exits, and KPO's own check of it, which comes next,
        sleeps 2 s whenever it comes first (about 2 s a pod; docs/benchmarks.md). Synchronous mode only: a
        deferred pod is the trigger's to watch."""
        super().await_pod_completion(pod)
        deadline = time.monotonic() + FINAL_PHASE_WAIT_SECONDS
        try:
            while True:
                remote = self.pod_manager.read_pod(pod)
                if remote.status.phase in PodPhase.terminal_states:
                    return
                if (self.do_xcom_push or self.is_istio_enabled(remote)) and container_is_completed(
                        remote, self.base_container_name):
                    return  # a sidecar keeps the pod running: KPO goes on once the stage's container is done
                if time.monotonic() > deadline:
                    self.log.info("pod %s not final %d s after its container ended: KPO's own wait goes on",
                                  pod.metadata.name, FINAL_PHASE_WAIT_SECONDS)
                    return
                time.sleep(0.25)
        except ApiException:
            return  # a deleted pod, expired credentials: KPO's own wait reads the pod next and meets what it met without this poll

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


def exit_status(remote_pod: k8s.V1Pod | None, container: str) -> tuple[int | None, str, str]:
    """The container's exit code, termination message and reason (``OOMKilled``, ``Error``...), if it terminated."""
    statuses = (remote_pod.status.container_statuses if remote_pod is not None and remote_pod.status else None) or []
    for status in statuses:
        if status.name == container and status.state and status.state.terminated:
            terminated = status.state.terminated
            return terminated.exit_code, terminated.message or "", terminated.reason or ""
    return None, "", ""
