"""Apache Singa candidate: the tabular MLP written against Singa's Python API (``singa.model``), CPU.

Same inputs and shape as the MXNet MLP (``ml_tasks.training.mlp``: streamed, seeded mini-batches from the
preprocessed Parquet; ReLU hidden layers; a softmax over two classes for binary labels, a linear
output on the standardised label for numeric ones), trained with Singa's Adam. Every epoch logs its
loss and held-out metric and checkpoints the model and the optimizer state, so a retried run resumes
after the newest finished epoch and ends bit-identical to an uninterrupted one.

Serving does not import Singa: the trained weights are exported as a plain MLP
(``portable_model.json``, scored by ``ml_tasks.serving.portable.load``), which the trainer contract checks against
Singa's own held-out scores before the candidate may compete.

Singa is built from source by ``make setup`` (``scripts/build_singa.sh``). Where it cannot be imported
the stage is skipped with that reason (exit code 99); it never reports a made-up metric.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ml_tasks.core.atomic import write_json
from ml_tasks.core.errors import KilnError, StageSkipped
from ml_tasks.core.layout import CandidateFiles
from ml_tasks.serving.portable import apply_output
from ml_tasks.trainer import Trained, TrainerInput
from ml_tasks.training.mlp import (
    MLPConfig,
    count_rows,
    data_fingerprint,
    epoch_files,
    epoch_history,
    finish_epoch,
    iter_minibatches,
    label_output,
    record_epoch,
    resume_epoch,
    score_rows,
)

log = logging.getLogger(__name__)
UNAVAILABLE = ("Apache Singa is not installed in this environment: `make setup` builds it from source "
               "(scripts/build_singa.sh, source set by KILN_SINGA_SOURCE); skipped, no metric reported")


def import_singa():
    try:
        from singa import autograd, device, layer, model, opt, tensor
    except ImportError as exc:
        raise StageSkipped(f"{UNAVAILABLE} ({exc})") from exc
    return autograd, device, layer, model, opt, tensor


def build_model(cfg: MLPConfig, task: str):
    autograd, _, layer, model, _, _ = import_singa()

    class SingaMLP(model.Model):
        def __init__(self) -> None:
            super().__init__()
            self.depth = cfg.layers
            for i in range(cfg.layers):  # one attribute per layer: Singa registers sub-layers by attribute
                setattr(self, f"hidden{i}", layer.Linear(cfg.hidden))
            self.relu = layer.ReLU()
            self.out = layer.Linear(2 if task == "binary" else 1)
            self.loss = layer.SoftMaxCrossEntropy() if task == "binary" else layer.MeanSquareError()
            self.masks: list[Any] | None = None

        def forward(self, x):
            for i in range(self.depth):
                x = self.relu(getattr(self, f"hidden{i}")(x))
                if self.masks is not None:
                    x = autograd.mul(x, self.masks[i])
            return self.out(x)

        def train_one_batch(self, x, y):
            out = self.forward(x)
            loss = self.loss(out, y)
            self.optimizer(loss)
            return out, loss

    return SingaMLP()


def dropout_masks(rng: np.random.Generator, rows: int, cfg: MLPConfig) -> list[np.ndarray]:
    """Inverted dropout drawn from the epoch's seeded generator (Singa 5.1's Dropout layer scales by
    ``1 - ratio`` instead of ``1 / (1 - ratio)`` and passes its ratio as the seed, so it is not used)."""
    keep = 1.0 - cfg.dropout
    return [(rng.random((rows, cfg.hidden)) < keep).astype(np.float32) / np.float32(keep) for _ in range(cfg.layers)]


def states_digest(states: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(states):
        h.update(name.encode())
        h.update(np.ascontiguousarray(states[name]).tobytes())
    return h.hexdigest()


def export_portable(states: dict[str, np.ndarray], cfg: MLPConfig, task: str, output: dict[str, Any]) -> dict[str, Any]:
    """The trained weights as a plain MLP. Binary: the two class logits fold into one (softmax over two
    classes is the sigmoid of their difference), so serving applies the same output as for MXNet."""
    w, b = states["out.W"].astype(np.float64), states["out.b"].astype(np.float64)
    if task == "binary":
        w, b = w[:, 1:2] - w[:, 0:1], b[1:2] - b[0:1]
    return {"kind": "mlp", "activation": "relu",
            "hidden": [{"weights": states[f"hidden{i}.W"].astype(np.float64).tolist(),
                        "bias": states[f"hidden{i}.b"].astype(np.float64).tolist()} for i in range(cfg.layers)],
            "out": {"weights": w.ravel().tolist(), "bias": float(b[0])}, "output": output}


def train(inp: TrainerInput) -> Trained:
    """Train (or resume) the Singa MLP (trainer contract): leaves Singa's weights and their plain-MLP export
    (served by ``ml_tasks.serving.portable.load``) and returns Singa's own held-out scores, with the weights' digest."""
    _, device, _, _, opt, tensor = import_singa()
    from ml_tasks.evaluation.evaluate import PRIMARY_METRIC, compute_metrics

    cfg, task, checkpoint_dir = MLPConfig.from_params(inp.params, inp.seed), inp.task, inp.checkpoint_dir
    train_dir, test_dir = inp.train_dir, inp.held_out_dir
    total = count_rows(train_dir)
    steps = total // cfg.batch_size
    if steps == 0:
        raise KilnError(f"{total} training rows are too few for batch_size {cfg.batch_size}")
    dev = device.get_default_device()
    dev.SetRandSeed(cfg.seed)  # the weights' initial values
    output = label_output(task, train_dir)
    fingerprint = data_fingerprint(train_dir)
    first = next(iter_minibatches(train_dir, cfg.batch_size, 0, 1, 1, cfg.seed, 0))[0]
    tx = tensor.Tensor((cfg.batch_size, first.shape[1]), dev, tensor.float32)
    ty = tensor.Tensor((cfg.batch_size,) if task == "binary" else (cfg.batch_size, 1), dev,
                       tensor.int32 if task == "binary" else tensor.float32)
    net = build_model(cfg, task)
    optimizer = opt.Adam(lr=cfg.learning_rate)
    net.optimizer = optimizer  # called on the loss in train_one_batch
    net.compile([tx], is_train=True, use_graph=False, sequential=False)

    def to_tensor(a: np.ndarray):
        t = tensor.from_numpy(np.ascontiguousarray(a))
        t.to_device(dev)
        return t

    def states() -> dict[str, np.ndarray]:
        return {name: tensor.to_numpy(value) for name, value in net.get_states().items()}

    def singa_score(x: np.ndarray) -> np.ndarray:
        raw = tensor.to_numpy(net(to_tensor(x))).astype(np.float64)
        return apply_output(raw[:, 1] - raw[:, 0] if task == "binary" else raw, output)

    def predict(directory: Path, score=singa_score) -> tuple[np.ndarray, np.ndarray, list[str]]:
        net.eval()
        net.masks = None
        try:
            return score_rows(directory, score)
        finally:
            net.train()

    start_epoch = resume_epoch(checkpoint_dir, cfg, fingerprint, 1, task)
    if start_epoch:
        saved = np.load(epoch_files(checkpoint_dir, start_epoch, 0).singa_states)
        net.set_states({k.removeprefix("model/"): to_tensor(saved[k]) for k in saved.files if k.startswith("model/")})
        optimizer.set_states({"step_counter": float(saved["opt/step_counter"]),
                              **{moment: {k.split("/", 2)[2]: to_tensor(saved[k]) for k in saved.files
                                          if k.startswith(f"opt/{moment}/")} for moment in ("m", "v")}})
        log.info("resuming after epoch %d from %s", start_epoch, checkpoint_dir)
    if start_epoch >= cfg.epochs:
        log.info("all %d epochs already done", cfg.epochs)

    metric = PRIMARY_METRIC[task]
    history = epoch_history(checkpoint_dir, 0, start_epoch)
    train_seconds, trained, first_batch_wall = 0.0, 0, None
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        rng = np.random.default_rng([cfg.seed, epoch, 1])  # dropout masks, reproducible per epoch, resumed or not
        t0, total_loss = time.perf_counter(), 0.0
        for x, y in iter_minibatches(train_dir, cfg.batch_size, 0, 1, steps, cfg.seed, epoch):
            tx.copy_from_numpy(x)
            if task == "binary":
                ty.copy_from_numpy(y.astype(np.int32))
            else:
                ty.copy_from_numpy(((y - output["shift"]) / output["scale"]).astype(np.float32).reshape(-1, 1))
            net.masks = [to_tensor(m) for m in dropout_masks(rng, len(y), cfg)] if cfg.dropout > 0 else None
            _, loss = net(tx, ty)
            total_loss += float(tensor.to_numpy(loss).ravel()[0])
            first_batch_wall = first_batch_wall or time.time()
        elapsed = time.perf_counter() - t0
        train_seconds, trained = train_seconds + elapsed, trained + steps * cfg.batch_size
        scores, labels, _ = predict(test_dir)
        held_out = compute_metrics(task, labels, scores)[metric]
        log.info("singa epoch %d/%d loss=%.4f val_%s=%.4f samples/s=%.0f", epoch, cfg.epochs, total_loss / steps,
                 metric, held_out, steps * cfg.batch_size / elapsed)
        target = epoch_files(checkpoint_dir, epoch, 0)
        target.dir.mkdir(parents=True, exist_ok=True)
        saved_opt = optimizer.get_states()
        np.savez(target.singa_states, **{f"model/{k}": v for k, v in states().items()},
                 **{"opt/step_counter": np.asarray(saved_opt["step_counter"])},
                 **{f"opt/{moment}/{k}": tensor.to_numpy(v) for moment in ("m", "v") for k, v in saved_opt[moment].items()})
        finish_epoch(checkpoint_dir, 0, epoch, cfg, fingerprint, task)
        record_epoch(checkpoint_dir, 0, history, {"epoch": epoch, "loss": total_loss / steps, f"held_out_{metric}": held_out})

    final = states()
    scores, _, _ = predict(test_dir)
    files = CandidateFiles(inp.output_dir)
    np.savez(files.singa_states, **final)  # Singa's own weights, by layer name (``net.set_states``)
    write_json(files.portable_model, export_portable(final, cfg, task, output))
    return Trained(scores, framework="singa", info={
        "config": asdict(cfg), "params_digest": states_digest(final), "first_batch_unix": first_batch_wall,
        "samples_per_s": round(trained / train_seconds, 1) if train_seconds else None, "output": output,
        "history": history})
