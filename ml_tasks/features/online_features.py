"""The online features: each entity's newest row (its key, event time in epoch ms and raw feature values).

One definition for both paths that fill the Ignite cache: the batch stage (``latest_features``, over a raw
partition) and the streaming job (``ml_tasks.features.streaming``, over each micro-batch of events) call
``newest_per_entity`` and ``encode``, so the same events give the same cache entry either way.
"Newest" is the greatest event time; rows with the same event time are ordered by their feature values,
so the choice never depends on file or arrival order. An entry is a JSON object; ``freshness`` gives the
same order over entries, and a streamed write replaces an entry only when it is newer (``is_newer``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from ml_tasks.core.atomic import tmp_sibling
from ml_tasks.core.errors import KilnError
from ml_tasks.ingestion.schema import DatasetSchema

if TYPE_CHECKING:
    import pandas as pd


def online_columns(schema: DatasetSchema) -> list[str]:
    return [schema.key, *([schema.timestamp] if schema.timestamp else []), *schema.features]


def newest_per_entity(table: pa.Table, schema: DatasetSchema) -> pd.DataFrame:
    """One row per entity, its newest; the event time as epoch milliseconds (JSON-friendly)."""
    columns = online_columns(schema)
    frame = table.select(columns).to_pandas()
    if schema.timestamp:
        frame[schema.timestamp] = frame[schema.timestamp].astype("datetime64[us]").astype("int64") // 1000
    # Ties on the event time are broken by the values themselves: deterministic whatever the input order.
    frame = frame.sort_values(columns, kind="stable", na_position="first")
    return frame.drop_duplicates(schema.key, keep="last").reset_index(drop=True)


# msgspec writes JSON in C (5x json.dumps per row, which was a third of a warm) and writes NaN, a missing value, as
# null; a value JSON has no type for (a Decimal) is written as its str.
_ENCODER = msgspec.json.Encoder(enc_hook=str)


def encode(row: dict[str, Any]) -> str:
    """An entry's JSON; NaN (a missing value) becomes null."""
    return _ENCODER.encode(row).decode()


def freshness(entry: str | None) -> tuple[Any, ...]:
    """An entry's order among the versions of one entity, the order ``newest_per_entity`` keeps the last of:
    event time, then the feature values (a missing value first). Entries list key, event time, then features."""
    if entry is None:  # before every entry, one stamped before 1970 (a negative event time) too
        return ()
    _key, event_time, *features = json.loads(entry).values()
    return (event_time if event_time is not None else -1, *((v is not None, v) for v in features))


def is_newer(candidate: str, current: str | None) -> bool:
    return freshness(candidate) > freshness(current)


def latest_features(raw_dir: Path, out_path: Path) -> dict[str, Any]:
    """Write one row per entity (its newest by event time) with the raw feature columns."""
    schema = DatasetSchema.load(raw_dir)
    latest = newest_per_entity(pq.read_table(raw_dir, columns=online_columns(schema)), schema)
    if latest.empty:
        raise KilnError(f"raw partition {raw_dir} is empty; no online features to publish")
    tmp = tmp_sibling(out_path)
    latest.to_parquet(tmp, index=False)
    tmp.rename(out_path)
    return {"online_features": str(out_path), "entities": len(latest), "key": schema.key}
