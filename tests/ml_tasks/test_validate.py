"""Validation names the column and the rule of every problem, and always writes its report."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ml_tasks.core.errors import KilnError, ValidationFailed
from ml_tasks.core.layout import Layout
from ml_tasks.core.spec import load_named
from ml_tasks.ingestion.ingest import ingest
from ml_tasks.ingestion.validate import Thresholds, validate
from tests.conftest import transactions_spec
from tests.ml_tasks.test_ingest import file_spec, user_frame

TX = transactions_spec()


@pytest.fixture
def partition(data_root) -> Layout:
    lay = Layout(data_root, "transactions", "2026-06-10")
    ingest(TX, lay.ds, lay.raw_dir, rows=3_000)
    return lay


def rewrite(lay: Layout, table: pa.Table) -> None:
    pq.write_table(table, lay.raw.data)


def set_column(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, values)


def failures(lay: Layout) -> list[dict]:
    report = json.loads(lay.validation_report.read_text())
    assert report["passed"] is False
    return report["failures"]


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
    assert {"column": "amount", "rule": "column_present", "detail": "expected column is missing from the partition"} in failures(partition)


def test_text_in_a_numeric_column_fails_naming_column_rule_and_value(partition):
    table = pq.read_table(partition.raw_dir)
    counts = pc.cast(table.column("tx_count_24h"), pa.string()).to_pylist()
    counts[7] = "seven"
    rewrite(partition, set_column(table, "tx_count_24h", pa.array(counts)))
    with pytest.raises(ValidationFailed, match=r"column 'tx_count_24h': rule 'numeric_type' failed: expected numbers, "
                                                r"found string: e.g. 'seven'"):
        validate(partition.raw_dir, partition.validation_report, Thresholds())
    assert [f["rule"] for f in failures(partition)] == ["numeric_type"]


def test_a_users_csv_with_text_in_a_numeric_column_gets_a_report_not_a_parser_error(data_root, tmp_path):
    frame = user_frame(500)
    frame["f1"] = frame["f1"].astype(str)
    frame.loc[321, "f1"] = "abc"
    frame.to_csv(tmp_path / "mine.csv", index=False)
    lay = Layout(data_root, "mine", "2026-06-10")
    ingest(file_spec(tmp_path, "mine.csv"), lay.ds, lay.raw_dir)
    with pytest.raises(ValidationFailed, match=r"column 'f1': rule 'numeric_type' failed: .*'abc'"):
        validate(lay.raw_dir, lay.validation_report, Thresholds())
    assert failures(lay)[0]["column"] == "f1"


def test_infinite_values_fail(partition):
    table = pq.read_table(partition.raw_dir)
    amounts = table.column("amount").to_numpy(zero_copy_only=False).copy()
    amounts[[3, 9]] = [np.inf, -np.inf]
    rewrite(partition, set_column(table, "amount", pa.array(amounts)))
    with pytest.raises(ValidationFailed, match=r"column 'amount': rule 'finite' failed: 2 values are infinite"):
        validate(partition.raw_dir, partition.validation_report, Thresholds())


def test_binary_labels_outside_zero_and_one_fail(partition):
    table = pq.read_table(partition.raw_dir)
    labels = table.column("label").to_pylist()
    labels[5] = 2
    rewrite(partition, set_column(table, "label", pa.array(labels, pa.int32())))
    with pytest.raises(ValidationFailed, match=r"column 'label': rule 'label_binary' failed: labels must be 0/1, found \[0, 1, 2\]"):
        validate(partition.raw_dir, partition.validation_report, Thresholds())


@pytest.mark.parametrize(("bad", "rule"), [(np.inf, "label_finite"), (np.nan, "label_not_null")])
def test_non_finite_regression_labels_fail(data_root, bad, rule):
    lay = Layout(data_root, "diabetes", "2026-06-10")
    ingest(load_named("diabetes"), lay.ds, lay.raw_dir)
    table = pq.read_table(lay.raw_dir)
    target = table.column("target").to_numpy().copy()
    target[0] = bad
    rewrite(lay, set_column(table, "target", pa.array(target)))
    with pytest.raises(ValidationFailed, match=rf"column 'target': rule '{rule}' failed"):
        validate(lay.raw_dir, lay.validation_report, Thresholds())


def test_nan_labels_fail(partition):
    table = pq.read_table(partition.raw_dir)
    labels = table.column("label").to_pylist()
    labels[:30] = [None] * 30
    rewrite(partition, set_column(table, "label", pa.array(labels, pa.int32())))
    with pytest.raises(ValidationFailed, match=r"column 'label': rule 'label_not_null' failed: 1.00% of labels are null or NaN"):
        validate(partition.raw_dir, partition.validation_report, Thresholds())


def test_too_many_missing_values_fail(partition):
    with pytest.raises(ValidationFailed, match=r"column 'distance_from_home_km': rule 'max_null_ratio' failed"):
        validate(partition.raw_dir, partition.validation_report, Thresholds(max_null_ratio=0.001))


def test_drift_against_previous_day_fails(partition, data_root):
    prev = Layout(data_root, "transactions", "2026-06-09")
    ingest(TX, prev.ds, prev.raw_dir, rows=3_000)
    assert validate(partition.raw_dir, partition.validation_report, Thresholds(), prev.raw_dir)["passed"]
    table = pq.read_table(partition.raw_dir)
    rewrite(partition, set_column(table, "amount", pc.multiply(table.column("amount"), 5.0)))
    with pytest.raises(ValidationFailed, match=r"column 'amount': rule 'drift_psi' failed: PSI \d+\.\d+ against the previous partition"):
        validate(partition.raw_dir, partition.validation_report, Thresholds(), prev.raw_dir)


def test_missing_partition_is_named(data_root):
    lay = Layout(data_root, "transactions", "2026-06-10")
    with pytest.raises(KilnError, match="raw partition .*ds=2026-06-10 is missing"):
        validate(lay.raw_dir, lay.validation_report, Thresholds())
