"""What every Kiln pod shares, in one place: image, namespace, resource presets, the restricted security
context, the artifact volume and the environment.

``KilnPodOperator`` (one stage per pod) and the MXNet roles (``kiln.hooks.kubernetes``) are both built
from these pieces, so a pod that passes Pod Security ``restricted`` in one passes it in the other, and
``KILN_IMAGE`` / ``KILN_NAMESPACE`` / ``KILN_DATA_CLAIM`` mean the same for both.
"""

from __future__ import annotations

from kubernetes.client import models as k8s

from ml_tasks.core.environment import env_str
from ml_tasks.core.processes import connection_variable

SECRET_NAME = "kiln-connections"  # holds AIRFLOW_CONN_<ID> keys; a pod gets its stage's only (docs/kubernetes.md)
RUN_AS_USER = 50000  # the image's non-root "kiln" user
TMP_MOUNT = "/tmp"  # noqa: S108 (an emptyDir: the only writable path besides the artifact volume)

PRESETS: dict[str, dict[str, dict[str, str]]] = {
    "small": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    "medium": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
    "large": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"cpu": "8", "memory": "32Gi"}},
    "gpu": {"requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
            "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}},
}


def default_image() -> str:
    return env_str("KILN_IMAGE")


def default_namespace() -> str:
    return env_str("KILN_NAMESPACE")


def data_claim() -> str:
    return env_str("KILN_DATA_CLAIM")


def presets() -> dict[str, dict[str, dict[str, str]]]:
    """``PRESETS`` with the cluster's own sizes from ``KILN_POD_PRESETS`` (JSON: preset -> requests/limits ->
    resource -> quantity, merged over the defaults), e.g. requests that fit a small node."""
    import json

    given = env_str("KILN_POD_PRESETS")
    try:
        overrides = json.loads(given) if given else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"KILN_POD_PRESETS is not JSON: {exc}") from None
    merged = {name: {part: dict(values) for part, values in preset.items()} for name, preset in PRESETS.items()}
    for name, parts in (overrides.items() if isinstance(overrides, dict) else [("", None)]):
        if name not in PRESETS or not isinstance(parts, dict) or not set(parts) <= {"requests", "limits"} \
                or not all(isinstance(v, dict) and all(isinstance(q, str) for q in v.values()) for v in parts.values()):
            raise ValueError(f"KILN_POD_PRESETS: {name!r} must be one of {sorted(PRESETS)} mapping requests/limits "
                             "to quantities, e.g. {\"medium\": {\"requests\": {\"cpu\": \"500m\"}}}")
        for part, values in parts.items():
            merged[name][part].update(values)
    return merged


def resources(preset: str) -> k8s.V1ResourceRequirements:
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not one of {sorted(PRESETS)}")
    return k8s.V1ResourceRequirements(**presets()[preset])


def pod_security_context() -> k8s.V1PodSecurityContext:
    """Pod Security ``restricted``: non-root, the runtime's default seccomp profile."""
    return k8s.V1PodSecurityContext(run_as_non_root=True, run_as_user=RUN_AS_USER, fs_group=0,
                                    seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"))


def container_security_context() -> k8s.V1SecurityContext:
    """Pod Security ``restricted`` for the container, plus a read-only root filesystem."""
    return k8s.V1SecurityContext(allow_privilege_escalation=False, read_only_root_filesystem=True,
                                 capabilities=k8s.V1Capabilities(drop=["ALL"]))


def volumes() -> list[k8s.V1Volume]:
    return [k8s.V1Volume(name="data", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=data_claim())),
            k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource())]


def volume_mounts(data_mount: str) -> list[k8s.V1VolumeMount]:
    """The artifact volume at ``data_mount``: the same path as the data root the stage's arguments name."""
    return [k8s.V1VolumeMount(name="data", mount_path=data_mount), k8s.V1VolumeMount(name="tmp", mount_path=TMP_MOUNT)]


def environment(data_mount: str) -> list[k8s.V1EnvVar]:
    return [k8s.V1EnvVar(name="KILN_DATA_ROOT", value=data_mount), k8s.V1EnvVar(name="HOME", value=TMP_MOUNT)]


def connection_env(conn_ids: list[str]) -> list[k8s.V1EnvVar]:
    """The stage's connections as AIRFLOW_CONN_<ID> variables, each from its own key of the Secret: a pod
    never sees the connections of other stages (never the whole Secret), and none reaches it through code
    or arguments. A missing key leaves the variable unset, so the stage says which connection it lacks."""
    return [k8s.V1EnvVar(name=connection_variable(conn_id), value_from=k8s.V1EnvVarSource(
                secret_key_ref=k8s.V1SecretKeySelector(name=SECRET_NAME, key=connection_variable(conn_id), optional=True)))
            for conn_id in conn_ids]


def container(*, name: str, image: str, command: list[str], args: list[str] | None = None, preset: str,
              data_mount: str, env: list[k8s.V1EnvVar] = (), ports: list[k8s.V1ContainerPort] | None = None,
              ) -> k8s.V1Container:
    """A Kiln container: the stage's error lines become the termination message when it fails."""
    return k8s.V1Container(
        name=name, image=image, command=command, args=args, ports=ports or None, resources=resources(preset),
        env=[*environment(data_mount), *env],
        volume_mounts=volume_mounts(data_mount), security_context=container_security_context(),
        termination_message_policy="FallbackToLogsOnError")


def pod(*, name: str, namespace: str, labels: dict[str, str], containers: list[k8s.V1Container],
        active_deadline_seconds: int | None = None) -> k8s.V1Pod:
    return k8s.V1Pod(
        api_version="v1", kind="Pod",
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels=labels),
        spec=k8s.V1PodSpec(restart_policy="Never", security_context=pod_security_context(), containers=containers,
                           volumes=volumes(), active_deadline_seconds=active_deadline_seconds,
                           automount_service_account_token=False))  # a stage never calls the Kubernetes API
