"""A registered model version loaded for scoring without Spark: the numpy transform, then the candidate's
scorer (``ml_tasks.trainer``), whichever framework trained it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml_tasks.core.atomic import read_json
from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import VersionFiles
from ml_tasks.serving.portable import transform_matrix
from ml_tasks.training.candidates import LEGACY_SCORERS


@dataclass
class ModelBundle:
    version: str
    registration: str
    candidate: str
    framework: str
    task: str
    transform: dict[str, Any]
    scorer: Callable[[np.ndarray], np.ndarray] = field(repr=False)

    @classmethod
    def load(cls, version_dir: Path) -> ModelBundle:
        files = VersionFiles(version_dir)
        info = read_json(files.model.info)
        transform = read_json(files.transform.portable)
        scorer_path = info.get("scorer") or LEGACY_SCORERS.get(info["framework"])
        if scorer_path is None:
            raise KilnError(f"cannot serve framework {info['framework']!r} of {version_dir}: it names no scorer")
        from ml_tasks.trainer import load_scorer

        scorer = load_scorer(scorer_path, files.model.dir, info.get("python_path", ()))
        lineage = read_json(files.lineage) if files.lineage.exists() else {}
        return cls(lineage.get("version", version_dir.name), lineage.get("registration", version_dir.name),
                   info["candidate"], info["framework"], info.get("task", "binary"), transform, scorer)

    def features(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        columns: dict[str, list[Any]] = {}
        for name in self.transform["numeric"]:
            columns[name] = [np.nan if r.get(name) is None else r[name] for r in rows]
        for cat in self.transform["categorical"]:
            columns[cat["column"]] = [r.get(cat["column"]) for r in rows]
        return transform_matrix(columns, self.transform)

    def score_features(self, x: np.ndarray) -> np.ndarray:
        """The probability of the positive class (binary) or the predicted value (regression)."""
        return np.asarray(self.scorer(x), dtype=np.float64).reshape(-1)

    def score(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.score_features(self.features(rows))


SERVABILITY_SAMPLE = 1000
SERVABILITY_TOLERANCE = 1e-4  # MXNet scores in float32 on both sides; Spark's exports are checked at 1e-6 when trained


def check_servable(version_dir: Path, test_features_dir: Path, tolerance: float = SERVABILITY_TOLERANCE) -> dict[str, Any]:
    """Load ``version_dir`` the way serving does and score held-out rows; raise unless it matches the offline scores.

    Rows are matched by entity id among entities with one held-out row (file order differs between
    frameworks), up to ``SERVABILITY_SAMPLE`` of them.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    from ml_tasks.serving.parity import check_parity

    bundle = ModelBundle.load(version_dir)
    offline = pd.read_parquet(VersionFiles(version_dir).model.predictions, columns=["entity_id", "score"])
    offline = offline.drop_duplicates("entity_id", keep=False).set_index("entity_id")["score"]
    test = pq.read_table(test_features_dir, columns=["entity_id", "features"]).to_pandas()
    test = test.drop_duplicates("entity_id", keep=False)
    test = test[test["entity_id"].isin(offline.index)].head(SERVABILITY_SAMPLE)
    if test.empty:
        raise KilnError(f"no held-out rows in {test_features_dir} to check {version_dir} against its offline scores")
    online = bundle.score_features(np.stack(test["features"].to_numpy()).astype(float))
    want = offline.loc[test["entity_id"]].to_numpy()
    scale = max(1.0, float(np.nanmax(np.abs(want))))  # regression values: the tolerance is relative to their size
    diff = check_parity(online, want, tolerance * scale,
                        f"serving scores of {bundle.framework} model {version_dir.name} vs its offline scores")
    return {"servable": True, "rows_checked": len(test), "max_abs_diff": diff}
