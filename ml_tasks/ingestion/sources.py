"""Where a dataset's rows come from: each source yields the run day's rows as Arrow record batches.

Batches stream (bounded memory at any source size): files through ``pyarrow.dataset`` with the day
selected by a filter on ``date_column`` or by ``ds=YYYY-MM-DD`` folders; PostgreSQL through ADBC,
whose driver reads the result with ``COPY ... TO STDOUT (FORMAT binary)`` straight into Arrow; the
scikit-learn sets from the wheel; the synthetic transactions from ``ml_tasks.ingestion.synthetic``.
"""

from __future__ import annotations

import csv
import glob
import os
import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds

from ml_tasks.core.atomic import content_digest
from ml_tasks.core.errors import KilnError
from ml_tasks.core.processes import connection_fields, connection_variable

BATCH_ROWS = 65_536
PG_BATCH_BYTES = 16 << 20  # the ADBC driver's batch size hint: bounds memory per batch


# --- files ------------------------------------------------------------------------------------------------
def format_of(files: list[str], declared: str | None) -> str:
    if declared:
        return declared
    suffixes = {Path(f).suffix.lower() for f in files}
    if suffixes <= {".csv"}:
        return "csv"
    if suffixes <= {".parquet", ".pq", ""}:
        return "parquet"
    raise KilnError(f"cannot tell the format of {', '.join(sorted(suffixes))} files; set source.format (csv or parquet)")


def resolve_files(path: str, ds: str | None) -> list[str]:
    """The files a file source reads for ``ds``: a file, a glob, or a folder (only ``ds=<ds>/`` when it has such folders)."""
    if any(ch in path for ch in "*?["):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
        if not files:
            raise KilnError(f"input path {path!r} matches no files")
        return files
    p = Path(path)
    if not p.exists():
        raise KilnError(f"input path {path!r} does not exist")
    if p.is_file():
        return [str(p)]
    if any(p.glob("ds=*")):
        if ds is None:
            raise KilnError(f"{path} has ds=YYYY-MM-DD folders: name a partition date")
        p = p / f"ds={ds}"
        if not p.is_dir():
            raise KilnError(f"no data for {ds} in {path} (no folder ds={ds})")
    files = sorted(str(f) for f in p.rglob("*") if f.is_file() and not f.name.startswith(("_", ".")))
    if not files:
        raise KilnError(f"input folder {p} has no data files")
    return files


def file_digest(path: str, ds: str | None) -> str:
    return content_digest([Path(f) for f in resolve_files(path, ds)])


def _csv_header(path: str) -> list[str]:
    with open(path, newline="") as fh:
        return next(csv.reader(fh), [])


def _day_filter(schema: pa.Schema, column: str, ds: str) -> pds.Expression:
    """Rows whose ``column`` falls on ``ds`` (a date, a timestamp of any unit or zone, or an ISO string)."""
    if column not in schema.names:
        raise KilnError(f"date_column {column!r} is not a column of the source (columns: {', '.join(schema.names)})")
    kind, day = schema.field(column).type, date.fromisoformat(ds)
    field = pds.field(column)
    if pa.types.is_date(kind):
        return field == pa.scalar(day, kind)
    if pa.types.is_timestamp(kind):
        lo = pa.scalar(pa.scalar(day, pa.date32()).cast(pa.timestamp("us")).as_py(), pa.timestamp(kind.unit, kind.tz))
        hi = pa.scalar(pa.scalar(day + timedelta(days=1), pa.date32()).cast(pa.timestamp("us")).as_py(),
                       pa.timestamp(kind.unit, kind.tz))
        return (field >= lo) & (field < hi)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pc.starts_with(field, ds)
    raise KilnError(f"date_column {column!r} has type {kind}; expected a date, a timestamp or an ISO date string")


