"""KilnStageOperator running real stage processes: a hung stage is killed with its process group."""

from __future__ import annotations

import os
import time

import pytest
from airflow.sdk.exceptions import AirflowException


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_hung_stage_is_killed_with_its_process_group_after_its_timeout(data_root, tmp_path):
    from kiln.operators.stage import KilnStageOperator

    fifo = tmp_path / "hangs.csv"
    os.mkfifo(fifo)  # opening it for reading blocks forever: a source that never answers (a hung mount)
    op = KilnStageOperator(task_id="ingest", stage="ingest", execution="local", timeout_minutes=0.05,
                           arguments=["--data-root", str(data_root), "--ds", "2026-03-01", "--source", "file",
                                      "--input-path", str(fifo)],
                           result_path=str(tmp_path / "result.json"))
    started = time.monotonic()
    with pytest.raises(AirflowException, match=r"stage ingest ran longer than its timeout of 0.05 min; its process group \d+ was killed"):
        op.execute(context={})
    assert time.monotonic() - started < 60
    assert op._proc is not None and not group_alive(op._proc.pid)
    assert not (data_root / "raw" / "ds=2026-03-01").exists()


def test_a_stage_that_ends_before_its_timeout_keeps_its_own_outcome(data_root, tmp_path):
    """Skip (exit 99) and bad input (exit 2) are reported as such, never as a timeout."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
    from kiln.operators.stage import KilnStageOperator

    def stage(name: str, *args: str) -> KilnStageOperator:
        return KilnStageOperator(task_id=name, stage=name, execution="local", timeout_minutes=5,
                                 arguments=["--data-root", str(data_root), "--ds", "2026-03-01", *args],
                                 result_path=str(tmp_path / f"{name}.json"))

    with pytest.raises(AirflowSkipException, match="Apache Singa is not installed"):
        stage("train-singa").execute(context={})
    with pytest.raises(AirflowFailException, match="rejected its input: .*input_path '/nowhere.csv' does not exist"):
        stage("ingest", "--source", "file", "--input-path", "/nowhere.csv").execute(context={})
