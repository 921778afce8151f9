"""Trainers that break the contract, one way each (tests/ml_tasks/test_trainer_contract.py, tests/e2e)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ml_tasks.trainer import Trained, TrainerInput


def _mean_model(inp: TrainerInput) -> float:
    _, y = inp.train_arrays()
    mean = float(y.mean())
    (inp.output_dir / "mean.json").write_text(json.dumps({"mean": mean}))
    return mean


def good(inp: TrainerInput) -> Trained:
    """Predicts the training mean plus a small linear term: honest, and its scorer agrees."""
    _mean_model(inp)
    return Trained(scores=score_with(inp.output_dir)(inp.held_out_features()))


def load(model_dir: Path):
    return score_with(model_dir)


def score_with(model_dir: Path):
    mean = json.loads((model_dir / "mean.json").read_text())["mean"]
    return lambda x: np.clip(mean + 0.01 * np.tanh(np.asarray(x)[:, 0]), 0.0, 1e9)


def raises(inp: TrainerInput) -> Trained:
    _mean_model(inp)
    raise RuntimeError("the GPU is on fire")


def returns_nothing(inp: TrainerInput) -> None:
    _mean_model(inp)


def nan_scores(inp: TrainerInput) -> Trained:
    _mean_model(inp)
    scores = score_with(inp.output_dir)(inp.held_out_features())
    scores[::7] = np.nan
    return Trained(scores=scores)


def no_artifact(inp: TrainerInput) -> Trained:
    return Trained(scores=np.full(len(inp.held_out_features()), 0.5))


def disagrees(inp: TrainerInput) -> Trained:
    """Its scorer (``load_off_by_a_bit``) does not reproduce what it returned: a save/load bug."""
    _mean_model(inp)
    return Trained(scores=score_with(inp.output_dir)(inp.held_out_features()))


def load_off_by_a_bit(model_dir: Path):
    inner = score_with(model_dir)
    return lambda x: inner(x) * 0.9


def secondary(inp: TrainerInput):
    from ml_tasks.trainer import Secondary

    _mean_model(inp)
    return Secondary({"rank": 1})