def read_files(path: str, fmt: str | None, columns: list[str], numeric: list[str], date_column: str | None,
               ds: str | None, as_text: frozenset[str] = frozenset()) -> Iterator[pa.RecordBatch]:
    """Stream the selected rows of a file source. CSV numeric columns are parsed as numbers, except those
    in ``as_text`` (kept as text so validation can name the bad value instead of the parser failing)."""
    files = resolve_files(path, ds)
    kind = format_of(files, fmt)
    if kind == "csv":
        import pyarrow.csv as pcsv

        types = {c: (pa.string() if c in as_text else pa.float64()) for c in numeric}
        file_format = pds.CsvFileFormat(convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=True))
    else:
        file_format = pds.ParquetFileFormat()
    dataset = pds.dataset(files, format=file_format)
    wanted = [c for c in columns if c in dataset.schema.names]
    where = _day_filter(dataset.schema, date_column, ds) if date_column and ds else None
    yield from dataset.to_batches(columns=wanted, filter=where, batch_size=BATCH_ROWS)


def bad_csv_column(exc: pa.ArrowInvalid, path: str, fmt: str | None, ds: str | None) -> str | None:
    """The column a CSV conversion error is about (``In CSV column #3: ...``), else None."""
    match = re.search(r"CSV column #(\d+)", str(exc))
    if not match:
        return None
    files = resolve_files(path, ds)
    if format_of(files, fmt) != "csv":
        return None
    header = _csv_header(files[0])
    index = int(match.group(1))
    return header[index] if index < len(header) else None


# --- PostgreSQL -----------------------------------------------------------------------------------------------
def connection_uri(conn_id: str) -> str:
    """A libpq URI for an Airflow connection handed to the stage as ``AIRFLOW_CONN_<ID>`` (URI or JSON form).

    The operator exports the connection it resolved through Airflow; pods get it from the
    ``kiln-connections`` Secret. The value is never written to argv or logs.
    """
    var = connection_variable(conn_id)
    value = os.environ.get(var)
    if not value:
        raise KilnError(f"connection {conn_id!r} is not available to this stage: define it in Airflow "
                        f"(Admin > Connections) or set {var}")
    if value.lstrip().startswith("{"):
        c = connection_fields(value, var)
        auth = quote(c.get("login") or "", safe="") + (":" + quote(c["password"], safe="") if c.get("password") else "")
        host = f"{c.get('host') or ''}" + (f":{c['port']}" if c.get("port") else "")
        value = f"postgresql://{auth + '@' if auth else ''}{host}/{quote(c.get('schema') or '', safe='')}"
    # Airflow writes postgres://; drop Airflow-only query fields libpq would reject.
    value = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", value)
    return re.sub(r"[?&]__extra__=[^&]*", "", value)


def quote_ident(name: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def postgres_sql(table: str | None, query: str | None, columns: list[str], date_column: str | None, ds: str | None) -> str:
    """The day's SELECT: only the declared columns, only rows with ``ds <= date_column < ds + 1 day``."""
    source = quote_ident(table) if table else f"({query}) AS kiln_source"
    sql = f"SELECT {', '.join(quote_ident(c) for c in columns)} FROM {source}"
    if date_column and ds:
        day = date.fromisoformat(ds)  # ds is checked YYYY-MM-DD: safe as a literal, and literals keep the COPY path
        sql += (f" WHERE {quote_ident(date_column)} >= DATE '{day.isoformat()}'"
                f" AND {quote_ident(date_column)} < DATE '{(day + timedelta(days=1)).isoformat()}'")
    return sql


def read_postgres(uri: str, sql: str) -> Iterator[pa.RecordBatch]:
    import adbc_driver_postgresql.dbapi as adbc_pg

    try:
        conn = adbc_pg.connect(uri)
    except Exception as exc:  # the driver's own error types; the message names host and reason
        raise KilnError(f"cannot connect to PostgreSQL: {exc}") from None
    with conn, conn.cursor() as cur:
        cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(PG_BATCH_BYTES)})
        try:
            cur.execute(sql)
        except Exception as exc:
            raise KilnError(f"PostgreSQL rejected the source query: {exc}") from None
        yield from cur.fetch_record_batch()


# --- scikit-learn's bundled sets -------------------------------------------------------------------------------
def read_sklearn(name: str) -> pa.Table:
    """The set as shipped in the wheel: a ``row_id`` key, its feature columns (spaces made ``_``), ``target``."""
    from sklearn import datasets

    loader = {"breast_cancer": datasets.load_breast_cancer, "diabetes": datasets.load_diabetes}[name]
    bunch = loader(as_frame=True)
    frame = bunch.frame.copy()
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    frame.insert(0, "row_id", range(len(frame)))
    return pa.Table.from_pandas(frame, preserve_index=False)
