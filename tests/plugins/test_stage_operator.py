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
