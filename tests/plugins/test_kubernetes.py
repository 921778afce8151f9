"""The Kubernetes path, checked offline: pods built by the operators, manifests in k8s/, the images.
(tests/k8s/ runs the same against a real API server.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.37.0"
HEAVY_STAGES = {"ingest": "small", "validate": "small", "train_mxnet": "medium", "train_singa": "medium",
                "evaluate": "small", "register": "small", "online_features": "small"}


class FakeDag:
    dag_id = "kiln_training"


class TI:
    dag_id = "kiln_training"
    run_id = "scheduled__2026-11-24T00:00:00+00:00"
    try_number = 2
    map_index = -1

    def __init__(self, task_id: str):
        self.task_id = task_id


def validate(manifest: dict) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags" / "kiln_datasets.py")).get_dag("kiln_training")


def rendered_pod(dag, task_id: str) -> dict:
    """What KILN_EXECUTION=kubernetes runs for a stage task, as a manifest (no cluster needed)."""
    from kiln.operators.pod import KilnPodOperator
    from kubernetes.client import ApiClient

    stage = dag.get_task(task_id)
    stage.arguments = [a.replace("{{ ti.xcom_pull(task_ids='plan', key='data_root') }}", "/data")
                       .replace("{{ ti.xcom_pull(task_ids='plan', key='ds') }}", "2026-11-24") for a in map(str, stage.arguments)]
    stage.result_path = f"/data/runs/ds=2026-11-24/_results/{task_id}.json"
    stage.timeout_minutes = "30"  # what the form's stage_timeout_minutes renders to
    pod_op = KilnPodOperator.for_stage(stage, context={}, data_root="/data")
    pod = pod_op.build_pod_request_obj({"ti": TI(task_id), "run_id": TI.run_id, "dag": FakeDag()}, dry_run=True)
    return ApiClient().sanitize_for_serialization(pod)


@pytest.mark.parametrize("task_id", sorted(HEAVY_STAGES))
def test_each_heavy_step_becomes_a_valid_pod(dag, task_id):
    from kiln.pod_spec import PRESETS

    manifest = rendered_pod(dag, task_id)
    validate(manifest)
    spec, container = manifest["spec"], manifest["spec"]["containers"][0]
    stage = dag.get_task(task_id).stage
    assert container["image"] == "kiln/kiln:0.1.0"
    assert container["command"] == ["python", "-m", "ml_tasks", stage]
    assert container["args"][:6] == ["--dataset", "transactions", "--data-root", "/data", "--ds", "2026-11-24"]
    assert container["args"][-2:] == ["--result-file", f"/data/runs/ds=2026-11-24/_results/{task_id}.json"]
    assert container["resources"] == PRESETS[HEAVY_STAGES[task_id]]
    labels = manifest["metadata"]["labels"]
    assert labels["dag_id"] == "kiln_training" and labels["task_id"] == task_id and labels["try_number"] == "2"
    assert labels["kiln.io/stage"] == stage and labels["app.kubernetes.io/part-of"] == "kiln"
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,63}", labels["run_id"])
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 50000
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert spec["activeDeadlineSeconds"] == 1800  # the stage timeout, enforced by the kubelet
    assert {"name": "KILN_DATA_ROOT", "value": "/data"} in container["env"]
    assert not container.get("envFrom")  # never the whole kiln-connections Secret: this DAG's stages read no connection
    assert not [e for e in container["env"] if "valueFrom" in e]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/data", "/tmp"}
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False  # a stage never calls the API: no token in the pod


def test_a_stage_s_pod_gets_its_own_connections_from_the_secret_and_no_other():
    """A PostgreSQL source's ingest pod: its connection, one key of ``kiln-connections``; nothing else of the Secret."""
    from kiln.operators.pod import KilnPodOperator
    from kiln.operators.stage import KilnStageOperator
    from kubernetes.client import ApiClient

    stage = KilnStageOperator(task_id="ingest", stage="ingest", connections=["kiln_source"], timeout_minutes="30",
                              arguments=["--dataset", "card_events", "--data-root", "/data", "--ds", "2026-11-24"],
                              result_path="/data/runs/ds=2026-11-24/_results/ingest.json")
    pod_op = KilnPodOperator.for_stage(stage, context={}, data_root="/data")
    manifest = ApiClient().sanitize_for_serialization(
        pod_op.build_pod_request_obj({"ti": TI("ingest"), "run_id": TI.run_id, "dag": FakeDag()}, dry_run=True))
    validate(manifest)
    container = manifest["spec"]["containers"][0]
    assert not container.get("envFrom")
    assert [e for e in container["env"] if "valueFrom" in e] == [{"name": "AIRFLOW_CONN_KILN_SOURCE", "valueFrom": {
        "secretKeyRef": {"name": "kiln-connections", "key": "AIRFLOW_CONN_KILN_SOURCE", "optional": True}}}]
    assert {e["name"] for e in container["env"]} == {"KILN_DATA_ROOT", "HOME", "AIRFLOW_CONN_KILN_SOURCE"}


