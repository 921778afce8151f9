"""Turn a DAG run's params and dates into the partition and paths every task uses."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

from ml_tasks.layout import Layout, check_ds
from ml_tasks.params import check_run_params


def resolve_partition(partition_date: str | None, logical_date: datetime | None, run_after: datetime | None) -> str:
    """The param wins; else the logical date; else (manual or asset-triggered run) the run's start date."""
    if partition_date:
        return check_ds(partition_date)
    moment = logical_date or run_after
    return (moment.date() if moment else date.today()).isoformat()


def plan_run(params: dict[str, Any], data_root: str, logical_date: datetime | None, run_after: datetime | None,
             run_id: str = "manual") -> dict[str, Any]:
    merged = check_run_params(params)
    ds = resolve_partition(merged["partition_date"], logical_date, run_after)
    layout = Layout(Path(data_root).resolve(), ds, run_id)
    return {**layout.as_dict(), "model_name": merged["model_name"]}
