"""The synthetic card-transactions generator behind the built-in ``transactions`` dataset.

Recurring cards (entity ids) with stable account ages, categorical merchant and channel, numeric
amount/distance/velocity, a fraud label drawn from a hidden logistic rule with an interaction term and
label noise, and mild day-to-day drift. Every value is a function of (partition date, row index), so
reruns and backfills reproduce a partition exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa

GENERATOR_VERSION = 1  # bump when generate_chunk changes what it writes for a date
SCHEMA = pa.schema([
    ("entity_id", pa.string()), ("event_ts", pa.timestamp("us")), ("amount", pa.float64()), ("hour_of_day", pa.int32()),
    ("distance_from_home_km", pa.float64()), ("tx_count_24h", pa.int32()), ("account_age_days", pa.int32()),
    ("is_foreign", pa.int32()), ("merchant_category", pa.string()), ("channel", pa.string()), ("label", pa.int32()),
])
CATEGORIES = np.array(
    ["electronics", "gas", "grocery", "jewelry", "online_services", "restaurants", "travel", "other"]
)
CATEGORY_WEIGHTS = np.array([0.08, 0.12, 0.25, 0.03, 0.12, 0.2, 0.05, 0.15])
CATEGORY_RISK = np.array([1.2, -0.2, -0.6, 1.6, 0.5, -0.3, 0.7, 0.0])
CHANNELS = np.array(["atm", "online", "pos"])
CHANNEL_WEIGHTS = np.array([0.1, 0.35, 0.55])
CHANNEL_RISK = np.array([0.4, 0.8, -0.5])
CHUNK_ROWS = 500_000


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
    return pa.table(columns, schema=SCHEMA)


def transactions(ds: str, rows: int, seed: int = 7) -> Iterator[pa.RecordBatch]:
    """The synthetic partition for ``ds`` in chunks (memory stays bounded at 10 M rows)."""
    entity_pool = max(1_000, rows // 4)
    for start in range(0, rows, CHUNK_ROWS):
        yield from generate_chunk(ds, start, min(CHUNK_ROWS, rows - start), entity_pool, seed).to_batches()


