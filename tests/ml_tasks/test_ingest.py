"""Ingest from every source kind into a typed raw partition, reproducibly and without losing a good one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ml_tasks.core.atomic import LOCK_NAME
from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import Layout
from ml_tasks.core.spec import load_named, parse_spec
from ml_tasks.ingestion.ingest import ingest
from ml_tasks.ingestion.schema import DatasetSchema
from ml_tasks.ingestion.synthetic import SCHEMA
from tests.conftest import transactions_spec

TX = transactions_spec()


def file_spec(tmp_path, path, extra: str = "", task: str = "binary"):
    text = f"""
task: {task}
source: {{kind: file, path: "{path}"{extra}}}
key: customer
label: churned
features: {{numeric: [f1, f2], categorical: [plan]}}
"""
    return parse_spec(text, "mine", "mine.yaml", tmp_path)


def user_frame(n: int = 200, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"customer": [f"c{i}" for i in range(n)], "f1": rng.normal(size=n), "f2": rng.integers(0, 9, n),
                         "plan": rng.choice(["a", "b"], n), "churned": rng.integers(0, 2, n)})


def test_synthetic_partition_is_deterministic_per_date(data_root):
    a, b = Layout(data_root / "a", "transactions", "2026-05-01"), Layout(data_root / "b", "transactions", "2026-05-01")
    ingest(TX, a.ds, a.raw_dir, rows=3_000)
    ingest(TX, b.ds, b.raw_dir, rows=3_000)
    # pandas' equals treats NaN == NaN (the generator writes missing values); Arrow's does not
    assert pq.read_table(a.raw_dir).to_pandas().equals(pq.read_table(b.raw_dir).to_pandas())
    other = Layout(data_root / "a", "transactions", "2026-05-02")
    ingest(TX, other.ds, other.raw_dir, rows=3_000)
    assert not pq.read_table(other.raw_dir).to_pandas().equals(pq.read_table(a.raw_dir).to_pandas())


def test_synthetic_partition_follows_the_contract(data_root):
    lay = Layout(data_root, "transactions", "2026-05-01")
    summary = ingest(TX, lay.ds, lay.raw_dir, rows=2_500)
    table = pq.read_table(lay.raw_dir)
    assert summary["rows"] == table.num_rows == 2_500
    assert table.column_names == list(TX.columns) and DatasetSchema.load(lay.raw_dir) == TX.schema
    assert table.schema.field("amount").type == SCHEMA.field("amount").type
    rate = sum(table.column("label").to_pylist()) / table.num_rows
    assert 0.05 < rate < 0.4
    # entities recur, so "latest features per entity" means something
    assert len(set(table.column("entity_id").to_pylist())) < table.num_rows


def test_rerun_replaces_partition_without_leftovers(data_root):
    lay = Layout(data_root, "transactions", "2026-05-01")
    ingest(TX, lay.ds, lay.raw_dir, rows=2_000)
    ingest(TX, lay.ds, lay.raw_dir, rows=1_500)
    assert pq.read_table(lay.raw_dir).num_rows == 1_500
    assert sorted(p.name for p in lay.raw_dir.parent.iterdir()) == [LOCK_NAME, "ds=2026-05-01"]  # the publish lock's file


def test_failed_ingest_keeps_the_good_partition(data_root, tmp_path):
    lay = Layout(data_root, "mine", "2026-05-01")
    csv = tmp_path / "mine.csv"
    user_frame().to_csv(csv, index=False)
    ingest(file_spec(tmp_path, csv), lay.ds, lay.raw_dir)
    with pytest.raises(KilnError, match="input path '/nope.csv' does not exist"):
        ingest(file_spec(tmp_path, "/nope.csv"), lay.ds, lay.raw_dir)
    assert pq.read_table(lay.raw_dir).num_rows == 200


def test_a_users_csv_keeps_its_own_column_names_and_gets_storage_types(data_root, tmp_path):
    csv = tmp_path / "mine.csv"
    frame = user_frame()
    frame["unused"] = "x"
    frame.to_csv(csv, index=False)
    lay = Layout(data_root, "mine", "2026-05-01")
    assert ingest(file_spec(tmp_path, "mine.csv"), lay.ds, lay.raw_dir)["rows"] == 200  # relative to the spec's folder
    table = pq.read_table(lay.raw_dir)
    assert table.column_names == ["customer", "f1", "f2", "plan", "churned"]  # only the spec's columns
    assert str(table.schema.field("f2").type) == "double" and str(table.schema.field("customer").type) == "string"


def test_a_date_column_selects_the_days_rows(data_root, tmp_path):
    frame = user_frame(300)
    frame["day"] = pd.to_datetime("2026-05-01") + pd.to_timedelta(np.arange(300) % 3, unit="D") + pd.Timedelta(hours=5)
    frame.to_parquet(tmp_path / "all.parquet")
    spec = file_spec(tmp_path, tmp_path / "all.parquet", ", date_column: day")
    for offset, ds in enumerate(["2026-05-01", "2026-05-02", "2026-05-03"]):
        lay = Layout(data_root, "mine", ds)
        assert ingest(spec, ds, lay.raw_dir)["rows"] == 100
        assert pq.read_table(lay.raw_dir).column("customer").to_pylist()[0] == f"c{offset}"


def test_ds_folders_and_globs_select_the_days_files(data_root, tmp_path):
    for i, ds in enumerate(["2026-05-01", "2026-05-02"]):
        (tmp_path / "drop" / f"ds={ds}").mkdir(parents=True)
        user_frame(50 + i, seed=i).to_csv(tmp_path / "drop" / f"ds={ds}" / "part.csv", index=False)
    lay = Layout(data_root, "mine", "2026-05-02")
    assert ingest(file_spec(tmp_path, tmp_path / "drop"), lay.ds, lay.raw_dir)["rows"] == 51
    with pytest.raises(KilnError, match="no data for 2026-05-03 .*no folder ds=2026-05-03"):
        ingest(file_spec(tmp_path, tmp_path / "drop"), "2026-05-03", Layout(data_root, "mine", "2026-05-03").raw_dir)
    glob_lay = Layout(data_root / "g", "mine", "2026-05-01")
    assert ingest(file_spec(tmp_path, f"{tmp_path}/drop/*/part.csv"), glob_lay.ds, glob_lay.raw_dir)["rows"] == 101


def test_text_in_a_numeric_csv_column_is_kept_for_validation_to_name(data_root, tmp_path):
    frame = user_frame(100_000)  # beyond CSV type inference's first block
    frame["f1"] = frame["f1"].astype(str)
    frame.loc[90_000, "f1"] = "n/a?"
    frame.to_csv(tmp_path / "mine.csv", index=False)
    lay = Layout(data_root, "mine", "2026-05-01")
    assert ingest(file_spec(tmp_path, "mine.csv"), lay.ds, lay.raw_dir)["rows"] == 100_000
    assert str(pq.read_table(lay.raw_dir).schema.field("f1").type) == "string"


@pytest.mark.parametrize(("name", "rows", "label"), [("breast_cancer", 569, "target"), ("diabetes", 442, "target")])
def test_packaged_sklearn_sets(data_root, name, rows, label):
    spec = load_named(name)
    lay = Layout(data_root, name, "2026-05-01")
    assert ingest(spec, lay.ds, lay.raw_dir)["rows"] == rows
    table = pq.read_table(lay.raw_dir)
    assert table.column_names == list(spec.columns) and label in table.column_names
    assert DatasetSchema.load(lay.raw_dir).task == spec.task


def test_the_same_request_leaves_the_partition_untouched(data_root):
    lay = Layout(data_root, "transactions", "2026-05-01")
    first = ingest(TX, lay.ds, lay.raw_dir, rows=2_000)
    part = next(lay.raw_dir.glob("*.parquet")).stat()
    again = ingest(TX, lay.ds, lay.raw_dir, rows=2_000)
    after = next(lay.raw_dir.glob("*.parquet")).stat()
    assert first["rewritten"] and not again["rewritten"]
    assert (part.st_ino, part.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)  # a concurrent reader is undisturbed


def test_a_run_reads_its_own_snapshot_while_another_run_of_the_day_replaces_the_partition(data_root):
    a = Layout(data_root, "transactions", "2026-05-01", "manual__a")
    b = Layout(data_root, "transactions", "2026-05-01", "backfill__b")
    ingest(TX, a.ds, a.raw_dir, rows=2_000, snapshot_dir=a.input_dir)
    reading = pq.ParquetFile(next(a.input_dir.glob("*.parquet")))  # run a is mid-read
    ingest(TX, b.ds, b.raw_dir, rows=1_500, snapshot_dir=b.input_dir)  # run b, other params, publishes its partition
    assert pq.read_table(a.raw_dir).num_rows == 1_500 and pq.read_table(b.input_dir).num_rows == 1_500
    assert reading.read().num_rows == 2_000 and pq.read_table(a.input_dir).num_rows == 2_000  # a stays whole
    assert DatasetSchema.load(a.input_dir) == TX.schema


def test_rows_over_the_specs_limits_are_set_aside_with_their_reason_and_the_rest_is_kept(data_root, tmp_path):
    """An entity id or a text value longer than the spec allows, or an event time after the row was received (past
    the end of its day), is not ingested but set aside beside the partition with the rule it broke."""
    frame = user_frame(50)
    frame["ts"] = pd.Timestamp("2026-05-01 12:00:00")
    frame.loc[3, "customer"] = "c" * 41  # max_key_length 40
    frame.loc[5, "plan"] = "p" * 900_000  # the 900 KB categorical a producer once sent
    frame.loc[7, "ts"] = pd.Timestamp("2096-05-01 12:00:00")  # 70 years ahead
    frame.loc[9, "ts"] = pd.Timestamp("2026-05-02 00:04:00")  # 4 min after the day ends: within max_future_seconds
    frame.loc[11, "ts"] = pd.Timestamp("2026-05-02 00:06:00")  # 6 min after: beyond it
    frame.loc[13, ["customer", "ts"]] = ["k" * 50, pd.Timestamp("2096-01-01")]  # two rules broken: the first named
    path = tmp_path / "events.parquet"
    frame.to_parquet(path)
    spec = parse_spec(f"""
