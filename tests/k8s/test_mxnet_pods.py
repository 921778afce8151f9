"""The MXNet operator's Kubernetes mode on a real API server, as the Airflow worker's ServiceAccount:
scheduler, server and worker pods plus the scheduler's Service, unique per try, all deleted after
success, failure and on_kill, and an earlier try's leftovers deleted before a retry starts."""

from __future__ import annotations

import threading

import pytest

from tests.k8s.conftest import NAMESPACE, PodEvents, task_context, wait_until

pytestmark = [pytest.mark.kubernetes, pytest.mark.slow]  # a real control plane (scripts/k8s.sh)
RUN_ID = "manual__2026-11-24T00:00:00+00:00"


def operator(data_root, servers: int = 1, workers: int = 2, timeout: float = 120):
    from kiln.operators.mxnet import MXNetDistributedOperator

    return MXNetDistributedOperator(
        task_id="train_mxnet_dist", execution="kubernetes", num_servers=servers, num_workers=workers,
        worker_args=["--dataset", "transactions", "--data-root", str(data_root), "--ds", "2026-11-24"],
        result_path=str(data_root / "result.json"), checkpoint_dir=str(data_root / "ckpt"), cluster_timeout=timeout)


def left_in_namespace(kube, run_label: str) -> list[str]:
    return [o["metadata"]["name"] for kind in ("pods", "services")
            for o in kube.objects(kind, selector=f"kiln.io/mxnet-run={run_label}")]


@pytest.fixture
def mxnet_env(prod, as_airflow_worker, data_root, monkeypatch):
    monkeypatch.setenv("KILN_DATA_ROOT", str(data_root))
    return prod


def test_roles_run_as_restricted_pods_behind_a_service_and_are_deleted_after_success(mxnet_env, data_root):
    op = operator(data_root, servers=2, workers=3)
    context = task_context("train_mxnet_dist", RUN_ID, try_number=1)
    name, labels = op.job_identity("kiln_training", "train_mxnet_dist", RUN_ID, 1)
    services = []

    def record_service():  # the Service exists while the roles run
        services.extend(s["metadata"]["name"] for s in mxnet_env.objects("services", selector=f"kiln.io/mxnet-job={name}"))
        return services

    with PodEvents(mxnet_env.kubeconfig) as pods:
        watcher = threading.Thread(target=lambda: wait_until(record_service, timeout=60, what="the scheduler Service"))
        watcher.start()
        op.run_on_kubernetes(context)
        watcher.join()
    assert services == [f"{name}-scheduler"]
    roles = {n: pods.of(n)[0][1].metadata.labels["kiln.io/mxnet-role"] for n in pods.names(name)}
    assert sorted(roles) == sorted([f"{name}-scheduler", f"{name}-server-0", f"{name}-server-1",
                                    f"{name}-worker-0", f"{name}-worker-1", f"{name}-worker-2"])
    for pod_name in roles:
        live = pods.of(pod_name)[0][1]
        assert live.metadata.namespace == NAMESPACE
        assert live.spec.security_context.seccomp_profile.type == "RuntimeDefault"
        assert live.spec.security_context.run_as_user == 50000
        env = {e.name: e.value for e in live.spec.containers[0].env}
        # the scheduler binds its own pod's address; the others reach it through the Service
        scheduler = roles[pod_name] == "scheduler"
        assert env["DMLC_PS_ROOT_URI"] == (None if scheduler else f"{name}-scheduler.{NAMESPACE}.svc")
        assert env["DMLC_NUM_WORKER"] == "3"
        assert env["KILN_DATA_ROOT"] == str(data_root)
        assert live.spec.containers[0].image == "kiln/kiln:0.1.0"
        assert "Succeeded" in pods.phases(pod_name) and pods.deleted(pod_name)
    worker = pods.of(f"{name}-worker-2")[0][1].spec.containers[0]
    assert worker.command[-2:] == ["--kvstore", "dist_sync"] and "--result-file" in worker.command
    assert left_in_namespace(mxnet_env, labels["kiln.io/mxnet-run"]) == []


def test_a_failed_worker_fails_the_task_with_its_reason_and_everything_is_deleted(mxnet_env, data_root, kwok_outcome):
    kwok_outcome("worker", exit_code=1, message="mxnet.base.MXNetError: Check failed: kvstore dist_sync lost a server")
    op = operator(data_root)
    _, labels = op.job_identity("kiln_training", "train_mxnet_dist", RUN_ID, 1)
    with pytest.raises(RuntimeError, match=r"pod kiln-mx-\w+-t1-worker-\d failed: exit code 1 \(Error\): "
                                           r"mxnet.base.MXNetError: Check failed"):
        op.run_on_kubernetes(task_context("train_mxnet_dist", RUN_ID))
    assert left_in_namespace(mxnet_env, labels["kiln.io/mxnet-run"]) == []


def test_on_kill_deletes_the_running_pods_and_service(mxnet_env, data_root, kwok_outcome):
    kwok_outcome("worker", run_seconds=300)  # the workers would run for minutes
    op = operator(data_root)
    name, labels = op.job_identity("kiln_training", "train_mxnet_dist", RUN_ID, 1)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            op.run_on_kubernetes(task_context("train_mxnet_dist", RUN_ID))
        except BaseException as exc:  # noqa: BLE001 (what the killed task saw)
            outcome.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    wait_until(lambda: all(p["status"].get("phase") == "Running" for p in mxnet_env.objects(
        "pods", selector=f"kiln.io/mxnet-job={name}")) and len(mxnet_env.objects("pods", selector=f"kiln.io/mxnet-job={name}")) == 4,
        what="all four role pods running")
    op.on_kill()
    assert left_in_namespace(mxnet_env, labels["kiln.io/mxnet-run"]) == []
    runner.join(timeout=60)
    assert not runner.is_alive() and outcome  # the waiting try noticed its pods were gone


def test_a_retry_deletes_what_a_hard_killed_try_left_and_uses_its_own_names(mxnet_env, data_root, kwok_outcome):
    from kiln.hooks.kubernetes import KilnKubernetesHook

    kwok_outcome("worker", run_seconds=300)
    first = operator(data_root)
    leftovers = first.role_objects(task_context("train_mxnet_dist", RUN_ID, try_number=1))
    KilnKubernetesHook().create_objects(leftovers, NAMESPACE)  # try 1 was SIGKILLed: it never cleaned up
    run_label = leftovers[0].metadata.labels["kiln.io/mxnet-run"]
    assert len(left_in_namespace(mxnet_env, run_label)) == 5

    kwok_outcome("worker", exit_code=0)
    retry = operator(data_root)
    with PodEvents(mxnet_env.kubeconfig) as pods:
        retry.run_on_kubernetes(task_context("train_mxnet_dist", RUN_ID, try_number=2))
    old = {o.metadata.name for o in leftovers if o.kind == "Pod"}
    new = {n for n in pods.names("kiln-mx-") if n not in old}
    assert all(pods.deleted(n) for n in old)
    assert new and all("-t2-" in n for n in new) and not old & new
    assert left_in_namespace(mxnet_env, run_label) == []
