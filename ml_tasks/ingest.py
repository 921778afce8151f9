"""Ingest: write one raw Parquet partition, from the synthetic generator, a user file, or a packaged data set.

The synthetic generator models card transactions: recurring cards (entity ids) with stable account
ages, categorical merchant and channel, numeric amount/distance/velocity, a fraud label drawn from a
hidden logistic rule with an interaction term and label noise, and mild day-to-day drift. Every value
is a function of (partition date, row index), so reruns and backfills reproduce a partition exactly.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ml_tasks.atomic import atomic_dir, content_digest, link_snapshot, read_json, write_json
from ml_tasks.errors import KilnError
from ml_tasks.schema import TRANSACTIONS, DatasetSchema

log = logging.getLogger(__name__)

SOURCES = ("synthetic", "file", "sklearn_breast_cancer")
CATEGORIES = np.array(
    ["electronics", "gas", "grocery", "jewelry", "online_services", "restaurants", "travel", "other"]
)
CATEGORY_WEIGHTS = np.array([0.08, 0.12, 0.25, 0.03, 0.12, 0.2, 0.05, 0.15])
CATEGORY_RISK = np.array([1.2, -0.2, -0.6, 1.6, 0.5, -0.3, 0.7, 0.0])
CHANNELS = np.array(["atm", "online", "pos"])
CHANNEL_WEIGHTS = np.array([0.1, 0.35, 0.55])
CHANNEL_RISK = np.array([0.4, 0.8, -0.5])
CHUNK_ROWS = 500_000
PART_FILE = "part-00000.parquet"
REQUEST_FILE = "_ingest.json"  # what the partition was ingested from ('_' keeps Arrow and Spark from reading it)
GENERATOR_VERSION = 1  # bump when generate_chunk changes what it writes for a date


def _day_index(ds: str) -> int:
    return date.fromisoformat(ds).toordinal() - date(2024, 1, 1).toordinal()


def generate_chunk(ds: str, start: int, rows: int, entity_pool: int, seed: int = 7) -> pa.Table:
    """Rows ``start .. start+rows`` of the synthetic partition for ``ds`` (deterministic)."""
    day = _day_index(ds)
    rng = np.random.default_rng([seed, day + 100_000, start])
    drift = 0.08 * np.sin(day / 20.0)  # mild, smooth day-to-day drift in spend and risk

    card = rng.integers(0, entity_pool, rows)
    entity_id = np.char.add("card_", np.char.zfill(card.astype(str), 8))
    account_age = ((card * 2654435761) % 3650 + 1).astype(np.int32)  # stable per card
    cat_idx = rng.choice(len(CATEGORIES), rows, p=CATEGORY_WEIGHTS)
    chan_idx = rng.choice(len(CHANNELS), rows, p=CHANNEL_WEIGHTS)
    amount = np.round(rng.lognormal(3.4 + drift + 0.6 * (CATEGORY_RISK[cat_idx] > 1), 1.0, rows), 2)
    seconds = rng.integers(0, 86_400, rows)
    hour = (seconds // 3600).astype(np.int32)
    distance = np.round(rng.exponential(12.0, rows) * (1 + 3 * (chan_idx == 0)), 3)
    tx_count = rng.poisson(2.0 + 1.5 * rng.random(rows), rows).astype(np.int32)
    foreign = (rng.random(rows) < 0.06 + 0.04 * (chan_idx == 1)).astype(np.int32)

    night = ((hour <= 4) | (hour >= 23)).astype(float)
    z_amount = (np.log(amount + 1) - 3.6) / 1.0
    logit = (
        -3.1
        + 0.9 * z_amount
        + CATEGORY_RISK[cat_idx]
        + CHANNEL_RISK[chan_idx]
        + 0.9 * foreign
        + 0.5 * np.log1p(distance) / 2
        + 0.35 * np.minimum(tx_count, 8)
        - 0.35 * np.log(account_age / 365 + 0.1)
        + 1.2 * night * (z_amount > 0.8)  # interaction a linear model cannot see
        + drift
    )
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int32)
    flip = rng.random(rows) < 0.02  # label noise
    label = np.where(flip, 1 - label, label).astype(np.int32)

    # Missing values, as in real feeds: some amounts and distances are not reported.
    amount = np.where(rng.random(rows) < 0.01, np.nan, amount)
    distance = np.where(rng.random(rows) < 0.03, np.nan, distance)

    day_start = datetime.fromisoformat(ds).replace(tzinfo=UTC)
    ts = np.datetime64(day_start.replace(tzinfo=None), "us") + (seconds * 1_000_000).astype("timedelta64[us]")
    columns = {
        "entity_id": entity_id,
        "event_ts": ts,
        "amount": amount,
        "hour_of_day": hour,
        "distance_from_home_km": distance,
        "tx_count_24h": tx_count,
        "account_age_days": account_age,
        "is_foreign": foreign,
        "merchant_category": CATEGORIES[cat_idx],
        "channel": CHANNELS[chan_idx],
        "label": label,
    }
    return pa.table(columns, schema=TRANSACTIONS.arrow_schema())


def write_synthetic(ds: str, out_dir: Path, rows: int, seed: int = 7) -> int:
    """Stream the synthetic partition to ``out_dir`` in chunks (memory stays bounded at 10 M rows)."""
    entity_pool = max(1_000, rows // 4)
    with pq.ParquetWriter(out_dir / PART_FILE, TRANSACTIONS.arrow_schema(), compression="zstd") as writer:
        for start in range(0, rows, CHUNK_ROWS):
            writer.write_table(generate_chunk(ds, start, min(CHUNK_ROWS, rows - start), entity_pool, seed))
    TRANSACTIONS.save(out_dir)
    return rows


def read_user_file(path: Path) -> pa.Table:
    """Read a user's CSV or Parquet file (or folder of Parquet files) as Arrow."""
    if not path.exists():
        raise KilnError(f"input_path {str(path)!r} does not exist")
    if path.suffix.lower() == ".csv":
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path)
    return pq.read_table(path)


