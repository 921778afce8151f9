"""kiln_training's heavy stages as pods on a real API server (KILN_EXECUTION=kubernetes), as the Airflow
worker's ServiceAccount: created under Pod Security `restricted`, watched to the end, deleted; exit codes
mean what they mean locally. kwok plays the node: no container runs (that is the local mode's job)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException, TaskDeferred

from tests.k8s.conftest import NAMESPACE, ROOT, PodEvents, task_context

pytestmark = [pytest.mark.kubernetes, pytest.mark.slow]  # a real control plane (scripts/k8s.sh)
DS = "2026-11-24"
RUN_ID = "scheduled__2026-11-24T00:00:00+00:00"


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags" / "kiln_datasets.py")).get_dag("kiln_training")


def heavy_tasks(dag) -> list[str]:
    from kiln.operators.stage import KilnStageOperator

    return sorted(t.task_id for t in dag.tasks if isinstance(t, KilnStageOperator))


HEAVY = ["evaluate", "ingest", "online_features", "plan_search", "preprocess", "register", "report", "train_mxnet",
         "train_singa", "train_spark_gbt", "train_spark_lr", "validate"]
CONNECT = "sc://kiln-spark-connect.kiln.svc:15002"  # k8s/base/spark-standalone.yaml's server


def rendered(dag, task_id: str, data_root: Path):
    """The task as a run renders it: the plan's data root and partition in its arguments."""
    task = dag.get_task(task_id)
    task.arguments = [str(a).replace("{{ ti.xcom_pull(task_ids='plan', key='data_root') }}", str(data_root))
                      .replace("{{ ti.xcom_pull(task_ids='plan', key='ds') }}", DS).replace("{{ run_id }}", RUN_ID)
                      for a in task.arguments]
    task.result_path = str(data_root / "transactions" / "runs" / f"ds={DS}" / "_results" / f"{task_id}.json")
    task.timeout_minutes = "30"
    task.execution = "kubernetes"
    return task


def test_the_dag_s_heavy_stages_are_the_ones_tested_here(dag):
    assert heavy_tasks(dag) == HEAVY


@pytest.mark.parametrize("task_id", HEAVY)
def test_each_heavy_stage_runs_as_a_restricted_pod_watched_to_completion_and_deleted(
        prod, as_airflow_worker, dag, task_id, data_root, monkeypatch):
    from kiln.operators.pod import KilnPodOperator
    from kiln.pod_spec import PRESETS

    monkeypatch.setenv("KILN_DATA_ROOT", str(data_root))
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", CONNECT)
    task = rendered(dag, task_id, data_root)
    spark = hasattr(task, "attach_to_connect")
    if spark:  # a Spark stage is a pod too when spark_default is a Spark Connect server
        assert task.attach_to_connect()
    context = task_context(task_id, RUN_ID, try_number=2)
    with PodEvents(prod.kubeconfig) as pods:
        KilnPodOperator.for_stage(task, context, str(data_root)).execute(context)
    [name] = pods.names(f"kiln-{task.stage}-")
    assert pods.phases(name)[-2:] == ["Running", "Succeeded"]
    assert pods.deleted(name)
    live = pods.of(name)[0][1]
    assert live.metadata.namespace == NAMESPACE
    labels = live.metadata.labels
    assert labels["dag_id"] == "kiln_training" and labels["task_id"] == task_id and labels["try_number"] == "2"
    assert labels["kiln.io/stage"] == task.stage and labels["app.kubernetes.io/part-of"] == "kiln"
    container = live.spec.containers[0]
    expected = PRESETS[task.pod_resources]
    assert container.resources.requests == expected["requests"] and container.resources.limits == expected["limits"]
    assert container.command == ["python", "-m", "ml_tasks", task.stage]
    assert container.args[-2:] == ["--result-file", task.result_path]
    # The artifact volume is mounted where the arguments say the data root is.
    assert container.args[container.args.index("--data-root") + 1] == str(data_root)
    assert any(m.mount_path == str(data_root) and m.name == "data" for m in container.volume_mounts)
    assert live.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert live.spec.active_deadline_seconds == 1800
    assert container.termination_message_policy == "FallbackToLogsOnError"
    remote = [e.value for e in container.env or [] if e.name == "SPARK_REMOTE"]
    assert remote == ([CONNECT + "/"] if spark else [])  # the provider's URL form: sc://host:port/


def stage_operator(dag, task_id: str, data_root: Path):
    return rendered(dag, task_id, data_root)


