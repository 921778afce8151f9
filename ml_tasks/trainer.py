"""The trainer contract: how any candidate, built-in or yours, trains, and what it must leave behind.

A trainer is a function ``train(inp: TrainerInput) -> Trained`` in an importable module, named in the
dataset spec by import path (``my_models.wide:train``). Kiln calls it with:

- ``inp.train_dir`` / ``inp.held_out_dir``: the preprocessed rows as Parquet folders with columns
  ``entity_id`` (string), ``label`` (0/1 or a number) and ``features`` (list of doubles, the same width
  for every row). ``inp.train_arrays()`` and ``inp.held_out_features()`` load them as numpy arrays.
  Held-out labels are for progress logs only: evaluation compares candidates on exactly these rows, so
  choose hyper-parameters or stop early on a split of the training rows, never on them.
- ``inp.task`` (``binary`` or ``regression``), ``inp.params`` (your declared hyper-parameters, already
  checked against their bounds), ``inp.seed``;
- ``inp.output_dir``: an empty folder for the model artifact. Kiln publishes it whole only after the
  checks below pass; a failed try leaves nothing. ``inp.checkpoint_dir`` survives retries of the run.

It returns ``Trained(scores=...)``: one prediction per held-out row, in ``held_out_features()`` order
(the probability of label 1 for a binary task, the predicted value for regression).

Serving scores without the trainer: the spec names a scorer, by default ``load`` in the trainer's module,
``load(model_dir: Path) -> Callable[[np.ndarray], np.ndarray]``, which maps rows of transformed features
(float64, shape ``(n, width)``) to predictions. Before the candidate may compete Kiln checks that the
artifact folder is not empty, that every held-out row has a finite prediction, and that the scorer,
loaded from the written folder, reproduces the predictions (parity). Any failure, or an exception in
the trainer, fails the candidate's own task with the reason; the other candidates still compete.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml_tasks.core.atomic import atomic_dir, write_json
from ml_tasks.core.errors import KilnError, StageSkipped
from ml_tasks.core.layout import CandidateFiles, FeatureFiles
from ml_tasks.training.candidates import TrainerRef, split_path

log = logging.getLogger(__name__)
PARITY_ROWS = 2000  # held-out rows the loaded scorer must reproduce


class TrainerFailed(KilnError):
    """A trainer raised, returned the wrong thing, or left a model that cannot be trusted; names which and why."""


@dataclass(frozen=True)
class TrainerInput:
    """What a trainer gets. Paths are absolute; ``params`` maps each declared hyper-parameter to its value."""

    candidate: str
    task: str
    train_dir: Path
    held_out_dir: Path
    params: Mapping[str, Any]
    seed: int
    output_dir: Path
    checkpoint_dir: Path

    def train_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Training features ``(n, width)`` and labels ``(n,)``, float64."""
        x, y, _ = read_rows(self.train_dir)
        return x, y

    def held_out_features(self) -> np.ndarray:
        """The held-out features ``(m, width)``, float64, in the order ``Trained.scores`` must follow."""
        return read_rows(self.held_out_dir)[0]


@dataclass(frozen=True)
class Trained:
    """What a trainer returns: its held-out predictions, and small JSON facts kept in ``candidate.json``."""

    scores: Any
    framework: str = "custom"
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Secondary:
    """Returned by a worker of a distributed trainer that does not report (MXNet ranks other than 0)."""

    info: Mapping[str, Any] = field(default_factory=dict)


# --- reading the features ------------------------------------------------------------------------------------------
def parquet_files(directory: Path) -> list[Path]:
    files = sorted(Path(directory).glob("*.parquet"))
    if not files:
        raise KilnError(f"no Parquet files in {directory}; did preprocess run?")
    return files


