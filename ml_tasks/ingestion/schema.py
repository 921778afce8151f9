"""The data contract of a raw partition: column roles and the Arrow type each role is stored as.

Ingest writes it next to the data (``_schema.json``), so every later stage reads a partition that
describes itself, whatever spec edits happen meanwhile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ml_tasks.core.atomic import read_json, write_json
from ml_tasks.core.layout import PartitionFiles

if TYPE_CHECKING:
    import pyarrow as pa



def is_number(kind: pa.DataType) -> bool:
    """Integers, floats, booleans and decimals: what a numeric role can hold."""
    import pyarrow as pa

    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) or pa.types.is_decimal(kind)


def is_text(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind)


@dataclass(frozen=True)
class DatasetSchema:
    """Column roles of a dataset and its task (``binary`` or ``regression``)."""

    name: str
    task: str
    key: str
    label: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    timestamp: str | None = None

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.key,) + ((self.timestamp,) if self.timestamp else ()) + self.features + (self.label,)

    def storage_type(self, column: str) -> pa.DataType:
        """The type ingest stores ``column`` as when the source's values convert without loss."""
        import pyarrow as pa  # not at import: DAG files load specs at parse time

        if column == self.key or column in self.categorical:
            return pa.string()
        if column == self.timestamp:
            return pa.timestamp("us")
        if column == self.label:
            return pa.int32() if self.task == "binary" else pa.float64()
        return pa.float64()

    def arrow_schema(self) -> pa.Schema:
        import pyarrow as pa

        return pa.schema([(c, self.storage_type(c)) for c in self.columns])

    def save(self, directory: Path) -> Path:
        return write_json(PartitionFiles(directory).schema, asdict(self))

    @classmethod
    def load(cls, directory: Path) -> DatasetSchema:
        raw = read_json(PartitionFiles(directory).schema)
        raw["numeric"] = tuple(raw["numeric"])
        raw["categorical"] = tuple(raw["categorical"])
        raw.pop("types", None)  # partitions written before specs carried per-column types
        raw.setdefault("task", "binary")
        return cls(**raw)
