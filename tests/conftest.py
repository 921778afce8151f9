"""Shared fixtures: a fresh data root per test, and one small preprocessed partition per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("KILN_SPARK_MASTER", "local[2]")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def small_features(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One synthetic partition (8 000 rows) preprocessed on real Spark, shared by the training tests."""
    from ml_tasks.ingest import ingest
    from ml_tasks.layout import Layout
    from ml_tasks.preprocess import preprocess

    layout = Layout(tmp_path_factory.mktemp("features"), "2026-03-02")
    ingest(layout.ds, layout.raw_dir, rows=8_000)
    summary = preprocess(layout.raw_dir, layout.features_dir, layout.transform_dir, pca_k=3)
    return {"layout": layout, "summary": summary}  # type: ignore[dict-item]
