"""Apache Singa candidate: the same tabular MLP, written against Singa's Python API (``singa.model``).

Singa runs only inside the Singa image (``docker/singa.Dockerfile``): PyPI has only a Python 3.6
wheel and Singa's own wheel index is not reachable from Kiln's build machines. Where ``singa``
cannot be imported the stage raises ``StageSkipped`` with that reason (exit code 99), Airflow marks
the task skipped, and evaluation proceeds without this candidate. It never reports a made-up metric.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ml_tasks.atomic import atomic_dir, write_json
from ml_tasks.errors import KilnError, StageSkipped
from ml_tasks.layout import CandidateFiles, FeatureFiles
from ml_tasks.train_mxnet import MLPConfig, count_rows, iter_arrays, iter_minibatches

log = logging.getLogger(__name__)
UNAVAILABLE = ("Apache Singa is not installed in this environment: PyPI only has a Python 3.6 wheel and Singa's "
               "own wheel index is unreachable here, so the Singa candidate runs only in the Singa image "
               "(docker/singa.Dockerfile, KILN_EXECUTION=kubernetes); skipped, no metric reported")


def import_singa():
    try:
        from singa import device, layer, model, opt, tensor
    except ImportError as exc:
        raise StageSkipped(f"{UNAVAILABLE} ({exc})") from exc
    return device, layer, model, opt, tensor


def train_singa(features: FeatureFiles, candidate: CandidateFiles, transform_dir: Path, cfg: MLPConfig) -> dict[str, Any]:
    device, layer, model, opt, tensor = import_singa()
    from ml_tasks.evaluate import compute_metrics

    class MLP(model.Model):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = [layer.Linear(cfg.hidden) for _ in range(cfg.layers)]
            self.relu = layer.ReLU()
            self.out = layer.Linear(2)
            self.softmax_cross_entropy = layer.SoftMaxCrossEntropy()

        def forward(self, x):
            for linear in self.hidden:
                x = self.relu(linear(x))
            return self.out(x)

        def train_one_batch(self, x, y):
            out = self.forward(x)
            loss = self.softmax_cross_entropy(out, y)
            self.optimizer(loss)
            return out, loss

    train_dir, test_dir = features.train, features.test
    steps = count_rows(train_dir) // cfg.batch_size
    if steps == 0:
        raise KilnError(f"too few training rows for batch_size {cfg.batch_size}")
    dev = device.get_default_device()
    dev.SetRandSeed(cfg.seed)
    width = next(iter_arrays(train_dir))[0].shape[1]
    tx = tensor.Tensor((cfg.batch_size, width), dev, tensor.float32)
    ty = tensor.Tensor((cfg.batch_size,), dev, tensor.int32)
    net = MLP()
    net.set_optimizer(opt.Adam(lr=cfg.learning_rate))
    net.compile([tx], is_train=True, use_graph=False, sequential=False)
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        for x, y in iter_minibatches(train_dir, cfg.batch_size, 0, 1, steps, cfg.seed, epoch):
            tx.copy_from_numpy(x)
            ty.copy_from_numpy(y.astype(np.int32))
            net(tx, ty)
        log.info("singa epoch %d/%d done", epoch, cfg.epochs)

    net.eval()
    scores, labels, ids = [], [], []
    for x, y, entity in iter_arrays(test_dir):
        batch = tensor.from_numpy(x.astype(np.float32))
        batch.to_device(dev)
        logits = tensor.to_numpy(net(batch))
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores.append((exp[:, 1] / exp.sum(axis=1)).astype(np.float64))
        labels.append(y)
        ids.extend(entity)
    score, label = np.concatenate(scores), np.concatenate(labels)
    import pandas as pd

    result = {"candidate": "singa_mlp", "framework": "singa", "task": "binary", "config": asdict(cfg), "test_rows": len(label)}
    with atomic_dir(candidate.dir) as tmp:
        files = CandidateFiles(tmp)
        net.save_states(str(files.singa_states))
        pd.DataFrame({"entity_id": ids, "label": label.astype(np.int32), "score": score}).to_parquet(files.predictions, index=False)
        write_json(files.info, {**result, "transform_dir": str(transform_dir)})
    return {**result, "test_auc": compute_metrics("binary", label, score)["auc"], "candidate_dir": str(candidate.dir)}
