"""MXNet candidate: a Gluon ``HybridBlock`` MLP trained from the preprocessed Parquet in mini-batches.

One code path serves single-process training (kvstore ``local``) and each worker of a distributed
run (kvstore ``dist_sync``, launched by ``ml_tasks.training.mxnet_cluster``). Data streams from Parquet in
record batches; worker ``rank`` takes every ``num_workers``-th mini-batch, so shards are disjoint and
every worker makes the same number of steps (``dist_sync`` would hang otherwise). Each epoch writes
a checkpoint; a retried run resumes after the newest epoch all ranks finished. In one process the
checkpoint holds the optimizer state too, so a resumed run ends bit-identical to an uninterrupted
one; distributed, the optimizer lives on the servers and restarts from the checkpointed weights. Rank 0
writes the artifact: exported symbol and params, held-out predictions, and the feature transform
reference, in the same candidate layout as the Spark models.

Binary labels train with sigmoid cross-entropy (the output is a probability); numeric labels train with
an L2 loss on the standardised label, and the output maps back to the label's unit (``output`` in
``candidate.json``, which serving applies too).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ml_tasks.core.atomic import read_json, write_json
from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import CandidateFiles, CheckpointFiles
from ml_tasks.serving.portable import apply_output
from ml_tasks.trainer import Secondary, Trained, TrainerInput
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


def import_mxnet():
    """Import MXNet 1.9.1, which still spells numpy's removed aliases (``np.bool``) on newer numpy."""
    if not hasattr(np, "bool"):
        np.bool = np.bool_  # type: ignore[attr-defined]
    import mxnet

    return mxnet


def build_net(cfg: MLPConfig):
    mx = import_mxnet()
    from mxnet.gluon import nn

    class MLP(nn.HybridBlock):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            with self.name_scope():
                self.body = nn.HybridSequential()
                for _ in range(cfg.layers):
                    self.body.add(nn.Dense(cfg.hidden, activation="relu"))
                    if cfg.dropout > 0:
                        self.body.add(nn.Dropout(cfg.dropout))
                self.out = nn.Dense(1)

        def hybrid_forward(self, F, x):
            return self.out(self.body(x))

    net = MLP(prefix="kiln_mlp_")
    mx.random.seed(cfg.seed)
    net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    net.hybridize(static_alloc=True, static_shape=False)
    return net