def write_user_file(path: Path, out_dir: Path) -> int:
    """Copy a user file into the partition as-is; validation, not ingest, judges its schema.

    Columns the contract knows are cast to the contract's type where that is lossless, so a CSV's
    int64 ``label`` is accepted; anything else is kept as it came so validation can name it.
    """
    table = read_user_file(path)
    contract = TRANSACTIONS.arrow_schema()
    for i, name in enumerate(table.column_names):
        if name in contract.names:
            try:
                table = table.set_column(i, name, table.column(name).cast(contract.field(name).type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                log.warning("column %s: type %s kept (cannot cast safely)", name, table.column(name).type)
    pq.write_table(table, out_dir / PART_FILE, compression="zstd")
    TRANSACTIONS.save(out_dir)
    return table.num_rows


def write_breast_cancer(out_dir: Path) -> int:
    """scikit-learn's bundled Wisconsin breast-cancer data (569 rows, shipped in the wheel)."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame
    names = [c.replace(" ", "_") for c in bunch.feature_names]
    frame.columns = [*names, "target"]
    table = pa.table(
        {
            "entity_id": [f"bc_{i:04d}" for i in range(len(frame))],
            **{n: frame[n].astype("float64").to_numpy() for n in names},
            "label": (frame["target"] == 0).astype("int32").to_numpy(),  # 1 = malignant
        }
    )
    schema = DatasetSchema(
        name="sklearn_breast_cancer",
        key="entity_id",
        label="label",
        numeric=tuple(names),
        types={"entity_id": "string", "label": "int32", **{n: "double" for n in names}},
    )
    pq.write_table(table, out_dir / PART_FILE)
    schema.save(out_dir)
    return table.num_rows


def ingest_request(ds: str, source: str, rows: int, input_path: str | None) -> dict[str, object]:
    """What determines the partition's content: the same request always writes the same rows."""
    if source == "synthetic":
        return {"ds": ds, "source": source, "rows": rows, "generator": GENERATOR_VERSION}
    if source == "file":
        path = Path(input_path)  # type: ignore[arg-type]
        if not path.exists():
            raise KilnError(f"input_path {str(path)!r} does not exist")
        return {"ds": ds, "source": source, "input_path": str(path.resolve()), "sha256": content_digest(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])}
    return {"ds": ds, "source": source}


def ingest(
    ds: str, raw_dir: Path, source: str = "synthetic", rows: int = 20_000, input_path: str | None = None,
    snapshot_dir: Path | None = None,
) -> dict[str, object]:
    """Write the raw partition for ``ds`` atomically into ``raw_dir``; return a small summary.

    The same request again leaves the partition as it is (another run of the day may be reading it);
    ``snapshot_dir`` receives this run's own hard-linked view of the partition it ingested.
    """
    if source not in SOURCES:
        raise KilnError(f"source {source!r} is not one of {', '.join(SOURCES)}")
    if source == "file" and not input_path:
        raise KilnError("source 'file' needs input_path (a CSV or Parquet path)")
    if source == "synthetic" and rows < 1:
        raise KilnError(f"rows must be positive, got {rows}")
    request = ingest_request(ds, source, rows, input_path)
    reused = (raw_dir / REQUEST_FILE).exists() and read_json(raw_dir / REQUEST_FILE) == request
    if not reused:
        with atomic_dir(raw_dir) as tmp:
            if source == "synthetic":
                write_synthetic(ds, tmp, rows)
            elif source == "file":
                write_user_file(Path(input_path), tmp)  # type: ignore[arg-type]
            else:
                write_breast_cancer(tmp)
            write_json(tmp / REQUEST_FILE, request)
    if snapshot_dir is not None:
        link_snapshot(raw_dir, snapshot_dir)
    read_from = snapshot_dir or raw_dir
    count = sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(read_from.glob("*.parquet")))
    log.info("%s %d rows from %s in %s", "kept the identical" if reused else "ingested", count, source, raw_dir)
    return {"ds": ds, "raw_dir": str(raw_dir), "rows": count, "source": source, "rewritten": not reused}