def test_a_failing_pod_fails_its_task_with_the_stage_s_reason(prod, as_airflow_worker, dag, data_root, kwok_outcome,
                                                               monkeypatch):
    monkeypatch.setenv("KILN_DATA_ROOT", str(data_root))
    kwok_outcome("evaluate", exit_code=1, message="Traceback (most recent call last):\nMemoryError: out of memory")
    task = stage_operator(dag, "evaluate", data_root)
    with PodEvents(prod.kubeconfig) as pods, \
            pytest.raises(AirflowException, match=r"stage evaluate failed in pod kiln-evaluate-\w+ \(exit code 1\): "
                                                  r"MemoryError: out of memory") as failure:
        task.execute(task_context("evaluate", RUN_ID))
    assert not isinstance(failure.value, AirflowFailException | AirflowSkipException)  # a retry may help
    [name] = pods.names("kiln-evaluate-")
    assert pods.phases(name)[-1] == "Failed" and pods.deleted(name)


def test_the_skip_code_in_a_pod_skips_the_task_with_the_stage_s_reason(prod, as_airflow_worker, dag, data_root,
                                                                        kwok_outcome, monkeypatch):
    monkeypatch.setenv("KILN_DATA_ROOT", str(data_root))
    kwok_outcome("train-singa", exit_code=99, message="loading data\nSKIPPED: Apache Singa is not installed here")
    with PodEvents(prod.kubeconfig) as pods, pytest.raises(AirflowSkipException, match="^Apache Singa is not installed here$"):
        stage_operator(dag, "train_singa", data_root).execute(task_context("train_singa", RUN_ID))
    [name] = pods.names("kiln-train-singa-")
    assert pods.deleted(name)


def test_bad_input_in_a_pod_fails_the_task_without_a_retry(prod, as_airflow_worker, dag, data_root, kwok_outcome,
                                                          monkeypatch):
    monkeypatch.setenv("KILN_DATA_ROOT", str(data_root))
    kwok_outcome("validate", exit_code=2, message=(
        "ERROR: validation failed for partition ds=2026-11-24:\n  - column 'amount': rule 'min' failed: 3 rows < 0"))
    with PodEvents(prod.kubeconfig) as pods, pytest.raises(AirflowFailException) as failure:
        stage_operator(dag, "validate", data_root).execute(task_context("validate", RUN_ID))
    assert str(failure.value) == ("stage validate rejected its input: validation failed for partition ds=2026-11-24:\n"
                                  "  - column 'amount': rule 'min' failed: 3 rows < 0")
    [name] = pods.names("kiln-validate-")
    assert pods.deleted(name)


def test_a_pod_that_succeeds_without_a_result_never_returns_an_earlier_try_s(prod, as_airflow_worker, dag, data_root,
                                                                           monkeypatch):
    """kwok's pod writes nothing: the task must neither return the stale manifest left there nor succeed."""
    monkeypatch.setenv("KILN_DATA_ROOT", str(data_root))
    task = stage_operator(dag, "ingest", data_root)
    Path(task.result_path).parent.mkdir(parents=True)
    Path(task.result_path).write_text(json.dumps({"rows": 1, "from": "an earlier try"}))
    with pytest.raises(AirflowException, match=r"finished but its result .*ingest.json is not there: in Kubernetes "
                                               r"mode the pods' artifact volume must be the data root"):
        task.execute(task_context("ingest", RUN_ID))
    assert not Path(task.result_path).exists()


def test_deferrable_mode_hands_the_pod_to_the_trigger_and_maps_exit_codes_on_return(
        prod, as_airflow_worker, dag, data_root, kwok_outcome, monkeypatch):
    """The trigger KPO defers to, run here against the API server; its event comes back to Kiln's operator.
    (tests/e2e/test_kubernetes_airflow.py does the same through a running triggerer.)"""
    monkeypatch.setenv("KILN_DATA_ROOT", str(data_root))
    monkeypatch.setenv("KILN_POD_DEFERRABLE", "true")
    kwok_outcome("validate", exit_code=2, message="ERROR: column 'amount' is missing", run_seconds=2)
    task = stage_operator(dag, "validate", data_root)
    context = task_context("validate", RUN_ID)
    with PodEvents(prod.kubeconfig) as pods:
        with pytest.raises(TaskDeferred) as deferred:
            task.execute(context)
        assert deferred.value.method_name == "trigger_reentry" and hasattr(task, "trigger_reentry")

        async def first_event():
            async for event in deferred.value.trigger.run():
                return event.payload

        event = asyncio.run(first_event())
        assert event["status"] == "failed"
        with pytest.raises(AirflowFailException, match="^stage validate rejected its input: column 'amount' is missing$"):
            getattr(task, deferred.value.method_name)(context, event=event, **(deferred.value.kwargs or {}))
    [name] = pods.names("kiln-validate-")
    assert pods.phases(name)[-2:] == ["Running", "Failed"] and pods.deleted(name)
