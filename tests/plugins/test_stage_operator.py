"""KilnStageOperator running real stage processes: a hung stage is killed with its process group."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException

from tests.conftest import PROJECT_ROOT
from tests.ml_tasks.test_trainer_contract import SPEC as TRAINER_SPEC


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def user_datasets(tmp_path, monkeypatch):
    """A datasets folder of the test's own specs (``KILN_DATASETS_DIR``, inherited by the stage processes)."""
    folder = tmp_path / "datasets"
    shutil.copytree(PROJECT_ROOT / "datasets", folder)  # the shipped ones too
    monkeypatch.setenv("KILN_DATASETS_DIR", str(folder))

    def add(name: str, source: str) -> None:
        (folder / f"{name}.yaml").write_text(f"task: binary\nsource: {source}\nkey: id\nlabel: y\nfeatures: {{numeric: [a]}}\n")

    return add


def test_a_hung_stage_is_killed_with_its_process_group_after_its_timeout(data_root, tmp_path, user_datasets, monkeypatch):
    from kiln.operators.stage import KilnStageOperator

    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers: a database that hangs
    user_datasets("hung", "{kind: postgres, conn_id: hung_db, table: events, date_column: day}")
    monkeypatch.setenv("AIRFLOW_CONN_HUNG_DB", f"postgres://kiln:pw@127.0.0.1:{silent.getsockname()[1]}/kiln")
    op = KilnStageOperator(task_id="ingest", stage="ingest", execution="local", timeout_minutes=0.05,
                           arguments=["--dataset", "hung", "--data-root", str(data_root), "--ds", "2026-03-01"],
                           result_path=str(tmp_path / "result.json"), connections=["hung_db"])
    started = time.monotonic()
    with pytest.raises(AirflowException, match=r"stage ingest ran longer than its timeout of 0.05 min; its process group \d+ was killed"):
        op.execute(context={})
    assert time.monotonic() - started < 60
    assert op._proc is not None and not group_alive(op._proc.pid)
    assert not (data_root / "hung" / "raw" / "ds=2026-03-01").exists()
    silent.close()


def test_a_stage_that_ends_before_its_timeout_keeps_its_own_outcome(data_root, tmp_path, user_datasets,
                                                                   monkeypatch):
    """Skip (exit 99) and bad input (exit 2) are reported as such, never as a timeout."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
    from kiln.operators.stage import KilnStageOperator

    def stage(name: str, *args: str) -> KilnStageOperator:
        return KilnStageOperator(task_id=name, stage=name, execution="local", timeout_minutes=5,
                                 arguments=["--data-root", str(data_root), "--ds", "2026-03-01", *args],
                                 result_path=str(tmp_path / f"{name}.json"))

    # An environment without Singa: a package of that name that fails to import shadows the real one.
    (tmp_path / "no_singa" / "singa").mkdir(parents=True)
    (tmp_path / "no_singa" / "singa" / "__init__.py").write_text("raise ImportError('no Singa here')\n")
    with monkeypatch.context() as env, pytest.raises(AirflowSkipException, match="Apache Singa is not installed"):
        env.setenv("PYTHONPATH", f"{tmp_path / 'no_singa'}:{os.environ.get('PYTHONPATH', '')}")
        stage("train-singa").execute(context={})
    user_datasets("mine", "{kind: file, path: /nowhere.csv}")
    with pytest.raises(AirflowFailException, match="rejected its input: .*input path '/nowhere.csv' does not exist"):
        stage("ingest", "--dataset", "mine").execute(context={})


# The contract tests' diabetes spec with one trainer that writes down the environment it sees.
ENV_SPEC = TRAINER_SPEC.split("trainers:")[0] + """trainers:
  nosy:
    entry: env_trainer:train
    scorer: broken_trainers:load