def test_gpu_preset_requests_a_gpu():
    from kiln.operators.pod import KilnPodOperator

    op = KilnPodOperator(task_id="t", stage="train-mxnet", stage_arguments=[], preset="gpu")
    assert op.container_resources.limits["nvidia.com/gpu"] == "1"
    with pytest.raises(ValueError, match="preset 'huge' is not one of"):
        KilnPodOperator(task_id="t", stage="x", stage_arguments=[], preset="huge")


def test_mxnet_roles_render_as_valid_pods_and_a_scheduler_service():
    from kiln.operators.mxnet import build_role_objects
    from kiln.pod_spec import PRESETS, pod_security_context
    from kubernetes.client import ApiClient

    objects = build_role_objects(name="kiln-mx-run1", namespace="kiln", image="kiln/kiln:latest",
                                 worker_args=["--data-root", "/data", "--ds", "2026-11-24"], num_servers=2,
                                 num_workers=3, labels={"app.kubernetes.io/part-of": "kiln"}, data_mount="/data")
    manifests = [ApiClient().sanitize_for_serialization(o) for o in objects]
    for m in manifests:
        validate(m)
    kinds = [(m["kind"], m["metadata"]["labels"].get("kiln.io/mxnet-role")) for m in manifests]
    assert kinds == [("Service", None), ("Pod", "scheduler"), ("Pod", "server"), ("Pod", "server"),
                     ("Pod", "worker"), ("Pod", "worker"), ("Pod", "worker")]
    worker = manifests[-1]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["DMLC_ROLE"] == "worker" and env["DMLC_NUM_WORKER"] == "3" and env["DMLC_NUM_SERVER"] == "2"
    assert env["DMLC_PS_ROOT_URI"] == "kiln-mx-run1-scheduler.kiln.svc" and env["KILN_DATA_ROOT"] == "/data"
    assert worker["command"][-2:] == ["--kvstore", "dist_sync"]
    assert worker["resources"] == PRESETS["medium"]
    # The same restricted contexts as every stage pod (one builder: kiln.pod_spec).
    stage_pod = ApiClient().sanitize_for_serialization(pod_security_context())
    assert all(m["spec"]["securityContext"] == stage_pod for m in manifests if m["kind"] == "Pod")


def test_mxnet_pods_take_the_image_and_namespace_every_kiln_pod_takes(monkeypatch):
    from kiln.operators.mxnet import MXNetDistributedOperator

    class TI:
        dag_id, task_id, run_id, try_number = "kiln_training", "train_mxnet_dist", "r1", 1

    monkeypatch.setenv("KILN_IMAGE", "registry.example/kiln:1.2.3")
    monkeypatch.setenv("KILN_NAMESPACE", "ml")
    monkeypatch.setenv("KILN_DATA_ROOT", "/mnt/kiln")
    op = MXNetDistributedOperator(task_id="train_mxnet_dist", worker_args=[], result_path="/mnt/kiln/r.json",
                                  checkpoint_dir="/mnt/kiln/c")
    pods = [o for o in op.role_objects({"ti": TI()}) if o.kind == "Pod"]
    assert {p.spec.containers[0].image for p in pods} == {"registry.example/kiln:1.2.3"}
    assert {p.metadata.namespace for p in pods} == {"ml"}
    assert {m.mount_path for p in pods for m in p.spec.containers[0].volume_mounts if m.name == "data"} == {"/mnt/kiln"}


