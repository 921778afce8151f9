"""Validate a raw partition against its dataset's contract: columns and their types by role, row count,
missing and non-finite values, the label for the task, drift. A failure names the column and the rule,
and the report is written whatever fails."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ml_tasks.core.atomic import write_json
from ml_tasks.core.errors import KilnError, ValidationFailed
from ml_tasks.core.layout import PartitionFiles
from ml_tasks.core.run_settings import SETTINGS
from ml_tasks.ingestion.schema import DatasetSchema, is_number, is_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Thresholds:
    min_rows: int = SETTINGS["min_rows"].default
    max_null_ratio: float = SETTINGS["max_null_ratio"].default
    min_positive_rate: float = SETTINGS["min_positive_rate"].default
    max_positive_rate: float = SETTINGS["max_positive_rate"].default
    max_psi: float = SETTINGS["max_psi"].default


def read_partition(raw_dir: Path) -> tuple[pa.Table, DatasetSchema]:
    if not PartitionFiles(raw_dir).schema.exists():
        raise KilnError(f"raw partition {raw_dir} is missing (no {PartitionFiles(raw_dir).schema.name}); did ingest run?")
    return pq.read_table(raw_dir, schema=None), DatasetSchema.load(raw_dir)


def _example_non_number(col: pa.ChunkedArray) -> str:
    """The first value of a text column that does not parse as a number (for the failure message)."""
    text = col.drop_null().cast(pa.string())  # dictionary-encoded text too
    bad = pc.invert(pc.match_substring_regex(text, r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$|^\s*$"))
    found = pc.filter(text, bad)
    if len(found) == 0:
        return "every value looks numeric"
    first = pc.index(bad, True).as_py()
    return f"e.g. {found[0].as_py()!r} (non-null value #{first + 1})"


def _type_failure(schema: DatasetSchema, name: str, kind: pa.DataType, col: pa.ChunkedArray) -> tuple[str, str] | None:
    """``(rule, detail)`` when the column's type cannot hold its role, else None."""
    text = is_text(kind)
    if name == schema.key:
        return None if text or pa.types.is_integer(kind) else ("key_type", f"expected text or integer ids, found {kind}")
    if name == schema.timestamp:
        ok = pa.types.is_timestamp(kind) or pa.types.is_date(kind)
        return None if ok else ("timestamp_type", f"expected a timestamp or date, found {kind}")
    if name in schema.categorical:
        ok = is_text(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind)
        return None if ok else ("categorical_type", f"expected text or integer categories, found {kind}")
    if is_number(kind) or pa.types.is_null(kind):
        return None
    rule = "label_numeric" if name == schema.label else "numeric_type"
    detail = f"expected numbers, found {kind}" + (f": {_example_non_number(col)}" if text else "")
    return rule, detail


def _missing_ratio(col: pa.ChunkedArray) -> float:
    if len(col) == 0:
        return 0.0
    missing = col.null_count
    if pa.types.is_floating(col.type):
        missing += pc.sum(pc.is_nan(col.fill_null(0.0))).as_py() or 0
    return missing / len(col)