def iter_batches(directory: Path, rows: int = 65_536,
                 dtype: type = np.float64) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
    """Stream (features, labels, entity_ids) ``rows`` at a time, in the contract's row order."""
    import pyarrow.parquet as pq

    for path in parquet_files(directory):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows, columns=["entity_id", "label", "features"]):
            feats = batch.column("features")
            width = len(feats[0]) if len(feats) else 0
            x = feats.flatten().to_numpy(zero_copy_only=False).reshape(-1, width).astype(dtype)
            yield x, batch.column("label").to_numpy().astype(dtype), batch.column("entity_id").to_pylist()


def read_rows(directory: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    parts = list(iter_batches(directory))
    if not parts:
        raise KilnError(f"no rows in {directory}")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), [i for p in parts for i in p[2]]


# --- import paths ---------------------------------------------------------------------------------------------------
def import_object(path: str, search: Sequence[str] = ()) -> Any:
    """Import ``module:attr``, with the ``search`` folders put first on ``sys.path``."""
    module, attr = split_path(path)
    for folder in reversed(search):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise KilnError(f"cannot import {path!r}: {exc}") from None


def load_scorer(scorer: str, model_dir: Path, search: Sequence[str] = ()) -> Callable[[np.ndarray], np.ndarray]:
    loader = import_object(scorer, search)
    score = loader(Path(model_dir))
    if not callable(score):
        raise KilnError(f"scorer {scorer!r} returned {type(score).__name__}, not a function of a feature matrix")
    return score


# --- running a trainer ----------------------------------------------------------------------------------------------
def _fail(ref: TrainerRef, reason: str) -> TrainerFailed:
    return TrainerFailed(f"candidate {ref.name} (trainer {ref.entry}): {reason}")


