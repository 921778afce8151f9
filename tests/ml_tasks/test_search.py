"""The hyper-parameter search on real MXNet and Spark MLlib over the shared small partition: trials on a validation
split of the training rows, same seed same winner, a rerun trains nothing again, a failed trial is left out, and
the candidate trains on its best trial's settings."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from ml_tasks.__main__ import main
from ml_tasks.core.atomic import read_json
from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import Layout
from ml_tasks.core.run_settings import resolve
from ml_tasks.training.search import best_settings, plan_search, run_trial, search_results
from tests.conftest import transactions_spec

pytestmark = pytest.mark.slow
QUICK = {"mlp_epochs": 2, "candidates": ["mxnet_mlp", "spark_lr"], "search_trials": 3}


def run_layout(small_features, data_root, run_id: str) -> Layout:
    """A run of the shared partition of its own (the search writes into the run's folder)."""
    shared = small_features["layout"]
    lay = Layout(data_root, shared.dataset, shared.ds, run_id)
    shutil.copytree(shared.features_dir, lay.features_dir)
    shutil.copytree(shared.transform_dir, lay.transform_dir)
    return lay


def search(lay: Layout, **given) -> dict:
    spec = transactions_spec()
    settings = resolve(spec, {**QUICK, **given})
    for candidate, key in plan_search(spec, lay, settings):
        run_trial(spec, lay, candidate, key)
    return {name: search_results(lay, name) for name in settings["search_candidates"]}


def winner(found: dict) -> tuple:
    return found["best"]["key"], found["best"]["tuned"], round(found["best"]["value"], 6)


def test_trials_are_scored_on_a_split_of_the_training_rows_never_on_the_test_rows(small_features, data_root):
    lay = run_layout(small_features, data_root, "split")
    search(lay, search_candidates=["spark_lr"], search_trials=1)
    ids = {part: set(pd.read_parquet(path).entity_id) for part, path in [
        ("train", lay.features.train), ("test", lay.features.test),
        ("fit", lay.search_split.train), ("validation", lay.search_split.test)]}
    assert ids["fit"] | ids["validation"] == ids["train"] and not ids["fit"] & ids["validation"]
    assert not ids["validation"] & ids["test"]
    assert 0.1 < len(ids["validation"]) / len(ids["train"]) < 0.3


def test_the_same_seed_gives_the_same_trials_and_winner_and_another_seed_other_trials(small_features, data_root):
    first = search(run_layout(small_features, data_root, "a"), search_candidates=["mxnet_mlp", "spark_lr"])
    second = search(run_layout(small_features, data_root, "b"), search_candidates=["mxnet_mlp", "spark_lr"])
    for name in ("mxnet_mlp", "spark_lr"):
        assert [t["tuned"] for t in first[name]["trials"]] == [t["tuned"] for t in second[name]["trials"]]
        assert winner(first[name]) == winner(second[name])
        assert all(r["status"] == "ok" for r in first[name]["records"]) and len(first[name]["records"]) == 3
    other = search(run_layout(small_features, data_root, "c"), search_candidates=["spark_lr"], search_seed=1)
    assert [t["tuned"] for t in other["spark_lr"]["trials"]] != [t["tuned"] for t in first["spark_lr"]["trials"]]


def test_a_rerun_trains_no_recorded_trial_again_and_more_trials_keep_the_first_ones(small_features, data_root, caplog):
    lay = run_layout(small_features, data_root, "rerun")
    first = search(lay, search_candidates=["mxnet_mlp"], search_trials=2)["mxnet_mlp"]
    models = {t["key"]: lay.trial_model("mxnet_mlp", t["key"]).info.stat().st_mtime_ns for t in first["trials"]}
    caplog.set_level("INFO")
    again = search(lay, search_candidates=["mxnet_mlp"], search_trials=3)["mxnet_mlp"]
    assert [t["key"] for t in again["trials"]][:2] == list(models)  # trial i depends on the seed and i only
    assert {k: lay.trial_model("mxnet_mlp", k).info.stat().st_mtime_ns for k in models} == models  # not retrained
    assert caplog.text.count("already recorded; not trained again") == 2 and len(again["records"]) == 3


def test_a_failed_trial_is_recorded_with_its_reason_and_the_search_goes_on(small_features, data_root):
    lay = run_layout(small_features, data_root, "failing")
    # A batch larger than the fitting rows fails that trial's trainer (a named error); smaller batches train.
    fit_rows = 8_000 * 0.8 * 0.8
    found = search(lay, search_candidates=["mxnet_mlp"], search_trials=4,
                   search_space={"mlp_batch_size": [256, 16384]})["mxnet_mlp"]
    failed = [r for r in found["records"] if r["status"] == "failed"]
    ok = [r for r in found["records"] if r["status"] == "ok"]
    assert failed and ok, [r["tuned"] for r in found["records"]]  # the seed gives both kinds
    assert all(r["tuned"]["mlp_batch_size"] > fit_rows * 0.9 and "too few for batch_size" in r["reason"] for r in failed)
    assert found["best"]["key"] in {r["key"] for r in ok}


def test_a_searched_candidate_trains_on_its_best_trials_settings(small_features, data_root, capsys):
    lay = run_layout(small_features, data_root, "best")
    found = search(lay, search_candidates=["mxnet_mlp"])["mxnet_mlp"]
    settings, summary = best_settings(lay, "mxnet_mlp", resolve(transactions_spec(), QUICK))
    assert summary["best"] == found["best"]["key"]
    where = ["--data-root", str(data_root), "--ds", lay.ds, "--run-id", lay.run_id]
    assert main(["train-mxnet", *where, "--mlp-epochs", "2"]) == 0
    info = read_json(lay.candidate("mxnet_mlp").info)
    for name, value in found["best"]["tuned"].items():
        assert info["params"][name] == value
    assert [e["epoch"] for e in info["history"]] == [1, 2]  # the training curve the report draws


@pytest.mark.parametrize(("space", "message"), [
    ({"mlp_hidden": [2, 64]}, "search_space' bound of 'mlp_hidden': 2 is less than the minimum of 4"),
    ({"mlp_hidden": [64, 16]}, "mlp_hidden low 64 is above high 16"),
    ({"candidates": [1, 2]}, "'candidates' is not a numeric setting"),
    ({"nosuch": [1, 2]}, "'nosuch' is not a numeric setting of this dataset"),
])
def test_a_bad_search_space_is_refused_naming_the_setting(space, message):
    with pytest.raises(KilnError, match=message.replace("'", ".").replace("[", ".")):
        resolve(transactions_spec(), {"search_space": space})


def test_a_searched_candidate_without_a_setting_in_the_space_is_named(small_features, data_root):
    lay = run_layout(small_features, data_root, "nothing")
    with pytest.raises(KilnError, match="search of spark_lr: search_space has none of its settings"):
        search(lay, search_candidates=["spark_lr"], search_space={"mlp_hidden": [16, 32]})
