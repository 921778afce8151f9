"""Preprocessing and Spark MLlib training on real Spark (local[2]) with a small partition."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import r2_score, roc_auc_score

from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import CandidateFiles, FeatureFiles, TransformFiles
from ml_tasks.features.preprocess import preprocess
from ml_tasks.serving.portable import predict_score, transform_matrix
from ml_tasks.trainer import train_candidate
from ml_tasks.training.candidates import BUILTIN_TRAINERS

pytestmark = pytest.mark.slow
PARAMS = {"lr_reg": 0.01, "gbt_max_iter": 20, "gbt_max_depth": 4}


def test_preprocess_splits_by_entity_and_exports_the_transform(small_features):
    lay, summary = small_features["layout"], small_features["summary"]
    train = pq.read_table(lay.features.train).to_pandas()
    test = pq.read_table(lay.features.test).to_pandas()
    assert summary["train_rows"] + summary["test_rows"] == 8_000 == len(train) + len(test)
    assert 0.12 < len(test) / 8_000 < 0.28
    assert not set(train.entity_id) & set(test.entity_id)  # an entity never straddles the split
    assert summary["parity_max_abs_diff"] < 1e-9
    # 6 scaled numerics + (8+1) + (3+1) one-hot slots + 3 principal components
    assert summary["feature_dim"] == len(train.features.iloc[0]) == 6 + 9 + 4 + 3
    spec = json.loads(lay.transform.portable.read_text())
    assert [c["column"] for c in spec["categorical"]] == ["merchant_category", "channel"]
    assert (lay.transform.spark_pipeline / "metadata").exists()


def test_unseen_category_maps_to_the_unknown_slot(small_features):
    spec = json.loads(small_features["layout"].transform.portable.read_text())
    cols = {n: [1.0] for n in spec["numeric"]} | {"merchant_category": ["never-seen"], "channel": ["pos"]}
    row = transform_matrix(cols, spec)[0]
    assert row[6 + 8] == 1.0 and row[6:6 + 8].sum() == 0


def test_preprocess_rejects_impossible_pca(small_features, tmp_path):
    lay = small_features["layout"]
    with pytest.raises(KilnError, match="pca_k=9 exceeds the 6 numeric features"):
        preprocess(lay.raw_dir, FeatureFiles(tmp_path / "f"), TransformFiles(tmp_path / "t"), pca_k=9)


@pytest.mark.parametrize("kind, floor", [("lr", 0.72), ("gbt", 0.72)])
def test_spark_candidate_learns_and_exports_exactly(small_features, tmp_path, kind, floor):
    lay = small_features["layout"]
    out = CandidateFiles(tmp_path / kind)
    result = train_candidate(BUILTIN_TRAINERS[f"spark_{kind}"], {**PARAMS, "gbt_max_iter": 10},
                             task="binary", features=lay.features, candidate=out, checkpoint_dir=tmp_path / "ckpt")
    preds = pd.read_parquet(out.predictions)
    assert result["test_rows"] == len(preds) == small_features["summary"]["test_rows"]
    assert roc_auc_score(preds.label, preds.score) > floor
    # numpy scoring of the exported model equals Spark's on the held-out rows
    test = pq.read_table(lay.features.test).to_pandas()
    merged = test.merge(preds, on=["entity_id", "label"]).drop_duplicates("entity_id").head(300)
    portable = json.loads(out.portable_model.read_text())
    np.testing.assert_allclose(predict_score(np.stack(merged.features.to_numpy()), portable), merged.score, atol=1e-6)


def test_training_is_reproducible(small_features, tmp_path):
    lay = small_features["layout"]
    for name in "ab":
        train_candidate(BUILTIN_TRAINERS["spark_gbt"], {**PARAMS, "gbt_max_iter": 5},
                        task="binary", features=lay.features, candidate=CandidateFiles(tmp_path / name), checkpoint_dir=tmp_path / "ckpt")
    a, b = (pd.read_parquet(CandidateFiles(tmp_path / n).predictions) for n in "ab")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("kind, kind_name, floor", [("lr", "linear_regression", 0.35), ("gbt", "gbt_regressor", 0.1)])
def test_spark_regression_candidate_learns_and_exports_exactly(diabetes_features, tmp_path, kind, kind_name, floor):
    lay = diabetes_features["layout"]
    out = CandidateFiles(tmp_path / kind)
    result = train_candidate(BUILTIN_TRAINERS[f"spark_{kind}"], PARAMS,
                             task="regression", features=lay.features, candidate=out, checkpoint_dir=tmp_path / "ckpt")
    preds = pd.read_parquet(out.predictions)
    assert result["kind"] == kind_name and len(preds) == diabetes_features["summary"]["test_rows"]
    assert r2_score(preds.label, preds.score) > floor  # a value in the label's unit, not a probability
    assert preds.score.max() > 1.5
    test = pq.read_table(lay.features.test).to_pandas().merge(preds, on=["entity_id", "label"])
    portable = json.loads(out.portable_model.read_text())
    np.testing.assert_allclose(predict_score(np.stack(test.features.to_numpy()), portable), test.score, rtol=1e-9, atol=1e-6)
