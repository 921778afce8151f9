"""Helpers shared by the benchmarks: synthetic feature folders and a scratch data root."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ml_tasks.core.layout import Layout


def write_features(layout: Layout, rows: int, dim: int = 22, seed: int = 0) -> None:
    """Preprocessed-looking features (list<double>) with a learnable label, without running Spark."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=dim)
    for split, n in (("train", rows), ("test", rows // 4)):
        x = rng.normal(size=(n, dim))
        label = (rng.random(n) < 1 / (1 + np.exp(-(x @ weights) / 2))).astype(np.int32)
        folder = layout.features_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        features = pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32)), pa.array(x.ravel()))
        table = pa.table({"entity_id": [f"e{i}" for i in range(n)], "label": label, "features": features})
        pq.write_table(table, folder / "part-00000.parquet")
    layout.transform_dir.mkdir(parents=True, exist_ok=True)
