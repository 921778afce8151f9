"""Draft a dataset spec from a sample of the data, for a person to review (like TFX's SchemaGen).

Roles are inferred from the sample's Arrow types and values: numbers are numeric features, text with
few distinct values is categorical, a column of unique ids is the key, a date or timestamp is the event
time; the task follows from the label (only 0 and 1: binary, other numbers: regression). Text with
many distinct values is listed under ``ignore``: it is neither a category nor a number.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import yaml

from ml_tasks.core.errors import KilnError
from ml_tasks.core.spec import parse_spec
from ml_tasks.ingestion import sources
from ml_tasks.ingestion.schema import is_number, is_text

MAX_CATEGORIES = 50  # more distinct values than this (or than half the sample) is not a category
ID_NAMES = ("id", "key", "uuid")


def _sample(source: str, rows: int) -> tuple[pa.Table, dict[str, Any]]:
    """A sample of ``source`` and the spec's ``source`` block that reads it."""
    kind, _, rest = source.partition(":")
    if kind == "sklearn" and rest:
        return sources.read_sklearn(rest).slice(0, rows), {"kind": "sklearn", "dataset": rest}
    if kind == "synthetic" and rest:
        from ml_tasks.ingestion.synthetic import generate_chunk

        return generate_chunk(date.today().isoformat(), 0, rows, max(1_000, rows // 4)), {"kind": "synthetic", "generator": rest}
    if kind == "postgres" and rest:
        conn_id, _, table = rest.partition("/")
        if not table:
            raise KilnError("a PostgreSQL source is written postgres:CONN_ID/SCHEMA.TABLE")
        sql = f"SELECT * FROM {sources.quote_ident(table)} LIMIT {int(rows)}"
        batches = list(sources.read_postgres(sources.connection_uri(conn_id), sql))
        return pa.Table.from_batches(batches), {"kind": "postgres", "conn_id": conn_id, "table": table}
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(str(f) for f in path.rglob("*") if f.is_file() and not f.name.startswith(("_", ".")))
    else:
        files = sources.resolve_files(str(path), None)
    if not files:
        raise KilnError(f"no data files at {source}")
    fmt = sources.format_of(files, None)  # as ingest will read them
    partitioning = "hive" if path.is_dir() and any(path.glob("ds=*")) else None
    table = pds.dataset(files, format=fmt, partitioning=partitioning).head(rows)
    absolute = str(path.resolve()) if not any(ch in source for ch in "*?[") else str(Path(source).expanduser().absolute())
    return table, {"kind": "file", "path": absolute, **({"format": fmt} if fmt == "csv" and not absolute.endswith(".csv") else {})}


def _distinct(col: pa.ChunkedArray) -> int:
    return len(pc.unique(col.drop_null()))


def _infer_key(table: pa.Table, exclude: set[str]) -> str:
    """An id-named column of unique values, else the first text or integer column of unique values."""
    unique = [c for c in table.column_names if c not in exclude and
              (is_text(table.schema.field(c).type) or pa.types.is_integer(table.schema.field(c).type))
              and table.column(c).null_count == 0 and _distinct(table.column(c)) == table.num_rows]
    named = [c for c in unique if c.lower() in ID_NAMES or c.lower().endswith(("_id", "_key"))]
    if named or unique:
        return (named or unique)[0]
    # Recurring entities (a card with many transactions) are not unique per row: an id-named text column then.
    texts = [c for c in table.column_names if c not in exclude and is_text(table.schema.field(c).type)
             and (c.lower() in ID_NAMES or c.lower().endswith(("_id", "_key")))]
    if texts:
        return texts[0]
    raise KilnError("no column looks like an entity id (unique text or integer values); name it with --key")


def _infer_task(col: pa.ChunkedArray, label: str) -> str:
    kind = col.type
    if pa.types.is_boolean(kind):
        return "binary"
    if not is_number(kind):
        raise KilnError(f"label {label!r} holds {kind}, not numbers: map it to 0/1 (binary) or use a numeric label")
    values = set(pc.unique(col.drop_null()).to_pylist())
    return "binary" if values <= {0, 1} else "regression"


def infer_spec(source: str, *, label: str, key: str | None = None, task: str | None = None, timestamp: str | None = None,
               date_column: str | None = None, sample_rows: int = 10_000) -> str:
    """The YAML of a spec for ``source`` (checked by the same schema as any spec), with a comment on how it was drafted."""
    table, source_block = _sample(source, sample_rows)
    if table.num_rows == 0:
        raise KilnError(f"{source} has no rows to infer a spec from")
    for name, what in ((label, "label"), (key, "key"), (timestamp, "timestamp"), (date_column, "date column")):
        if name is not None and name not in table.column_names:
            raise KilnError(f"{what} column {name!r} is not in {source} (columns: {', '.join(table.column_names)})")
    task = task or _infer_task(table.column(label), label)
    key = key or _infer_key(table, {label})
    if date_column:
        if source_block["kind"] not in ("file", "postgres"):
            raise KilnError(f"--date-column applies to file and postgres sources, not {source_block['kind']}")
        source_block["date_column"] = date_column
    times = [c for c in table.column_names if c not in (label, key) and
             (pa.types.is_timestamp(table.schema.field(c).type) or pa.types.is_date(table.schema.field(c).type))]
    timestamp = timestamp or (times[0] if times else None)
    numeric, categorical, ignore = [], [], []
    for name in table.column_names:
        if name in (label, key, timestamp):
            continue
        kind, col = table.schema.field(name).type, table.column(name)
        if name == date_column:
            ignore.append(name)  # it selects a run's rows; it is not a feature
        elif is_number(kind):
            numeric.append(name)
        elif is_text(kind) and _distinct(col) <= min(MAX_CATEGORIES, max(2, table.num_rows // 2)):
            categorical.append(name)
        else:
            ignore.append(name)
    body: dict[str, Any] = {"task": task, "source": source_block, "key": key, "label": label}
    if timestamp:
        body["timestamp"] = timestamp
    body["features"] = {k: v for k, v in (("numeric", numeric), ("categorical", categorical)) if v}
    if ignore:
        body["ignore"] = ignore
    text = yaml.safe_dump(body, sort_keys=False, width=110)
    parse_spec(text, "draft", f"the spec drafted from {source}", Path.cwd())  # a draft must load as it is
    header = (f"# Drafted by `python -m ml_tasks infer-dataset` from {source} ({table.num_rows} sample rows).\n"
              "# Review the roles; add `settings:` to change the defaults of run settings (ml_tasks/core/run_settings.py).\n")
    return header + text