@pytest.mark.parametrize("overlay", ["dev", "prod", "node"])
def test_every_overlay_renders_and_validates_strictly(overlay):
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],  # no extra flags
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    objects = [o for o in yaml.safe_load_all(out.stdout) if o]
    for obj in objects:
        validate(obj)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "StatefulSet", "Service", "ConfigMap", "Deployment",
            "HorizontalPodAutoscaler", "NetworkPolicy", "PersistentVolumeClaim"} <= kinds
    assert ("Job" in kinds) == (overlay == "prod")  # prod's Ignite activation; nothing runs on apply otherwise
    ignite_cm = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "kiln-ignite-config")
    assert ignite_cm["data"]["kiln-ignite.xml"] == (ROOT / "ignite" / "kiln-ignite.xml").read_text()
    assert ignite_cm["data"]["kiln-ignite-admin.sh"] == (ROOT / "ignite" / "kiln-ignite-admin.sh").read_text()
    ignite = next(o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "kiln-ignite")
    node = ignite["spec"]["template"]["spec"]["containers"][0]
    jvm = next(e["value"] for e in node["env"] if e["name"] == "JVM_OPTS")
    backups = int(re.search(r"-Dkiln\.ignite\.backups=(\d+)", jvm).group(1))
    assert backups >= 1 if ignite["spec"]["replicas"] > 1 else backups == 0  # losing a pod loses no entry
    autoscaled = {o["spec"]["scaleTargetRef"]["name"] for o in objects if o["kind"] == "HorizontalPodAutoscaler"}
    assert all("replicas" not in o["spec"] for o in objects if o["kind"] == "Deployment"
               and o["metadata"]["name"] in autoscaled)  # the autoscaler owns the count; apply must not reset it
    assert "tcpSocket" not in node["readinessProbe"]  # an open port is not a node that answers
    assert "kiln-ignite-admin.sh ready" in " ".join(node["readinessProbe"]["exec"]["command"])
    if "-Dkiln.ignite.persistence=true" in jvm:  # a persistent cluster starts inactive: something activates it
        activate = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["name"] == "kiln-ignite-activate")
        command = activate["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[1:4] == ["/etc/kiln/kiln-ignite-admin.sh", "activate", "kiln-ignite-0.kiln-ignite-discovery"]
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
    assert namespaces == {"kiln-dev" if overlay == "dev" else "kiln"}
    rules = [r for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "kiln-pod-launcher" for r in o["rules"]]
    assert all("*" not in r["verbs"] and "*" not in r["resources"] for r in rules)  # least privilege
    assert not any(o["kind"] in ("ClusterRole", "ClusterRoleBinding") for o in objects)


@pytest.mark.parametrize("overlay", ["prod", "dev"])
def test_prods_prediction_service_asks_for_an_api_key_from_a_secret(overlay):
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)], capture_output=True, text=True, timeout=60)
    objects = [o for o in yaml.safe_load_all(out.stdout) if o]
    pod = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "kiln-serving")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    if overlay == "dev":
        assert "KILN_SERVE_API_KEY_FILE" not in env and "KILN_SERVE_API_KEY" not in env
        return
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if env["KILN_SERVE_API_KEY_FILE"].startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "kiln-serving-api-key" and not volume["secret"].get("optional")  # no key, no pod
    assert "KILN_SERVE_API_KEY" not in env  # never the key itself in the manifest


