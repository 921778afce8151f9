"""Turn a DAG run's params and dates into the partition and paths every task uses."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from ml_tasks.core.layout import Layout, check_ds
from ml_tasks.core.run_settings import resolve
from ml_tasks.core.spec import load_named


def resolve_partition(partition_date: str | None, logical_date: datetime | None, run_after: datetime | None) -> str:
    """The param wins; else the logical date; else (manual or asset-triggered run) the run's start date."""
    if partition_date:
        return check_ds(partition_date)
    moment = logical_date or run_after
    return (moment.date() if moment else date.today()).isoformat()


def plan_run(dataset: str, params: dict[str, Any], data_root: str, logical_date: datetime | None,
             run_after: datetime | None, run_id: str = "manual") -> dict[str, Any]:
    """Check the run's params against the dataset's spec (naming a bad one) and resolve its partition and paths."""
    spec = load_named(dataset)
    if params.get("model_name") == spec.registry_name:  # a run started before the model left the form names its own
        params = {k: v for k, v in params.items() if k != "model_name"}
    settings = resolve(spec, params, where="param")
    ds = spec.check_partition(resolve_partition(settings["partition_date"], logical_date, run_after))
    if settings.get("input_path"):  # refused before any stage runs (ingest checks again, on what it reads)
        spec.check_input_path(settings["input_path"])
    layout = Layout.at(data_root, spec.name, ds, run_id)
    return {**layout.as_dict(), "model_name": spec.registry_name, "key": spec.key,
            "feature_cache": spec.feature_cache, "task": spec.task}