def _infinite_count(col: pa.ChunkedArray) -> int:
    if not pa.types.is_floating(col.type):
        return 0
    return int(pc.sum(pc.is_inf(col.fill_null(0.0))).as_py() or 0)


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``actual`` against quantile bins of ``expected``."""
    expected = expected[~np.isnan(expected)]
    actual = actual[~np.isnan(actual)]
    if len(expected) == 0 or len(actual) == 0:
        return 0.0
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    e = np.bincount(np.searchsorted(edges, expected, side="right"), minlength=len(edges) + 1) / len(expected)
    a = np.bincount(np.searchsorted(edges, actual, side="right"), minlength=len(edges) + 1) / len(actual)
    e, a = np.clip(e, 1e-6, None), np.clip(a, 1e-6, None)
    return float(np.sum((a - e) * np.log(a / e)))


def categorical_psi(expected: pa.ChunkedArray, actual: pa.ChunkedArray) -> float:
    def shares(col: pa.ChunkedArray) -> dict[str, float]:
        counts = pc.value_counts(col.combine_chunks())
        total = max(len(col), 1)
        return {str(v["values"]): v["counts"] / total for v in counts.to_pylist()}

    e, a = shares(expected), shares(actual)
    keys = set(e) | set(a)
    ev = np.clip(np.array([e.get(k, 0.0) for k in keys]), 1e-6, None)
    av = np.clip(np.array([a.get(k, 0.0) for k in keys]), 1e-6, None)
    return float(np.sum((av - ev) * np.log(av / ev)))


def check_partition(
    table: pa.Table, schema: DatasetSchema, thresholds: Thresholds, previous: pa.Table | None = None
) -> tuple[list[tuple[str, str, str]], dict[str, object]]:
    """Return ``(failures, stats)``; each failure is ``(column, rule, detail)``."""
    failures: list[tuple[str, str, str]] = []
    stats: dict[str, object] = {"rows": table.num_rows, "columns": {}}

    present = set(table.column_names)
    for name in schema.columns:
        if name not in present:
            failures.append((name, "column_present", "expected column is missing from the partition"))
            continue
        broken = _type_failure(schema, name, table.schema.field(name).type, table.column(name))
        if broken:
            failures.append((name, *broken))
            present.discard(name)  # no value rule can be checked on it
    extra = sorted(set(table.column_names) - set(schema.columns))
    if extra:
        stats["unexpected_columns"] = extra
        log.warning("columns not in the contract are ignored: %s", extra)

    if table.num_rows == 0:
        failures.append(("*", "non_empty", "the partition has no rows"))
        return failures, stats
    if table.num_rows < thresholds.min_rows:
        failures.append(("*", "min_rows", f"{table.num_rows} rows < min_rows {thresholds.min_rows}"))

    if schema.label in present:
        label = table.column(schema.label)
        missing = _missing_ratio(label)
        infinite = _infinite_count(label)
        if missing > 0:
            failures.append((schema.label, "label_not_null", f"{missing:.2%} of labels are null or NaN"))
        elif infinite:
            failures.append((schema.label, "label_finite", f"{infinite} labels are infinite"))
        elif schema.task == "regression":
            values = label.cast(pa.float64())
            stats["label"] = {"mean": pc.mean(values).as_py(), "stddev": pc.stddev(values).as_py(),
                              "min": pc.min(values).as_py(), "max": pc.max(values).as_py()}
        else:
            values = set(pc.unique(label).to_pylist())
            if not values <= {0, 1}:
                failures.append((schema.label, "label_binary", f"labels must be 0/1, found {sorted(values)[:5]}"))
            else:
                rate = pc.mean(label.cast(pa.float64())).as_py()
                stats["positive_rate"] = rate
                if not thresholds.min_positive_rate <= rate <= thresholds.max_positive_rate:
                    failures.append(
                        (
                            schema.label,
                            "label_balance",
                            f"positive rate {rate:.4f} outside [{thresholds.min_positive_rate}, "
                            f"{thresholds.max_positive_rate}]",
                        )
                    )

    for name in schema.features:
        if name not in present:
            continue
        col = table.column(name)
        ratio = _missing_ratio(col)
        stats["columns"][name] = {"missing_ratio": ratio}  # type: ignore[index]
        if ratio > thresholds.max_null_ratio:
            failures.append((name, "max_null_ratio", f"{ratio:.2%} missing > {thresholds.max_null_ratio:.2%}"))
        infinite = _infinite_count(col)
        if infinite:
            failures.append((name, "finite", f"{infinite} values are infinite (inf or -inf); use null for a missing value"))

    if previous is not None and previous.num_rows:
        drift = {}
        for name in schema.features:
            if name not in present or name not in previous.column_names:
                continue
            if name in schema.categorical:
                value = categorical_psi(previous.column(name).cast(pa.string()), table.column(name).cast(pa.string()))
            else:
                as_float = [c.cast(pa.float64()).fill_null(np.nan).to_numpy() for c in (previous.column(name), table.column(name))]
                value = psi(as_float[0], as_float[1])
            drift[name] = value
            if value > thresholds.max_psi:
                failures.append((name, "drift_psi", f"PSI {value:.3f} against the previous partition > {thresholds.max_psi}"))
        stats["drift_psi"] = drift
    return failures, stats


def validate(raw_dir: Path, report_path: Path, thresholds: Thresholds, previous_dir: Path | None = None,
             partition: str | None = None) -> dict[str, object]:
    """Validate ``raw_dir``; write the report; raise ``ValidationFailed`` naming each broken rule."""
    table, schema = read_partition(raw_dir)
    previous = None
    if previous_dir is not None and PartitionFiles(previous_dir).schema.exists():
        previous = pq.read_table(previous_dir)
        if any(previous.schema.field(c).type != table.schema.field(c).type for c in schema.features
               if c in previous.column_names and c in table.column_names):
            previous = None  # a baseline of other types (e.g. before a fix of the source) is no baseline
    failures, stats = check_partition(table, schema, thresholds, previous)
    report = {
        "raw_dir": str(raw_dir),
        "passed": not failures,
        "failures": [{"column": c, "rule": r, "detail": d} for c, r, d in failures],
        "drift_baseline": str(previous_dir) if previous is not None else None,
        "stats": stats,
    }
    write_json(report_path, report)
    if failures:
        raise ValidationFailed(partition or raw_dir.name, failures)
    return {"passed": True, "rows": table.num_rows, "report": str(report_path), "positive_rate": stats.get("positive_rate")}
