"""``KilnKubernetesHook``: create, watch and delete groups of Kiln pods and Services.

The provider's ``KubernetesHook`` owns the connection (``kubernetes_default``: in-cluster, a kubeconfig
path or its content in the extras); this adds what a multi-pod step needs (the MXNet roles): create a
group of objects, wait until some pods succeed or any fails (with the container's own reason), and
delete a group, or every object carrying a label, without stopping at the first error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.settings import pod_mutation_hook
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

KubeObject = k8s.V1Pod | k8s.V1Service


def memory_limit(pod: k8s.V1Pod | None, container: str) -> str:
    """The container's memory limit as the pod was created with it."""
    containers = (pod.spec.containers if pod is not None and pod.spec else None) or []
    limits = next((c.resources.limits for c in containers if c.name == container and c.resources), None) or {}
    return limits.get("memory", "none set")


class PodFailed(RuntimeError):
    """A pod of the group ended in phase Failed; the message carries its reason."""


class KilnKubernetesHook(KubernetesHook):
    def create_objects(self, objects: Iterable[KubeObject], namespace: str) -> None:
        """Create in order; pods first pass Airflow's ``pod_mutation_hook``, as KubernetesPodOperator's do."""
        core = self.core_v1_client
        for obj in objects:
            if obj.kind == "Service":
                core.create_namespaced_service(namespace=namespace, body=obj)
            else:
                pod_mutation_hook(obj)
                core.create_namespaced_pod(namespace=namespace, body=obj)

    def delete_objects(self, objects: Iterable[KubeObject], namespace: str, log: Callable[[str], None]) -> list[str]:
        """Delete each object (already gone is fine); returns what could not be deleted, after trying all."""
        core = self.core_v1_client
        failed = []
        for obj in objects:
            name = obj.metadata.name
            try:
                if obj.kind == "Service":
                    core.delete_namespaced_service(name, namespace)
                else:
                    core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
            except ApiException as exc:
                if exc.status != 404:
                    log(f"could not delete {obj.kind} {name}: {exc.status} {exc.reason}")
                    failed.append(name)
        return failed

    def delete_labelled(self, selector: str, namespace: str, log: Callable[[str], None]) -> list[str]:
        """Delete every pod and Service matching ``selector``; returns their names."""
        core = self.core_v1_client
        found: list[KubeObject] = [*core.list_namespaced_pod(namespace, label_selector=selector).items,
                                   *core.list_namespaced_service(namespace, label_selector=selector).items]
        for obj in found:
            obj.kind = "Service" if isinstance(obj, k8s.V1Service) else "Pod"  # list items carry no kind
        self.delete_objects(found, namespace, log)
        return [obj.metadata.name for obj in found]

    def wait_for_pods(self, watched: list[str], done: list[str], namespace: str, timeout: float,
                      poll_seconds: float = 1.0) -> None:
        """Return once every pod in ``done`` succeeded; raise ``PodFailed`` as soon as any ``watched`` pod fails."""
        core = self.core_v1_client
        deadline = time.monotonic() + timeout
        while True:
            pods = {}
            for name in watched:
                try:
                    pods[name] = core.read_namespaced_pod(name, namespace)
                except ApiException as exc:
                    if exc.status == 404:  # deleted under the run (a drained node, a person): the run cannot finish
                        raise PodFailed(f"pod {name} was deleted while the run needed it") from None
                    raise
            failed = [name for name, pod in pods.items() if pod.status.phase == "Failed"]
            if failed:
                raise PodFailed(f"pod {failed[0]} failed: {self.failure_reason(pods[failed[0]], namespace)}")
            if all(pods[name].status.phase == "Succeeded" for name in done):
                return
            if time.monotonic() > deadline:
                phases = ", ".join(f"{name}={pod.status.phase}" for name, pod in pods.items())
                raise TimeoutError(f"pods not done after {timeout:.0f} s: {phases}")
            time.sleep(poll_seconds)

    def failure_reason(self, pod: k8s.V1Pod, namespace: str) -> str:
        """The container's termination message (its last log lines when it failed), else its log tail."""
        for status in pod.status.container_statuses or []:
            terminated = status.state.terminated if status.state else None
            if terminated:
                detail = terminated.message or ""
                if not detail:
                    try:
                        detail = self.core_v1_client.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=20)
                    except ApiException as exc:  # e.g. the node is gone with its logs
                        detail = f"(no log: {exc.reason})"
                if terminated.reason == "OOMKilled":
                    return (f"OOM-killed: the container exceeded its memory limit ({memory_limit(pod, status.name)}), "
                            f"exit code {terminated.exit_code}")
                return f"exit code {terminated.exit_code} ({terminated.reason}): {detail.strip()}"
        return pod.status.reason or pod.status.message or "no container status"
