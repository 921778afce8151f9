"""What the MLP candidates share, whatever the framework (MXNet, Singa): their settings, the
mini-batches streamed from the preprocessed Parquet, the label's output mapping and epoch checkpoints.

Batches are read ``READ_ROWS`` at a time, so memory stays bounded whatever the partition size, and
shuffled with a generator seeded by (seed, epoch): a resumed run sees the same batches as an
uninterrupted one. A checkpoint counts only once its ``done.json`` is written, last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ml_tasks.core.atomic import read_json, write_json
from ml_tasks.core.layout import CheckpointFiles, EpochFiles
from ml_tasks.core.run_settings import SETTINGS
from ml_tasks.trainer import iter_batches, parquet_files

log = logging.getLogger(__name__)
READ_ROWS = 65_536  # rows per Parquet read: memory stays bounded whatever the partition size


@dataclass(frozen=True)
class MLPConfig:
    # Defaults: the run settings' (mlp_<field>).
    hidden: int = SETTINGS["mlp_hidden"].default
    layers: int = SETTINGS["mlp_layers"].default
    dropout: float = SETTINGS["mlp_dropout"].default
    learning_rate: float = SETTINGS["mlp_learning_rate"].default
    epochs: int = SETTINGS["mlp_epochs"].default
    batch_size: int = SETTINGS["mlp_batch_size"].default
    seed: int = SETTINGS["mlp_seed"].default

    @classmethod
    def from_params(cls, params: Mapping[str, Any], seed: int) -> MLPConfig:
        """From the ``mlp_*`` run settings a trainer receives."""
        return cls(hidden=params["mlp_hidden"], layers=params["mlp_layers"], dropout=params["mlp_dropout"],
                   learning_rate=params["mlp_learning_rate"], epochs=params["mlp_epochs"],
                   batch_size=params["mlp_batch_size"], seed=seed)

    def as_settings(self) -> dict[str, Any]:
        """The ``mlp_*`` run settings of this configuration."""
        return {f"mlp_{k}": v for k, v in asdict(self).items()}


def count_rows(directory: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(directory))


def iter_arrays(directory: Path, rows: int = READ_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
    """Stream (features, labels, entity_ids) as float32 from a folder of Parquet files, ``rows`` at a time."""
    return iter_batches(directory, rows, np.float32)


def iter_minibatches(directory: Path, batch_size: int, rank: int, num_workers: int, steps: int, seed: int, epoch: int):
    """This worker's ``steps`` mini-batches for ``epoch``: every ``num_workers``-th one, shuffled per read."""
    rng = np.random.default_rng([seed, epoch])
    buf_x: list[np.ndarray] = []
    buf_y: list[np.ndarray] = []
    buffered, index, made = 0, 0, 0
    for x, y, _ in iter_arrays(directory):
        order = rng.permutation(len(y))  # shuffle within the read, same on every worker
        buf_x.append(x[order])
        buf_y.append(y[order])
        buffered += len(y)
        while buffered >= batch_size:
            bx, by = np.concatenate(buf_x), np.concatenate(buf_y)
            head_x, head_y = bx[:batch_size], by[:batch_size]
            buf_x, buf_y, buffered = [bx[batch_size:]], [by[batch_size:]], buffered - batch_size
            if index % num_workers == rank:
                yield head_x, head_y
                made += 1
                if made == steps:
                    return
            index += 1


def score_rows(directory: Path, score: Callable[[np.ndarray], np.ndarray],
               chunk: int = 8192) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(scores, labels, entity_ids) of every row in ``directory``, ``score`` applied ``chunk`` rows at a time."""
    scores, labels, ids = [], [], []
    for x, y, entity in iter_arrays(directory):
        scores.extend(score(x[start:start + chunk]) for start in range(0, len(y), chunk))
        labels.append(y)
        ids.extend(entity)
    return np.concatenate(scores), np.concatenate(labels), ids


def label_output(task: str, train_dir: Path) -> dict[str, Any]:
    """How the net's raw output becomes a prediction: a sigmoid, or the inverse of the label's standardisation."""
    if task == "binary":
        return {"kind": "sigmoid"}
    n, total, squares = 0, 0.0, 0.0
    for _, y, _ in iter_arrays(train_dir):
        y64 = y.astype(np.float64)
        n, total, squares = n + len(y64), total + y64.sum(), squares + (y64 ** 2).sum()
    mean = total / max(n, 1)
    std = float(np.sqrt(max(squares / max(n, 1) - mean ** 2, 0.0))) or 1.0
    return {"kind": "affine", "scale": std, "shift": float(mean)}


def data_fingerprint(directory: Path) -> str:
    """Names and sizes of the training files: preprocessing writes new file names on every run."""
    return hashlib.sha256(json.dumps([(f.name, f.stat().st_size) for f in parquet_files(directory)]).encode()).hexdigest()[:16]


def epoch_files(checkpoint_dir: Path, epoch: int, rank: int) -> EpochFiles:
    return CheckpointFiles(checkpoint_dir).epoch(epoch, rank)


def checkpoint_key(cfg: MLPConfig, fingerprint: str, task: str) -> dict[str, Any]:
    return {"config": {k: v for k, v in asdict(cfg).items() if k != "epochs"}, "data": fingerprint, "task": task}


def resume_epoch(checkpoint_dir: Path, cfg: MLPConfig, fingerprint: str, num_workers: int, task: str = "binary") -> int:
    """The newest epoch, at most ``cfg.epochs``, every rank checkpointed for this model and data (0: start afresh).

    Ranks must resume together: ``dist_sync`` hangs if one makes more steps than another, and a
    killed worker may be an epoch behind the rest. A rerun asking for fewer epochs than were
    checkpointed must not pick up later epochs' weights.
    """
    wanted = checkpoint_key(cfg, fingerprint, task)
    files = CheckpointFiles(checkpoint_dir)
    epochs = files.epochs()
    for epoch in sorted(epochs, reverse=True):
        if epoch > cfg.epochs:
            continue
        metas = [files.epoch(epoch, r).done for r in range(num_workers)]
        if all(m.exists() and {k: v for k, v in read_json(m).items() if k != "epoch"} == wanted for m in metas):
            return epoch
    if epochs:
        log.warning("no checkpoint in %s matches this model, data and worker count; starting afresh", checkpoint_dir)
    return 0


def finish_epoch(checkpoint_dir: Path, rank: int, epoch: int, cfg: MLPConfig, fingerprint: str, task: str) -> None:
    """Mark this rank's epoch checkpoint complete (after its files are written) and prune older epochs."""
    files = CheckpointFiles(checkpoint_dir)
    write_json(files.epoch(epoch, rank).done, {"epoch": epoch, **checkpoint_key(cfg, fingerprint, task)})
    for old, folder in files.epochs().items():  # keep this epoch and the one before it
        if old < epoch - 1:
            shutil.rmtree(files.epoch(old, rank).dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                folder.rmdir()


def epoch_history(checkpoint_dir: Path, rank: int, upto: int) -> list[dict[str, Any]]:
    """The per-epoch record (loss, held-out metric) of the epochs a resumed run keeps: its training curve."""
    path = CheckpointFiles(checkpoint_dir).history(rank)
    return [e for e in read_json(path) if e["epoch"] <= upto] if path.exists() else []


def record_epoch(checkpoint_dir: Path, rank: int, history: list[dict[str, Any]], entry: dict[str, Any]) -> None:
    history.append({k: (round(v, 6) if isinstance(v, float) else v) for k, v in entry.items()})
    write_json(CheckpointFiles(checkpoint_dir).history(rank), history)
