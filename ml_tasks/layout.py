"""Where each stage reads and writes: one folder per partition (``ds``), so a rerun replaces only its own."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def default_data_root() -> Path:
    """``KILN_DATA_ROOT`` if set, else ``data/`` in the project (git-ignored)."""
    return Path(os.environ.get("KILN_DATA_ROOT", PROJECT_ROOT / "data")).resolve()


def check_ds(ds: str) -> str:
    """Return ``ds`` if it is an ISO date (YYYY-MM-DD), else raise naming the value."""
    try:
        date.fromisoformat(ds)
    except (TypeError, ValueError):
        raise ValueError(f"partition date {ds!r} is not an ISO date YYYY-MM-DD") from None
    return ds


def latest_partition(data_root: Path) -> str:
    """The newest ``ds`` with a raw partition under ``data_root``; a clear error when there is none."""
    found = sorted(p.name.removeprefix("ds=") for p in (data_root / "raw").glob("ds=*") if not p.name.startswith("."))
    if not found:
        raise FileNotFoundError(f"no raw partitions under {data_root / 'raw'}; run kiln_training first")
    return found[-1]


@dataclass(frozen=True)
class Layout:
    """Paths for one partition under a data root."""

    data_root: Path
    ds: str

    def __post_init__(self) -> None:
        check_ds(self.ds)

    @classmethod
    def at(cls, data_root: str | Path, ds: str) -> Layout:
        """The layout of partition ``ds`` under ``data_root`` (made absolute)."""
        return cls(Path(data_root).resolve(), ds)

    @property
    def raw_dir(self) -> Path:
        return self.data_root / "raw" / f"ds={self.ds}"

    @property
    def run_dir(self) -> Path:
        return self.data_root / "runs" / f"ds={self.ds}"

    @property
    def validation_report(self) -> Path:
        return self.run_dir / "validation.json"

    @property
    def features_dir(self) -> Path:
        return self.run_dir / "features"

    @property
    def transform_dir(self) -> Path:
        return self.run_dir / "transform"

    def candidate_dir(self, name: str) -> Path:
        return self.run_dir / "candidates" / name

    @property
    def candidates_root(self) -> Path:
        return self.run_dir / "candidates"

    @property
    def evaluation(self) -> Path:
        return self.run_dir / "evaluation.json"

    @property
    def registry_root(self) -> Path:
        return self.data_root / "registry"

    def previous_raw_dir(self) -> Path:
        """The previous calendar day's raw partition (drift baseline), whether or not it exists."""
        prev = date.fromordinal(date.fromisoformat(self.ds).toordinal() - 1).isoformat()
        return self.data_root / "raw" / f"ds={prev}"

    def as_dict(self) -> dict[str, str]:
        return {
            "ds": self.ds,
            "data_root": str(self.data_root),
            "raw_dir": str(self.raw_dir),
            "run_dir": str(self.run_dir),
            "features_dir": str(self.features_dir),
            "transform_dir": str(self.transform_dir),
            "registry_root": str(self.registry_root),
        }
