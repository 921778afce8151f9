"""The online feature table: each entity's most recent row of a raw partition, as served for predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ml_tasks.atomic import tmp_sibling
from ml_tasks.errors import KilnError
from ml_tasks.schema import DatasetSchema


def latest_features(raw_dir: Path, out_path: Path) -> dict[str, Any]:
    """Write one row per entity (its latest by timestamp) with the raw feature columns."""
    schema = DatasetSchema.load(raw_dir)
    columns = [schema.key, *([schema.timestamp] if schema.timestamp else []), *schema.features]
    frame = pq.read_table(raw_dir, columns=columns).to_pandas()
    if frame.empty:
        raise KilnError(f"raw partition {raw_dir} is empty; no online features to publish")
    if schema.timestamp:
        frame = frame.sort_values([schema.key, schema.timestamp], kind="stable")
    latest = frame.drop_duplicates(schema.key, keep="last").reset_index(drop=True)
    if schema.timestamp:
        latest[schema.timestamp] = latest[schema.timestamp].astype("int64") // 1000  # epoch ms, JSON-friendly
    tmp = tmp_sibling(out_path)
    latest.to_parquet(tmp, index=False)
    tmp.rename(out_path)
    return {"online_features": str(out_path), "entities": len(latest), "key": schema.key}