task: binary
source: {{kind: file, path: "{path}"}}
key: customer
label: churned
timestamp: ts
features: {{numeric: [f1, f2], categorical: [plan]}}
limits: {{max_key_length: 40, max_text_length: 1000, max_future_seconds: 300}}
""", "mine", "mine.yaml", tmp_path)
    layout = Layout(data_root, "mine", "2026-05-01")
    summary = ingest(spec, layout.ds, layout.raw_dir)

    kept = pq.read_table(layout.raw_dir).to_pandas()
    assert summary["rows"] == len(kept) == 45 and summary["rejected"] == 5
    assert set(kept["customer"]) == set(frame["customer"].drop([3, 7, 11, 13]).drop(5))
    rejected = pq.read_table(layout.raw_dir / "_rejected.parquet").to_pandas().set_index("customer")
    assert rejected.loc["c" * 41, "_reason"] == "customer: 41 characters, over the limit of 40"
    assert rejected.loc["c5", "_reason"] == "plan: 900000 characters, over the limit of 1000"
    assert rejected.loc["c7", "_reason"] == ("ts: 2096-05-01T12:00:00 is 2209032000 s after the event was received "
                                             "(limit 300 s)")
    assert rejected.loc["c11", "_reason"].startswith("ts: 2026-05-02T00:06:00 is 360 s after")
    assert rejected.loc["k" * 50, "_reason"] == "customer: 50 characters, over the limit of 40"
    assert summary["rejected_by_rule"] == {"customer": 2, "plan": 1, "ts": 2}
