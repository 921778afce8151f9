"""Ingest: write one dataset's raw Parquet partition for a day, from the source its spec declares.

Rows stream from the source (``ml_tasks.ingestion.sources``) in batches into one Parquet file, so memory stays
bounded whatever the source's size. Only the spec's columns are kept. A column is converted to the
type its role is stored as (``DatasetSchema.storage_type``) only where that cannot fail or lose
anything (integers to float for numeric features, ids to text); anything else is written as it came,
and validation, not ingest, names the column and the rule it breaks. Rows that break the spec's limits
(``ml_tasks.ingestion.event_rules``: an id or a text value too long, an event time after its day ended) are set
aside in ``PartitionFiles.rejected`` with the reason, as the stream dead-letters the same events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ml_tasks.core.atomic import atomic_dir, link_snapshot, read_json, write_json
from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import PartitionFiles
from ml_tasks.core.run_settings import SETTINGS
from ml_tasks.core.spec import DatasetSpec, FileSource, PostgresSource, SklearnSource, SyntheticSource
from ml_tasks.ingestion import sources
from ml_tasks.ingestion.event_rules import REASON_COLUMN, received_for_partition, rule_of, screen
from ml_tasks.ingestion.schema import DatasetSchema, is_number, is_text

log = logging.getLogger(__name__)


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


def write_batches(batches: Iterator[pa.RecordBatch], schema: DatasetSchema, out: PartitionFiles,
                  screen: Callable[[pa.Table], pa.Array] | None = None) -> int:
    """Write the spec's columns of ``batches`` to one Parquet file, converted by ``storage_conversions``; rows
    ``screen`` gives a reason for go to ``out.rejected`` instead, with that reason."""
    writer: pq.ParquetWriter | None = None
    rejected: pq.ParquetWriter | None = None
    rows = 0
    try:
        for batch in batches:
            table = pa.Table.from_batches([batch])
            table = table.select([c for c in schema.columns if c in table.column_names])
            if writer is None:
                conversions = storage_conversions(schema, table.schema)
                target = pa.schema([pa.field(f.name, conversions.get(f.name, f.type)) for f in table.schema])
                writer = pq.ParquetWriter(out.data, target, compression="zstd")
            table = table.cast(target)
            reason = screen(table) if screen is not None else None
            if reason is not None and reason.null_count < len(reason):
                set_aside = pc.is_valid(reason)
                if rejected is None:
                    rejected = pq.ParquetWriter(out.rejected,
                                                target.append(pa.field(REASON_COLUMN, pa.string())), compression="zstd")
                rejected.write_table(table.filter(set_aside).append_column(REASON_COLUMN, reason.filter(set_aside)))
                table = table.filter(pc.invert(set_aside))
            writer.write_table(table)
            rows += table.num_rows
        if writer is None:  # no batch at all: an empty partition with the contract's columns
            pq.write_table(schema.arrow_schema().empty_table(), out.data)
    finally:
        for open_writer in (writer, rejected):
            if open_writer is not None:
                open_writer.close()
    return rows


def rejected_rows(partition: Path) -> dict[str, Any]:
    """The rows ingest set aside in a partition: how many, per rule, and the first reason of each rule."""
    path = PartitionFiles(partition).rejected
    if not path.exists():
        return {"rejected": 0, "rejected_by_rule": {}}
    by_rule: dict[str, int] = {}
    examples: dict[str, str] = {}
    for reason in pq.read_table(path, columns=[REASON_COLUMN]).column(REASON_COLUMN).to_pylist():
        rule = rule_of(reason)
        by_rule[rule] = by_rule.get(rule, 0) + 1
        examples.setdefault(rule, reason)
    return {"rejected": sum(by_rule.values()), "rejected_by_rule": by_rule, "rejected_examples": examples,
            "rejected_file": str(path)}


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
                               "task": spec.task, "limits": spec.limits.model_dump()}
    if input_path or isinstance(spec.source, FileSource):
        path = input_path or spec.source_path()
        date_column = spec.source.date_column if isinstance(spec.source, FileSource) else None
        return {**request, "input_path": path, "sha256": sources.file_digest(path, None if date_column else ds)}
    if isinstance(spec.source, SyntheticSource):
        from ml_tasks.ingestion.synthetic import GENERATOR_VERSION

        return {**request, "rows": rows, "generator": GENERATOR_VERSION}
    if isinstance(spec.source, SklearnSource):
        import sklearn

        return {**request, "sklearn": sklearn.__version__}
    return {**request, "always_read": True}


def write_partition(spec: DatasetSpec, ds: str, out_dir: Path, rows: int, input_path: str | None) -> int:
    out = PartitionFiles(out_dir)
    received = received_for_partition(ds)

    def write(batches: Iterator[pa.RecordBatch]) -> int:
        return write_batches(batches, spec.schema, out, lambda t: screen(t, spec.schema, spec.limits, received))

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
        from ml_tasks.ingestion.synthetic import transactions

        count = write(transactions(ds, rows))
    spec.schema.save(out_dir)
    return count


def ingest(spec: DatasetSpec, ds: str, raw_dir: Path, rows: int = SETTINGS["rows"].default,
           input_path: str | None = SETTINGS["input_path"].default,
           snapshot_dir: Path | None = None) -> dict[str, object]:
    """Write ``spec``'s raw partition for ``ds`` atomically into ``raw_dir``; return a small summary.

    The same request again leaves the partition as it is (another run of the day may be reading it);
    ``snapshot_dir`` receives this run's own hard-linked view of the partition it ingested.
    """
    request = ingest_request(spec, ds, rows, input_path)
    published = PartitionFiles(raw_dir)
    reused = (not request.get("always_read") and published.request.exists()
              and read_json(published.request) == request)
    if not reused:
        with atomic_dir(raw_dir) as tmp:
            write_partition(spec, ds, tmp, rows, input_path)
            write_json(PartitionFiles(tmp).request, request)
    if snapshot_dir is not None:
        link_snapshot(raw_dir, snapshot_dir)
    read_from = snapshot_dir or raw_dir
    count = pq.ParquetFile(PartitionFiles(read_from).data).metadata.num_rows
    rejected = rejected_rows(read_from)
    log.info("%s %d rows of %s from %s in %s", "kept the identical" if reused else "ingested", count, spec.name,
             spec.source.kind, raw_dir)
    if rejected["rejected"]:
        log.warning("set aside %d rows that break the spec's limits (%s), e.g. %s; they are in %s", rejected["rejected"],
                    rejected["rejected_by_rule"], next(iter(rejected["rejected_examples"].values())),
                    rejected["rejected_file"])
    return {"dataset": spec.name, "ds": ds, "raw_dir": str(raw_dir), "rows": count, "source": spec.source.kind,
            "rewritten": not reused, "rejected": rejected["rejected"], "rejected_by_rule": rejected["rejected_by_rule"]}
