"""Ingest: write one dataset's raw Parquet partition for a day, from the source its spec declares.

Rows stream from the source (``ml_tasks.sources``) in batches into one Parquet file, so memory stays
bounded whatever the source's size. Only the spec's columns are kept. A column is converted to the
type its role is stored as (``DatasetSchema.storage_type``) only where that cannot fail or lose
anything (integers to float for numeric features, ids to text); anything else is written as it came,
and validation, not ingest, names the column and the rule it breaks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ml_tasks import sources
from ml_tasks.atomic import atomic_dir, link_snapshot, read_json, write_json
from ml_tasks.errors import KilnError
from ml_tasks.schema import DatasetSchema, is_number, is_text
from ml_tasks.spec import DatasetSpec, FileSource, PostgresSource, SklearnSource, SyntheticSource

log = logging.getLogger(__name__)
PART_FILE = "part-00000.parquet"
REQUEST_FILE = "_ingest.json"  # what the partition was ingested from ('_' keeps Arrow and Spark from reading it)


def storage_conversions(schema: DatasetSchema, source: pa.Schema) -> dict[str, pa.DataType]:
    """Column -> type for the conversions that cannot fail; columns not named are written as they came."""
    out: dict[str, pa.DataType] = {}
    for name in schema.columns:
        if name not in source.names:
            continue
        have, want = source.field(name).type, schema.storage_type(name)
        if have == want:
            continue
        to_text = want == pa.string() and (is_number(have) or is_text(have))
        to_float = pa.types.is_floating(want) and is_number(have)
        to_time = pa.types.is_timestamp(want) and (pa.types.is_timestamp(have) or pa.types.is_date(have))
        if pa.types.is_null(have) or to_text or to_float or to_time:
            out[name] = want
        elif pa.types.is_integer(want) and (pa.types.is_integer(have) or pa.types.is_boolean(have)):
            out[name] = pa.int64() if pa.types.is_integer(have) and have.bit_width > 32 else want
    return out


def write_batches(batches: Iterator[pa.RecordBatch], schema: DatasetSchema, out_file: Path) -> int:
    """Write the spec's columns of ``batches`` to one Parquet file, converted by ``storage_conversions``."""
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        for batch in batches:
            table = pa.Table.from_batches([batch])
            table = table.select([c for c in schema.columns if c in table.column_names])
            if writer is None:
                conversions = storage_conversions(schema, table.schema)
                target = pa.schema([pa.field(f.name, conversions.get(f.name, f.type)) for f in table.schema])
                writer = pq.ParquetWriter(out_file, target, compression="zstd")
            table = table.cast(target)
            writer.write_table(table)
            rows += table.num_rows
        if writer is None:  # no batch at all: an empty partition with the contract's columns
            pq.write_table(schema.arrow_schema().empty_table(), out_file)
    finally:
        if writer is not None:
            writer.close()
    return rows


def _file_batches(spec: DatasetSpec, path: str, fmt: str | None, date_column: str | None, ds: str,
                  write: Callable[[Iterator[pa.RecordBatch]], int]) -> int:
    """Write a file source; a CSV value that is not a number in a numeric column turns that column to text and
    the write starts over, so validation gets to name the column and the value."""
    as_text: set[str] = set()
    numeric = [*spec.features.numeric, *([] if spec.is_binary else [spec.label])]
    wanted = [*spec.columns, *([date_column] if date_column and date_column not in spec.columns else [])]
    while True:
        try:
            return write(sources.read_files(path, fmt, wanted, numeric, date_column, ds, frozenset(as_text)))
        except pa.ArrowInvalid as exc:
            column = sources.bad_csv_column(exc, path, fmt, ds)
            if column is None or column in as_text:
                raise KilnError(f"cannot read {path}: {exc}") from None
            log.warning("column %s of %s has values that are not numbers; kept as text for validation", column, path)
            as_text.add(column)


def ingest_request(spec: DatasetSpec, ds: str, rows: int, input_path: str | None) -> dict[str, Any]:
    """What determines the partition's content; ``always_read`` when only reading the source can tell (a database)."""
    request: dict[str, Any] = {"ds": ds, "source": spec.source.model_dump(mode="json"), "schema": list(spec.columns),
                               "task": spec.task}
    if input_path or isinstance(spec.source, FileSource):
        path = input_path or spec.source_path()
        date_column = spec.source.date_column if isinstance(spec.source, FileSource) else None
        return {**request, "input_path": path, "sha256": sources.file_digest(path, None if date_column else ds)}
    if isinstance(spec.source, SyntheticSource):
        from ml_tasks.synthetic import GENERATOR_VERSION

        return {**request, "rows": rows, "generator": GENERATOR_VERSION}
    if isinstance(spec.source, SklearnSource):
        import sklearn

        return {**request, "sklearn": sklearn.__version__}
    return {**request, "always_read": True}


def write_partition(spec: DatasetSpec, ds: str, out_dir: Path, rows: int, input_path: str | None) -> int:
    out_file = out_dir / PART_FILE

    def write(batches: Iterator[pa.RecordBatch]) -> int:
        return write_batches(batches, spec.schema, out_file)

    source = spec.source
    if input_path:  # the form's one-off override: a file, folder or glob with the spec's columns
        count = _file_batches(spec, input_path, None, getattr(source, "date_column", None), ds, write)
    elif isinstance(source, FileSource):
        count = _file_batches(spec, spec.source_path(), source.format, source.date_column, ds, write)
    elif isinstance(source, PostgresSource):
        sql = sources.postgres_sql(source.table, source.query, list(spec.columns), source.date_column, ds)
        count = write(sources.read_postgres(sources.connection_uri(source.conn_id), sql))
    elif isinstance(source, SklearnSource):
        count = write(iter(sources.read_sklearn(source.dataset).to_batches()))
    else:
        from ml_tasks.synthetic import transactions

        count = write(transactions(ds, rows))
    spec.schema.save(out_dir)
    return count


def ingest(spec: DatasetSpec, ds: str, raw_dir: Path, rows: int = 20_000, input_path: str | None = None,
           snapshot_dir: Path | None = None) -> dict[str, object]:
    """Write ``spec``'s raw partition for ``ds`` atomically into ``raw_dir``; return a small summary.

    The same request again leaves the partition as it is (another run of the day may be reading it);
    ``snapshot_dir`` receives this run's own hard-linked view of the partition it ingested.
    """
    request = ingest_request(spec, ds, rows, input_path)
    reused = (not request.get("always_read") and (raw_dir / REQUEST_FILE).exists()
              and read_json(raw_dir / REQUEST_FILE) == request)
    if not reused:
        with atomic_dir(raw_dir) as tmp:
            write_partition(spec, ds, tmp, rows, input_path)
            write_json(tmp / REQUEST_FILE, request)
    if snapshot_dir is not None:
        link_snapshot(raw_dir, snapshot_dir)
    read_from = snapshot_dir or raw_dir
    count = sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(read_from.glob("*.parquet")))
    log.info("%s %d rows of %s from %s in %s", "kept the identical" if reused else "ingested", count, spec.name,
             spec.source.kind, raw_dir)
    return {"dataset": spec.name, "ds": ds, "raw_dir": str(raw_dir), "rows": count, "source": spec.source.kind,
            "rewritten": not reused}
