"""KilnStageOperator running real stage processes: a hung stage is killed with its process group."""

from __future__ import annotations

import os
import shutil
import socket
import time

import pytest
from airflow.sdk.exceptions import AirflowException

from tests.conftest import PROJECT_ROOT


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
                           result_path=str(tmp_path / "result.json"))
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