@pytest.mark.parametrize("overlay", ["prod", "dev"])
def test_spark_workers_offer_executors_no_more_than_their_container_may_use(overlay):
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)], capture_output=True, text=True, timeout=60)
    objects = [o for o in yaml.safe_load_all(out.stdout) if o]
    workers = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "kiln-spark-worker")
    assert workers["spec"]["replicas"] == {"prod": 2, "dev": 1}[overlay]
    container = workers["spec"]["template"]["spec"]["containers"][0]
    command, limits = container["command"], container["resources"]["limits"]
    assert command[-1] == "spark://kiln-spark-master:7077"
    assert int(command[command.index("--cores") + 1]) <= int(limits["cpu"])
    offered_gib = int(command[command.index("--memory") + 1].rstrip("g"))
    assert offered_gib < int(limits["memory"].rstrip("Gi"))  # room for the worker daemon itself
    master = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "kiln-spark-master")
    assert {p["port"] for p in master["spec"]["ports"]} == {7077, 8080}
    connect = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "kiln-spark-connect")
    pod = connect["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    assert command[command.index("--master") + 1] == "spark://kiln-spark-master:7077"
    assert "spark.driver.host=$(POD_IP)" in command  # the executors call back to this pod
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "kiln-data"
    values = yaml.safe_load((ROOT / "k8s" / "airflow" / "values.yaml").read_text())
    assert {"name": "AIRFLOW_CONN_SPARK_DEFAULT", "value": "sc://kiln-spark-connect.kiln.svc:15002"} in values["env"]


def test_airflow_helm_values_use_the_kiln_image_and_kubernetes_executor():
    values = yaml.safe_load((ROOT / "k8s" / "airflow" / "values.yaml").read_text())
    assert values["executor"] == "KubernetesExecutor"
    assert values["images"]["airflow"]["repository"] == "kiln/kiln"
    assert values["dags"]["gitSync"]["enabled"] is False and values["dags"]["persistence"]["enabled"] is False
    assert {"name": "KILN_EXECUTION", "value": "kubernetes"} in values["env"]
    # the account k8s/base/rbac.yaml grants pod rights to (tests/k8s checks them), for workers and the
    # triggerer that watches deferred pods
    assert values["workers"]["serviceAccount"]["name"] == values["triggerer"]["serviceAccount"]["name"] == "airflow-worker"
    # every component that reads the artifacts mounts them where KILN_DATA_ROOT says: the api-server's Report tab
    # too (without it, 404 for every run); and Airflow runs the image its pods run (KILN_IMAGE's default)
    for component in ("workers", "triggerer", "scheduler", "apiServer"):
        [mount] = values[component]["extraVolumeMounts"]
        [volume] = values[component]["extraVolumes"]
        assert mount["mountPath"] == "/data" and volume["persistentVolumeClaim"]["claimName"] == "kiln-data", component
    from ml_tasks.core.environment import env_str

    assert f"{values['images']['airflow']['repository']}:{values['images']['airflow']['tag']}" == env_str("KILN_IMAGE")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in (ln.strip() for ln in text.splitlines()) if line and not line.startswith("#")]


@pytest.mark.parametrize("dockerfile", ["Dockerfile"])
def test_dockerfiles_copy_what_exists_and_run_as_non_root(dockerfile):
    steps = dockerfile_instructions(ROOT / dockerfile)
    assert steps[0][0] in ("FROM", "ARG")
    for op, arg in steps:
        if op == "COPY" and not arg.startswith("--from="):  # --from: another stage or a named build context
            for src in arg.split()[:-1]:
                assert (ROOT / src).exists(), f"{dockerfile}: COPY source {src} is missing"
    user = [arg for op, arg in steps if op == "USER"]
    assert user and user[-1] not in ("root", "0")


def test_project_image_installs_the_pinned_requirements():
    steps = dockerfile_instructions(ROOT / "Dockerfile")
    assert ("ARG", "PYTHON_IMAGE=python:3.11.7-slim-bookworm") in steps  # the official name; make images: a local base
    assert any(op == "RUN" and "pip install -r requirements.txt" in arg for op, arg in steps)
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert "==" in line, f"unpinned requirement: {line}"


def test_mxnet_pod_names_are_unique_per_try_and_labelled_for_cleanup_of_earlier_tries():
    from kiln.operators.mxnet import MXNetDistributedOperator

    run = "manual__2026-11-24T00:00:00+00:00"
    first, labels1 = MXNetDistributedOperator.job_identity("kiln_training", "train_mxnet_dist", run, 1)
    retry, labels2 = MXNetDistributedOperator.job_identity("kiln_training", "train_mxnet_dist", run, 2)
    other, labels3 = MXNetDistributedOperator.job_identity("kiln_training", "train_mxnet_dist", run + "x", 1)
    assert len({first, retry, other}) == 3  # a retry after a hard kill never collides (409 AlreadyExists)
    assert labels1["kiln.io/mxnet-run"] == labels2["kiln.io/mxnet-run"] != labels3["kiln.io/mxnet-run"]
    assert len(first) + len("-scheduler") <= 63 and re.fullmatch(r"[a-z0-9-]+", first)