def check_trained(ref: TrainerRef, returned: Any, model_dir: Path, held_out: tuple[np.ndarray, np.ndarray, list[str]],
                  task: str) -> np.ndarray:
    """The held-out scores, once the result, the artifact and the scorer's parity are as the contract says."""
    x, _, _ = held_out
    if not isinstance(returned, Trained):
        raise _fail(ref, f"returned {type(returned).__name__}, expected Trained(scores=...) (ml_tasks.trainer)")
    try:
        scores = np.asarray(returned.scores, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise _fail(ref, f"its scores are not numbers: {exc}") from None
    if len(scores) != len(x):
        raise _fail(ref, f"returned {len(scores)} held-out predictions for {len(x)} held-out rows")
    bad = int((~np.isfinite(scores)).sum())
    if bad:
        raise _fail(ref, f"{bad} of {len(scores)} held-out predictions are NaN or infinite")
    if task == "binary" and not ((scores >= 0) & (scores <= 1)).all():
        raise _fail(ref, "a binary task's predictions must be probabilities in [0, 1]; got "
                         f"{scores.min():g}..{scores.max():g}")
    if not any(model_dir.iterdir()):
        raise _fail(ref, f"left no model artifact in its output folder {model_dir}")
    try:
        served = load_scorer(ref.scorer, model_dir, ref.python_path)(x[:PARITY_ROWS])
    except Exception as exc:  # the user's loader: any failure is the candidate's verdict
        raise _fail(ref, f"its scorer {ref.scorer} failed on the written model: {type(exc).__name__}: {exc}") from None
    want = scores[:PARITY_ROWS]
    try:
        served = np.asarray(served, dtype=np.float64).reshape(-1)
        if served.shape != want.shape:
            raise KilnError(f"shape {served.shape} != {want.shape}")
        diff = np.abs(served - want)
        if not np.isfinite(served).all() or not diff.max(initial=0.0) <= ref.tolerance * max(1.0, float(np.abs(want).max(initial=0.0))):
            raise KilnError(f"differs by up to {diff.max(initial=0.0):g} (tolerance {ref.tolerance:g})")
    except (KilnError, TypeError, ValueError) as exc:
        raise _fail(ref, f"its scorer {ref.scorer}, loaded from the written model, does not reproduce its "
                         f"held-out predictions: {exc}") from None
    return scores


class _NotPublished(Exception):
    """Leaves ``atomic_dir`` without publishing: a secondary worker's folder is not the candidate."""

    def __init__(self, result: Secondary):
        super().__init__("secondary worker")
        self.result = result


def run_trainer(ref: TrainerRef, *, task: str, features: FeatureFiles, candidate: CandidateFiles, checkpoint_dir: Path,
                params: Mapping[str, Any], seed: int, transform_dir: Path | None = None,
                failure_file: Path | None = None) -> dict[str, Any]:
    """Train candidate ``ref`` into ``candidate.dir`` through the contract; returns what ``candidate.json`` holds.

    The artifact is written to a temporary folder and replaces ``candidate.dir`` only once checked, so
    a retry or a concurrent run of the same partition never sees half a candidate. On failure the reason
    is written to ``failure_file`` (for evaluation's table) and raised as ``TrainerFailed``.
    """
    from ml_tasks.evaluation.evaluate import PRIMARY_METRIC, compute_metrics

    if not features.train.exists():
        raise KilnError(f"no preprocessed features at {features.dir}; did preprocess run?")
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    metric = PRIMARY_METRIC[task]
    try:
        with atomic_dir(candidate.dir) as tmp:
            inp = TrainerInput(ref.name, task, features.train, features.test, dict(params), seed, tmp, checkpoint_dir)
            try:
                returned = import_object(ref.entry, ref.python_path)(inp)
            except StageSkipped:
                raise
            except KilnError as exc:
                raise _fail(ref, str(exc)) from None
            except Exception as exc:
                log.error("trainer %s raised:\n%s", ref.entry, traceback.format_exc())
                raise _fail(ref, f"raised {type(exc).__name__}: {exc}") from None
            if isinstance(returned, Secondary):
                raise _NotPublished(returned)
            held_out = read_rows(features.test)
            scores = check_trained(ref, returned, tmp, held_out, task)
            _, labels, ids = held_out
            import pandas as pd

            files = CandidateFiles(tmp)
            label_values = labels.astype(np.int32) if task == "binary" else labels
            pd.DataFrame({"entity_id": ids, "label": label_values, "score": scores}).to_parquet(files.predictions, index=False)
            info = {**returned.info, "candidate": ref.name, "framework": returned.framework, "task": task,
                    "trainer": ref.entry, "scorer": ref.scorer, "python_path": list(ref.python_path),
                    "params": dict(params), "seed": seed, "test_rows": len(scores),
                    f"test_{metric}": compute_metrics(task, labels, scores)[metric],
                    **({"transform_dir": str(transform_dir)} if transform_dir else {})}
            write_json(files.info, info)
    except _NotPublished as secondary:
        return {**secondary.result.info, "candidate": ref.name, "secondary": True}
    except TrainerFailed as exc:
        shutil.rmtree(candidate.dir, ignore_errors=True)  # an earlier try's model must not compete in its place
        if failure_file is not None:
            write_json(failure_file, {"candidate": ref.name, "trainer": ref.entry, "reason": str(exc)})
        raise
    if failure_file is not None:
        failure_file.unlink(missing_ok=True)
    log.info("trained %s (%s): held-out %s %.4f", ref.name, info["framework"], metric, info[f"test_{metric}"])
    return {**info, "candidate_dir": str(candidate.dir)}


def train_candidate(ref: TrainerRef, settings: Mapping[str, Any], extra: Mapping[str, Any] | None = None,
                    **where: Any) -> dict[str, Any]:
    """``run_trainer`` with the candidate's params and seed taken from run ``settings`` (by setting name)."""
    params = {key: settings[setting] for setting, key in ref.params.items()} | dict(extra or {})
    return run_trainer(ref, params=params, seed=settings[ref.seed] if ref.seed else ref.default_seed, **where)


__all__ = ["Secondary", "Trained", "TrainerFailed", "TrainerInput", "load_scorer", "run_trainer", "train_candidate"]