"""
SECRETS = {
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-secret-of-the-worker",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow:metadata-db-password@127.0.0.1:1/airflow",
    "AIRFLOW__CORE__FERNET_KEY": "fernet-key-of-the-worker",
    "AIRFLOW__API__SECRET_KEY": "api-secret-key",
    "AIRFLOW_CONN_OTHER_STAGES_DB": "postgres://kiln:other-stages-password@127.0.0.1:1/other",
    "KILN_PG_PASSWORD": "metadata-db-password",
}


def test_a_custom_trainer_sees_its_connections_and_kiln_s_settings_never_the_worker_s_secrets(
        data_root, tmp_path, user_datasets, monkeypatch):
    """A spec's trainer runs user code in the stage process: it writes its os.environ beside its model."""
    from kiln.operators.stage import KilnStageOperator

    from ml_tasks.core.layout import Layout
    from tests.ml_tasks.test_trainer_contract import write_features

    folder = Path(os.environ["KILN_DATASETS_DIR"])
    (folder / "nosy.yaml").write_text(ENV_SPEC.replace("PATH", str(PROJECT_ROOT / "tests" / "trainers")))
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIRFLOW_CONN_NOSY_SOURCE", "postgres://kiln:the-stage-s-own-password@127.0.0.1:1/kiln")
    monkeypatch.setenv("KILN_SHUFFLE_PARTITIONS", "3")
    lay = Layout.at(data_root, "nosy", "2026-03-01")
    write_features(lay.features)
    op = KilnStageOperator(task_id="train_nosy", stage="train", execution="local", timeout_minutes=5,
                           arguments=["--dataset", "nosy", "--data-root", str(data_root), "--ds", "2026-03-01",
                                      "--candidate", "nosy"],
                           result_path=str(tmp_path / "train_nosy.json"), connections=["nosy_source"])
    op.execute(context={})
    seen = json.loads(next(lay.candidate("nosy").dir.rglob("environ.json")).read_text())
    leaked = {name for name, value in seen.items()
              if name.startswith("AIRFLOW__") or any(secret in value for secret in SECRETS.values())}
    assert not leaked, f"the trainer saw the worker's secrets: {sorted(leaked)}"
    assert seen["AIRFLOW_CONN_NOSY_SOURCE"] == os.environ["AIRFLOW_CONN_NOSY_SOURCE"]  # its own connection
    assert seen["KILN_SHUFFLE_PARTITIONS"] == "3" and seen["KILN_DATASETS_DIR"] == str(folder)
    assert seen["PATH"] == os.environ["PATH"]


def test_in_kubernetes_mode_the_stage_s_connection_is_masked_before_its_pod_can_log(tmp_path, monkeypatch):
    """A pod's log is streamed into the task log (KPO's PodManager logs each line): the stage's connection
    must be registered with Airflow's masker before the pod starts, as it is for a local subprocess. No
    control plane listens here (kubernetes_default: a closed loopback port), so the pod is never created."""
    from airflow.sdk._shared.secrets_masker.secrets_masker import redact
    from kiln.operators.stage import KilnStageOperator
    from urllib3.exceptions import MaxRetryError

    password = f"pod-log-{os.getpid()}-{time.monotonic_ns()}"
    monkeypatch.setenv("AIRFLOW_CONN_POD_SOURCE", f"postgres://kiln:{password}@127.0.0.1:1/kiln")
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "none",
        "clusters": [{"name": "none", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "none", "user": {}}], "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}]}))
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(
        {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig), "in_cluster": False}}))
    line = f"[base] connecting to postgres://kiln:{password}@db:5432/kiln"
    assert password in redact(line)  # nothing has registered it yet
    op = KilnStageOperator(task_id="ingest", stage="ingest", execution="kubernetes", connections=["pod_source"],
                           arguments=["--dataset", "x", "--data-root", str(tmp_path), "--ds", "2026-03-01"],
                           result_path=str(tmp_path / "ingest.json"), timeout_minutes=1)
    with pytest.raises(MaxRetryError, match=f"port={port}"):  # KPO looked for the pod: the stage's pod would start here
        op.execute(context={})
    assert password not in redact(line), "the pod's log line would reach the task log with the password"
