"""A registered model version loaded for scoring without Spark: numpy transform + numpy or MXNet model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml_tasks.atomic import read_json
from ml_tasks.errors import KilnError
from ml_tasks.portable import MODEL_FILE, TRANSFORM_FILE, predict_proba, transform_matrix


@dataclass
class ModelBundle:
    version: str
    candidate: str
    framework: str
    transform: dict[str, Any]
    model: Any = field(repr=False)

    @classmethod
    def load(cls, version_dir: Path) -> ModelBundle:
        info = read_json(version_dir / "model" / "candidate.json")
        transform = read_json(version_dir / "transform" / TRANSFORM_FILE)
        if info["framework"] == "spark_mllib":
            model: Any = read_json(version_dir / "model" / MODEL_FILE)
        elif info["framework"] == "mxnet":
            from ml_tasks.train_mxnet import import_mxnet

            mx = import_mxnet()
            model = mx.gluon.SymbolBlock.imports(str(version_dir / "model" / "model-symbol.json"), ["data"],
                                                 str(version_dir / "model" / "model-0000.params"))
        else:
            raise KilnError(f"cannot serve framework {info['framework']!r} of {version_dir}")
        return cls(version_dir.name, info["candidate"], info["framework"], transform, model)

    def features(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        columns: dict[str, list[Any]] = {}
        for name in self.transform["numeric"]:
            columns[name] = [np.nan if r.get(name) is None else r[name] for r in rows]
        for cat in self.transform["categorical"]:
            columns[cat["column"]] = [r.get(cat["column"]) for r in rows]
        return transform_matrix(columns, self.transform)

    def score_features(self, x: np.ndarray) -> np.ndarray:
        if self.framework == "spark_mllib":
            return predict_proba(x, self.model)
        from ml_tasks.train_mxnet import import_mxnet

        mx = import_mxnet()
        return mx.nd.sigmoid(self.model(mx.nd.array(x.astype(np.float32)))).asnumpy().ravel().astype(np.float64)

    def score(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.score_features(self.features(rows))
