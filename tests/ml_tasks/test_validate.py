from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ml_tasks.errors import KilnError, ValidationFailed
from ml_tasks.ingest import PART_FILE, ingest
from ml_tasks.layout import Layout
from ml_tasks.validate import Thresholds, validate


@pytest.fixture
def partition(data_root) -> Layout:
    lay = Layout(data_root, "2026-06-10")
    ingest(lay.ds, lay.raw_dir, rows=3_000)
    return lay


def rewrite(lay: Layout, table: pa.Table) -> None:
    pq.write_table(table, lay.raw_dir / PART_FILE)


def test_good_partition_passes_and_reports(partition):
    result = validate(partition.raw_dir, partition.validation_report, Thresholds())
    assert result["passed"] and result["rows"] == 3_000
    assert json.loads(partition.validation_report.read_text())["passed"] is True


def test_empty_partition_fails_naming_the_rule(partition):
    rewrite(partition, pq.read_table(partition.raw_dir).slice(0, 0))
    with pytest.raises(ValidationFailed, match=r"rule 'non_empty' failed: the partition has no rows"):
        validate(partition.raw_dir, partition.validation_report, Thresholds())


def test_missing_column_fails_naming_the_column(partition):
    rewrite(partition, pq.read_table(partition.raw_dir).drop_columns(["amount"]))
    with pytest.raises(ValidationFailed, match=r"column 'amount': rule 'column_present' failed"):
        validate(partition.raw_dir, partition.validation_report, Thresholds())
    report = json.loads(partition.validation_report.read_text())
    assert {"column": "amount", "rule": "column_present", "detail": "expected column is missing from the partition"} in report["failures"]


def test_type_drift_fails_naming_the_column(partition):
    table = pq.read_table(partition.raw_dir)
    idx = table.column_names.index("tx_count_24h")
    rewrite(partition, table.set_column(idx, "tx_count_24h", pc.cast(table.column(idx), pa.string())))
    with pytest.raises(ValidationFailed, match=r"column 'tx_count_24h': rule 'column_type' failed: expected int32, found string"):
        validate(partition.raw_dir, partition.validation_report, Thresholds())


def test_nan_labels_fail(partition):
    table = pq.read_table(partition.raw_dir)
    labels = table.column("label").to_pylist()
    labels[:30] = [None] * 30
    rewrite(partition, table.set_column(table.column_names.index("label"), "label", pa.array(labels, pa.int32())))
    with pytest.raises(ValidationFailed, match=r"column 'label': rule 'label_not_null' failed: 1.00% of labels are null or NaN"):
        validate(partition.raw_dir, partition.validation_report, Thresholds())


def test_too_many_missing_values_fail(partition):
    with pytest.raises(ValidationFailed, match=r"column 'distance_from_home_km': rule 'max_null_ratio' failed"):
        validate(partition.raw_dir, partition.validation_report, Thresholds(max_null_ratio=0.001))


def test_drift_against_previous_day_fails(partition, data_root):
    prev = Layout(data_root, "2026-06-09")
    ingest(prev.ds, prev.raw_dir, rows=3_000)
    assert validate(partition.raw_dir, partition.validation_report, Thresholds(), prev.raw_dir)["passed"]
    table = pq.read_table(partition.raw_dir)
    shifted = pc.multiply(table.column("amount"), 5.0)
    rewrite(partition, table.set_column(table.column_names.index("amount"), "amount", shifted))
    with pytest.raises(ValidationFailed, match=r"column 'amount': rule 'drift_psi' failed: PSI \d+\.\d+ against the previous partition"):
        validate(partition.raw_dir, partition.validation_report, Thresholds(), prev.raw_dir)


def test_missing_partition_is_named(data_root):
    lay = Layout(data_root, "2026-06-10")
    with pytest.raises(KilnError, match="raw partition .*ds=2026-06-10 is missing"):
        validate(lay.raw_dir, lay.validation_report, Thresholds())
