from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from ml_tasks.errors import KilnError
from ml_tasks.ingest import ingest
from ml_tasks.layout import Layout
from ml_tasks.schema import TRANSACTIONS, DatasetSchema


def test_synthetic_partition_is_deterministic_per_date(data_root):
    a, b = Layout(data_root / "a", "2026-05-01"), Layout(data_root / "b", "2026-05-01")
    ingest(a.ds, a.raw_dir, rows=3_000)
    ingest(b.ds, b.raw_dir, rows=3_000)
    # pandas' equals treats NaN == NaN (the generator writes missing values); Arrow's does not
    assert pq.read_table(a.raw_dir).to_pandas().equals(pq.read_table(b.raw_dir).to_pandas())
    other = Layout(data_root / "a", "2026-05-02")
    ingest(other.ds, other.raw_dir, rows=3_000)
    assert not pq.read_table(other.raw_dir).to_pandas().equals(pq.read_table(a.raw_dir).to_pandas())


def test_synthetic_partition_follows_the_contract(data_root):
    lay = Layout(data_root, "2026-05-01")
    summary = ingest(lay.ds, lay.raw_dir, rows=2_500)
    table = pq.read_table(lay.raw_dir)
    assert summary["rows"] == table.num_rows == 2_500
    assert table.schema.remove_metadata() == TRANSACTIONS.arrow_schema()
    assert DatasetSchema.load(lay.raw_dir) == TRANSACTIONS
    rate = sum(table.column("label").to_pylist()) / table.num_rows
    assert 0.05 < rate < 0.4
    # entities recur, so "latest features per entity" means something
    assert len(set(table.column("entity_id").to_pylist())) < table.num_rows


def test_rerun_replaces_partition_without_leftovers(data_root):
    lay = Layout(data_root, "2026-05-01")
    ingest(lay.ds, lay.raw_dir, rows=2_000)
    ingest(lay.ds, lay.raw_dir, rows=1_500)
    assert pq.read_table(lay.raw_dir).num_rows == 1_500
    assert [p.name for p in lay.raw_dir.parent.iterdir()] == ["ds=2026-05-01"]


def test_failed_ingest_keeps_the_good_partition(data_root):
    lay = Layout(data_root, "2026-05-01")
    ingest(lay.ds, lay.raw_dir, rows=2_000)
    with pytest.raises(KilnError, match="input_path '/nope.csv' does not exist"):
        ingest(lay.ds, lay.raw_dir, source="file", input_path="/nope.csv")
    assert pq.read_table(lay.raw_dir).num_rows == 2_000


def test_user_csv_is_ingested_with_contract_types(data_root, tmp_path):
    src = Layout(data_root / "src", "2026-05-01")
    ingest(src.ds, src.raw_dir, rows=1_000)
    csv = tmp_path / "mine.csv"
    pq.read_table(src.raw_dir).to_pandas().to_csv(csv, index=False)
    lay = Layout(data_root, "2026-05-01")
    assert ingest(lay.ds, lay.raw_dir, source="file", input_path=str(csv))["rows"] == 1_000
    assert pq.read_table(lay.raw_dir).schema.field("label").type == TRANSACTIONS.arrow_schema().field("label").type


def test_packaged_breast_cancer_data(data_root):
    lay = Layout(data_root, "2026-05-01")
    assert ingest(lay.ds, lay.raw_dir, source="sklearn_breast_cancer")["rows"] == 569
    assert DatasetSchema.load(lay.raw_dir).name == "sklearn_breast_cancer"


def test_the_same_request_leaves_the_partition_untouched(data_root):
    lay = Layout(data_root, "2026-05-01")
    first = ingest(lay.ds, lay.raw_dir, rows=2_000)
    part = next(lay.raw_dir.glob("*.parquet")).stat()
    again = ingest(lay.ds, lay.raw_dir, rows=2_000)
    after = next(lay.raw_dir.glob("*.parquet")).stat()
    assert first["rewritten"] and not again["rewritten"]
    assert (part.st_ino, part.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)  # a concurrent reader is undisturbed


def test_a_run_reads_its_own_snapshot_while_another_run_of_the_day_replaces_the_partition(data_root):
    a = Layout(data_root, "2026-05-01", "manual__a")
    b = Layout(data_root, "2026-05-01", "backfill__b")
    ingest(a.ds, a.raw_dir, rows=2_000, snapshot_dir=a.input_dir)
    reading = pq.ParquetFile(next(a.input_dir.glob("*.parquet")))  # run a is mid-read
    ingest(b.ds, b.raw_dir, rows=1_500, snapshot_dir=b.input_dir)  # run b, other params, publishes its partition
    assert pq.read_table(a.raw_dir).num_rows == 1_500 and pq.read_table(b.input_dir).num_rows == 1_500
    assert reading.read().num_rows == 2_000 and pq.read_table(a.input_dir).num_rows == 2_000  # a stays whole
    assert DatasetSchema.load(a.input_dir) == TRANSACTIONS