def predict(net, directory: Path, output: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    mx = import_mxnet()
    return score_rows(directory, lambda x: apply_output(net(mx.nd.array(x)).asnumpy(), output))


def params_digest(net) -> str:
    """SHA-256 over all parameter values: equal digests mean identical models."""
    h = hashlib.sha256()
    for name, p in sorted(net.collect_params().items()):
        h.update(name.encode())
        h.update(p.data().asnumpy().tobytes())
    return h.hexdigest()


def _save_checkpoint(checkpoint_dir: Path, rank: int, net, trainer, epoch: int, cfg: MLPConfig, fingerprint: str,
                     task: str) -> None:
    target = epoch_files(checkpoint_dir, epoch, rank)
    target.dir.mkdir(parents=True, exist_ok=True)
    net.save_parameters(str(target.mxnet_params))
    if not trainer._update_on_kvstore:  # server-held optimizer state cannot be saved from a worker
        trainer.save_states(str(target.mxnet_trainer_states))
    finish_epoch(checkpoint_dir, rank, epoch, cfg, fingerprint, task)


def train(inp: TrainerInput) -> Trained | Secondary:
    """Train (or resume) the MLP (trainer contract); in a ``dist_sync`` run (``inp.params['kvstore']``) only
    rank 0 reports, the other workers return ``Secondary``. Its info holds the params digest and throughput."""
    mx = import_mxnet()
    from mxnet import autograd, gluon

    from ml_tasks.evaluation.evaluate import PRIMARY_METRIC, compute_metrics

    cfg, task, checkpoint_dir = MLPConfig.from_params(inp.params, inp.seed), inp.task, inp.checkpoint_dir
    kvstore = inp.params.get("kvstore", "local")
    kv = mx.kv.create(kvstore)
    rank, num_workers = kv.rank, kv.num_workers
    train_dir, test_dir = inp.train_dir, inp.held_out_dir
    total = count_rows(train_dir)
    steps = (total // cfg.batch_size) // num_workers
    if steps == 0:
        raise KilnError(f"{total} training rows are too few for batch_size {cfg.batch_size} x {num_workers} workers")

    net = build_net(cfg)
    # Distributed: the optimizer runs on the servers. Worker-side updates (update_on_kvstore=False) race
    # in 1.9.1's pushpull (apache/mxnet#17007) and let workers drift apart in about 1 run of 4 here.
    # Locally the optimizer runs in-process, so its state can be checkpointed and resumed exactly.
    server_side = kvstore.startswith("dist")
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": cfg.learning_rate}, kvstore=kv,
                            update_on_kvstore=server_side)
    loss_fn = gluon.loss.SigmoidBinaryCrossEntropyLoss() if task == "binary" else gluon.loss.L2Loss()
    output = label_output(task, train_dir)
    fingerprint = data_fingerprint(train_dir)
    start_epoch = resume_epoch(checkpoint_dir, cfg, fingerprint, num_workers, task)
    first = next(iter_minibatches(train_dir, cfg.batch_size, 0, 1, 1, cfg.seed, 0))[0]
    net(mx.nd.array(first))  # materialise deferred shapes before loading or the first step
    if start_epoch:
        resume_from = epoch_files(checkpoint_dir, start_epoch, rank)
        net.load_parameters(str(resume_from.mxnet_params))
        if resume_from.mxnet_trainer_states.exists():
            trainer.load_states(str(resume_from.mxnet_trainer_states))
        log.info("rank %d resuming after epoch %d from %s", rank, start_epoch, resume_from.dir)
    if start_epoch >= cfg.epochs:
        log.info("rank %d: all %d epochs already done", rank, cfg.epochs)

    history = epoch_history(checkpoint_dir, rank, start_epoch)
    started = time.perf_counter()
    first_batch_at = None
    first_batch_wall = None
    train_seconds, trained = 0.0, 0
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        mx.random.seed(cfg.seed + epoch)  # dropout masks reproducible per epoch, resumed or not
        t0, seen, total_loss = time.perf_counter(), 0, 0.0
        for x, y in iter_minibatches(train_dir, cfg.batch_size, rank, num_workers, steps, cfg.seed, epoch):
            if output["kind"] == "affine":
                y = (y - output["shift"]) / output["scale"]
            data, label = mx.nd.array(x), mx.nd.array(y).reshape((-1, 1))
            with autograd.record():
                loss = loss_fn(net(data), label)
            loss.backward()
            trainer.step(cfg.batch_size * num_workers)
            total_loss += float(loss.mean().asscalar())
            seen += len(y)
            if first_batch_at is None:
                first_batch_at = time.perf_counter() - started
                first_batch_wall = time.time()
        elapsed = time.perf_counter() - t0
        train_seconds += elapsed
        trained += seen
        scores, labels, _ = predict(net, test_dir, output)
        metric = PRIMARY_METRIC[task]
        held_out = compute_metrics(task, labels, scores)[metric]
        log.info("rank %d epoch %d/%d loss=%.4f val_%s=%.4f samples/s=%.0f", rank, epoch, cfg.epochs,
                 total_loss / max(steps, 1), metric, held_out, seen / elapsed)
        record_epoch(checkpoint_dir, rank, history, {"epoch": epoch, "loss": total_loss / max(steps, 1),
                                                     f"held_out_{metric}": held_out})
        _save_checkpoint(checkpoint_dir, rank, net, trainer, epoch, cfg, fingerprint, task)

    digest = params_digest(net)
    write_json(CheckpointFiles(checkpoint_dir).final_rank(rank), {"digest": digest, "rank": rank, "num_workers": num_workers})
    result: dict[str, Any] = {"kvstore": kvstore, "rank": rank, "num_workers": num_workers, "params_digest": digest,
                              "config": asdict(cfg), "time_to_first_batch_s": first_batch_at,
                              "first_batch_unix": first_batch_wall,
                              "samples_per_s": round(trained / train_seconds, 1) if train_seconds else None,
                              "history": history}
    if rank != 0:
        return Secondary(result)
    scores, _, _ = predict(net, test_dir, output)
    files = CandidateFiles(inp.output_dir)
    net.export(str(files.mxnet_prefix), epoch=0)
    write_json(files.mlp_output, output)
    return Trained(scores, framework="mxnet", info={**result, "output": output})


def load(model_dir: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The scorer: the exported symbol and params, and the output mapping (versions registered before it had
    its own file keep it in ``candidate.json``)."""
    mx = import_mxnet()
    files = CandidateFiles(model_dir)
    net = mx.gluon.SymbolBlock.imports(str(files.mxnet_symbol), ["data"], str(files.mxnet_params))
    output = read_json(files.mlp_output) if files.mlp_output.exists() else read_json(files.info)["output"]
    return lambda features: apply_output(net(mx.nd.array(np.asarray(features, dtype=np.float32))).asnumpy(), output)
