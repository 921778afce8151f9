"""The data contract: which columns a partition has, their types, and which are features."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

from ml_tasks.atomic import read_json, write_json

SCHEMA_FILE = "_schema.json"


@dataclass(frozen=True)
class DatasetSchema:
    """Column roles and Arrow types of a raw partition."""

    name: str
    key: str
    label: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    timestamp: str | None = None
    # Arrow type names per column (``pa.type_for_alias`` spelling), the contract validation checks.
    types: dict[str, str] = field(default_factory=dict)

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    @property
    def columns(self) -> tuple[str, ...]:
        cols = (self.key,) + ((self.timestamp,) if self.timestamp else ()) + self.features + (self.label,)
        return cols

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(c, _arrow_type(self.types[c])) for c in self.columns])

    def save(self, directory: Path) -> Path:
        return write_json(directory / SCHEMA_FILE, asdict(self))

    @classmethod
    def load(cls, directory: Path) -> DatasetSchema:
        raw = read_json(directory / SCHEMA_FILE)
        raw["numeric"] = tuple(raw["numeric"])
        raw["categorical"] = tuple(raw["categorical"])
        return cls(**raw)


def _arrow_type(alias: str) -> pa.DataType:
    if alias.startswith("timestamp"):
        return pa.timestamp("us")
    return pa.type_for_alias(alias)


TRANSACTIONS = DatasetSchema(
    name="transactions",
    key="entity_id",
    label="label",
    timestamp="event_ts",
    numeric=(
        "amount",
        "hour_of_day",
        "distance_from_home_km",
        "tx_count_24h",
        "account_age_days",
        "is_foreign",
    ),
    categorical=("merchant_category", "channel"),
    types={
        "entity_id": "string",
        "event_ts": "timestamp[us]",
        "amount": "double",
        "hour_of_day": "int32",
        "distance_from_home_km": "double",
        "tx_count_24h": "int32",
        "account_age_days": "int32",
        "is_foreign": "int32",
        "merchant_category": "string",
        "channel": "string",
        "label": "int32",
    },
)
