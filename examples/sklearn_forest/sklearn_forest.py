"""A scikit-learn random forest as a Kiln candidate: the whole trainer contract (``ml_tasks/trainer.py``).

``train`` fits on the preprocessed training rows, saves the model into ``inp.output_dir`` and returns its
held-out predictions; ``load`` is the scorer serving uses, and Kiln checks it reproduces those predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import sklearn
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from ml_tasks.trainer import Trained, TrainerInput

MODEL_FILE = "forest.joblib"


def train(inp: TrainerInput) -> Trained:
    x, y = inp.train_arrays()
    forest = RandomForestClassifier if inp.task == "binary" else RandomForestRegressor
    model = forest(n_estimators=inp.params["n_estimators"], max_depth=inp.params["max_depth"],
                   min_samples_leaf=inp.params["min_samples_leaf"], random_state=inp.seed, n_jobs=1).fit(x, y)
    joblib.dump(model, inp.output_dir / MODEL_FILE)
    return Trained(scores=scorer(model)(inp.held_out_features()), framework="scikit-learn",
                   info={"sklearn_version": sklearn.__version__})


def load(model_dir: Path) -> Callable[[np.ndarray], np.ndarray]:
    return scorer(joblib.load(model_dir / MODEL_FILE))


def scorer(model) -> Callable[[np.ndarray], np.ndarray]:
    """The probability of label 1 for a classifier, the predicted value for a regressor."""
    if hasattr(model, "predict_proba"):
        return lambda x: model.predict_proba(x)[:, 1]
    return model.predict
