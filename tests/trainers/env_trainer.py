"""A custom trainer that writes the environment it was given beside its model (tests/plugins/test_stage_operator.py):
what a user's trainer could read, and so leak."""

from __future__ import annotations

import json
import os

from broken_trainers import good

from ml_tasks.trainer import Trained, TrainerInput


def train(inp: TrainerInput) -> Trained:
    (inp.output_dir / "environ.json").write_text(json.dumps(dict(os.environ), indent=1, sort_keys=True))
    return good(inp)
