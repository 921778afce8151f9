"""Evaluation and the registry on real candidate folders (servable portable models, as Spark trainers write them)."""

from __future__ import annotations

import itertools
import json
import os
import signal as signals
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_tasks.core.atomic import folder_lock, write_json
from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import CandidateFiles
from ml_tasks.core.layout import Layout as _Layout
from ml_tasks.evaluation.evaluate import Thresholds, compute_metrics, evaluate
from ml_tasks.evaluation.registry import (
    approval_outcome,
    champion_dir,
    decide,
    read_state,
    record_approval,
    register,
    rollback,
)
from ml_tasks.serving.portable import predict_score

ROWS = 2_000


def Layout(data_root: Path, ds: str) -> _Layout:  # noqa: N802  (these tests' dataset is the built-in one)
    return _Layout(data_root, "transactions", ds)
LOOSE = Thresholds(min_auc=0.55, max_log_loss=5, max_calibration_error=1)


def held_out(lay: _Layout, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The day's held-out features (written as preprocess writes them) and labels."""
    rng = np.random.default_rng([seed, int(lay.ds.replace("-", ""))])
    x = rng.normal(size=(ROWS, 3))
    labels = (x @ np.array([1.0, -1.0, 0.5]) + rng.normal(0, 1, ROWS) > 0).astype(int)
    lay.features.test.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"entity_id": [f"e{i}" for i in range(ROWS)], "label": labels, "features": list(x)}).to_parquet(lay.features.test / "part-0.parquet")
    lay.transform_dir.mkdir(parents=True, exist_ok=True)
    write_json(lay.transform.portable, {"numeric": [], "categorical": []})
    return x, labels


def make_candidate(lay: _Layout, name: str, signal: float, framework: str = "spark_mllib", nan: bool = False) -> CandidateFiles:
    """A logistic model mixing ``signal`` parts of the true rule with one part of an unrelated direction
    (more signal, higher AUC); its predictions are what it scores, so serving can reproduce them."""
    x, labels = held_out(lay)
    weights = signal * np.array([1.0, -1.0, 0.5]) + np.array([1.0, 1.0, 0.0])
    model = {"kind": "logistic_regression", "coefficients": weights.tolist(), "intercept": 0.0}
    scores = predict_score(x, model)
    if nan:
        scores[:10] = np.nan
    return write_candidate(lay, name, model, labels, scores, framework)


def write_candidate(lay: _Layout, name: str, model: dict, labels, scores, framework: str = "spark_mllib",
                    task: str = "binary") -> CandidateFiles:
    cand = lay.candidate(name)
    cand.dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"entity_id": [f"e{i}" for i in range(ROWS)], "label": labels, "score": scores}).to_parquet(cand.predictions)
    write_json(cand.portable_model, model)
    write_json(cand.info, {"candidate": name, "framework": framework, "task": task})
    return cand


def run_day(data_root: Path, ds: str, signal: float, margin: float = 0.0, thresholds: Thresholds | None = None,
            framework: str = "spark_mllib", require_approval: bool = False, model: str = "m") -> dict:
    lay = Layout(data_root, ds)
    make_candidate(lay, "weak", signal / 4, framework=framework)
    make_candidate(lay, "strong", signal, framework=framework)
    evaluate("binary", lay.candidates_root, lay.evaluation, thresholds or LOOSE)
    return register(lay.evaluation, lay.registry_root, model, ds, lay.transform_dir, margin,
                    test_features_dir=lay.features.test, require_approval=require_approval)


def test_metrics_are_right_for_perfect_and_random_scores():
    labels = np.array([0, 0, 1, 1])
    perfect = compute_metrics("binary", labels, np.array([0.1, 0.2, 0.8, 0.9]))
    assert perfect["auc"] == 1.0 and perfect["accuracy"] == 1.0
    assert compute_metrics("binary", labels, np.array([0.5] * 4))["auc"] == 0.5
    broken = compute_metrics("binary", labels, np.array([0.1, np.nan, np.inf, 0.9]))
    assert broken["non_finite_scores"] == 2 and np.isnan(broken["auc"])


def test_a_nan_candidate_fails_with_its_reason_and_the_others_are_still_compared(data_root):
    lay = Layout(data_root, "2026-01-01")
    make_candidate(lay, "good", 1.0)
    make_candidate(lay, "broken", 2.0, nan=True)
    result = evaluate("binary", lay.candidates_root, lay.evaluation, LOOSE)
    verdict = json.loads(lay.evaluation.read_text())
    assert result["best"] == "good" and result["blessed"]
    broken = next(c for c in verdict["candidates"] if c["candidate"] == "broken")
    assert not broken["passes"] and broken["reasons"] == [f"10 of {ROWS} held-out predictions are NaN or infinite"]
    assert [c["candidate"] for c in verdict["candidates"]] == ["good", "broken"]  # NaN ranks last


def test_best_candidate_wins_and_is_blessed(data_root):
    result = run_day(data_root, "2026-01-01", signal=1.5)
    verdict = json.loads(Layout(data_root, "2026-01-01").evaluation.read_text())
    assert verdict["best"] == "strong" and result["candidate"] == "strong"
    assert [c["candidate"] for c in verdict["candidates"]] == ["strong", "weak"]
    assert result["promoted"] and result["champion"] == "2026-01-01" and result["previous_champion"] is None
    assert read_state(data_root / "registry", "m")["versions"]["2026-01-01"]["servability"]["rows_checked"] == 1000
    assert (champion_dir(data_root / "registry", "m") / "model" / "predictions.parquet").exists()


def test_unblessed_model_is_registered_but_not_promoted(data_root):
    result = run_day(data_root, "2026-01-01", signal=0.05, thresholds=Thresholds(min_auc=0.9))
    assert not result["promoted"] and result["champion"] is None
    assert any("min_auc 0.9" in r for r in result["reasons"])
    with pytest.raises(KilnError, match="model 'm' has no champion"):
        champion_dir(data_root / "registry", "m")


def test_a_model_serving_cannot_load_is_never_promoted(data_root):
    result = run_day(data_root, "2026-01-01", signal=1.5, framework="onnx")
    assert not result["promoted"] and result["champion"] is None
    assert any("not servable: cannot serve framework 'onnx'" in r for r in result["reasons"])


def test_a_model_whose_served_scores_differ_from_its_offline_scores_is_not_promoted(data_root):
    lay = Layout(data_root, "2026-01-01")
    cand = make_candidate(lay, "drifted", 1.0)
    model = json.loads(cand.portable_model.read_text())
    write_json(cand.portable_model, {**model, "intercept": 0.01})  # the exported model is not the evaluated one
    evaluate("binary", lay.candidates_root, lay.evaluation, LOOSE)
    result = register(lay.evaluation, lay.registry_root, "m", lay.ds, lay.transform_dir, test_features_dir=lay.features.test)
    assert not result["promoted"] and "vs its offline scores: differs by" in result["reasons"][0]


def test_promotion_needs_the_margin_and_rollback_retires_the_champion(data_root):
    run_day(data_root, "2026-01-01", signal=0.2)
    better = run_day(data_root, "2026-01-02", signal=2.0, margin=0.05)
    assert better["promoted"] and better["champion"] == "2026-01-02"
    same = run_day(data_root, "2026-01-03", signal=2.0, margin=0.05)
    assert not same["promoted"] and "by margin 0.05" in same["reasons"][0]
    assert same["champion"] == "2026-01-02"
    # 01-02 leaves the contest: 01-03 now beats 01-01 by the margin, so the registry re-decides in its favour
    assert rollback(data_root / "registry", "m") == {"rolled_back": "2026-01-02", "champion": "2026-01-03"}
    assert rollback(data_root / "registry", "m") == {"rolled_back": "2026-01-03", "champion": "2026-01-01"}


SIGNAL_BY_DAY = {"2026-03-01": 2.0, "2026-03-02": 0.3, "2026-03-03": 1.0, "2026-03-04": 0.6}  # higher: better AUC


def decisions(state: dict) -> dict:
    return {"champion": state["champion"],
            "versions": {ds: (r["promoted"], r["baseline"], r["reasons"]) for ds, r in state["versions"].items()}}


def test_decisions_and_champion_do_not_depend_on_registration_order(tmp_path):
    """Property: every order of registering the same days gives the same decisions and champion."""
    days = tmp_path / "days"
    for ds, signal in SIGNAL_BY_DAY.items():
        lay = Layout(days, ds)
        make_candidate(lay, "only", signal)
        evaluate("binary", lay.candidates_root, lay.evaluation, LOOSE)
    seen = set()
    for i, order in enumerate(itertools.permutations(SIGNAL_BY_DAY)):
        registry = tmp_path / f"registry-{i}"
        for ds in order:
            lay = Layout(days, ds)
            register(lay.evaluation, registry, "m", ds, lay.transform_dir, margin=0.0)
        seen.add(json.dumps(decisions(read_state(registry, "m")), sort_keys=True))
    assert len(seen) == 1, seen
    final = json.loads(seen.pop())
    assert final["champion"] == "2026-03-01"  # the best day; the later, worse days never displace it
    assert final["versions"]["2026-03-02"][0] is False


def test_the_issue_example_a_worse_later_day_never_becomes_champion_in_either_order(data_root, tmp_path):
    for order in (["2026-03-01", "2026-03-02"], ["2026-03-02", "2026-03-01"]):
        registry = tmp_path / "-".join(order)
        for ds in order:
            lay = Layout(data_root, ds)
            make_candidate(lay, "only", {"2026-03-01": 2.0, "2026-03-02": 0.5}[ds])
            evaluate("binary", lay.candidates_root, lay.evaluation, LOOSE)
            register(lay.evaluation, registry, "m", ds, lay.transform_dir)
        assert read_state(registry, "m")["champion"] == "2026-03-01", order


def test_rerun_of_a_middle_day_with_worse_data_changes_the_decisions_after_it(data_root):
    for ds, signal in [("2026-01-01", 1.0), ("2026-01-02", 3.0), ("2026-01-03", 2.0)]:
        run_day(data_root, ds, signal)
    assert read_state(data_root / "registry", "m")["champion"] == "2026-01-02"
    rerun = run_day(data_root, "2026-01-02", 0.5)  # its data was bad: now 01-03 beats the chain
    state = read_state(data_root / "registry", "m")
    assert not rerun["promoted"] and state["champion"] == "2026-01-03"
    assert state["versions"]["2026-01-03"]["baseline"] == "2026-01-01"


def test_rerun_of_the_champions_day_with_an_unblessed_model_never_serves_it(data_root):
    first = run_day(data_root, "2026-01-01", signal=2.0)
    served = champion_dir(data_root / "registry", "m")
    rerun = run_day(data_root, "2026-01-01", signal=0.05, thresholds=Thresholds(min_auc=0.9))
    assert not rerun["promoted"] and rerun["champion"] is None
    assert not served.exists() and first["version_dir"] != rerun["version_dir"]
    with pytest.raises(KilnError, match="has no champion"):
        champion_dir(data_root / "registry", "m")


def test_a_register_killed_before_its_decision_leaves_the_champion_and_its_files_untouched(data_root):
    run_day(data_root, "2026-01-01", signal=2.0, model="transactions")  # the CLI registers into the spec's model
    served = champion_dir(data_root / "registry", "transactions")
    files_before = {p: p.read_bytes() for p in served.rglob("*") if p.is_file()}
    lay = Layout(data_root, "2026-01-01")
    make_candidate(lay, "strong", 0.05)  # the rerun's model: much worse
    make_candidate(lay, "weak", 0.01)
    evaluate("binary", lay.candidates_root, lay.evaluation, LOOSE)
    model_root = data_root / "registry" / "transactions"
    with folder_lock(model_root):  # the rerun writes its artifact, then waits here for the decision
        proc = subprocess.Popen([sys.executable, "-m", "ml_tasks", "register", "--data-root", str(data_root),
                                 "--ds", "2026-01-01"], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(list(model_root.glob("versions/2026-01-01/r*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(model_root.glob("versions/2026-01-01/r*"))) == 2, "the rerun never wrote its artifact"
        time.sleep(0.3)
        os.kill(proc.pid, signals.SIGKILL)
        proc.wait()
    assert champion_dir(data_root / "registry", "transactions") == served
    assert {p: p.read_bytes() for p in served.rglob("*") if p.is_file()} == files_before


def test_evaluate_without_candidates_is_an_error(data_root):
    lay = Layout(data_root, "2026-01-01")
    with pytest.raises(KilnError, match="no trained candidates under"):
        evaluate("binary", lay.candidates_root, lay.evaluation, Thresholds())


def test_a_registry_written_before_this_rule_is_read_and_re_decided(data_root):
    """Registries from earlier Kiln versions (folders holding the model directly, no bless_reasons) keep working."""
    old = data_root / "registry" / "m"
    (old / "versions" / "2026-01-01" / "model").mkdir(parents=True)
    write_json(old / "registry.json", {"versions": {"2026-01-01": {
        "candidate": "strong", "auc": 0.9, "promoted": True, "baseline": None, "reasons": [],
        "path": str(old / "versions" / "2026-01-01")}}, "rolled_back": [], "champion": "2026-01-01"})
    result = run_day(data_root, "2026-01-02", signal=0.2)  # worse than the old champion
    assert not result["promoted"] and result["champion"] == "2026-01-01"
    assert champion_dir(data_root / "registry", "m") == old / "versions" / "2026-01-01"


def regression_day(data_root: Path, ds: str, noise: float, margin: float = 0.0) -> dict:
    """A linear-regression candidate whose predictions are off by ``noise`` (more noise: higher RMSE)."""
    lay = Layout(data_root, ds)
    x, _ = held_out(lay)
    rng = np.random.default_rng(int(ds.replace("-", "")))
    target = x @ np.array([30.0, -20.0, 10.0]) + 150 + rng.normal(0, noise, ROWS)
    model = {"kind": "linear_regression", "coefficients": [30.0, -20.0, 10.0], "intercept": 150.0}
    write_candidate(lay, "linear", model, target, predict_score(x, model), task="regression")
    evaluate("regression", lay.candidates_root, lay.evaluation, Thresholds(min_r2=0.5))
    return register(lay.evaluation, lay.registry_root, "r", ds, lay.transform_dir, margin, test_features_dir=lay.features.test)


def test_regression_is_promoted_on_lower_rmse(data_root):
    first = regression_day(data_root, "2026-01-01", noise=10.0)
    assert first["promoted"] and first["primary_metric"] == "rmse" and 9 < first["rmse"] < 11
    worse = regression_day(data_root, "2026-01-02", noise=20.0)
    assert not worse["promoted"] and "(lower is better)" in worse["reasons"][0]
    better = regression_day(data_root, "2026-01-03", noise=5.0, margin=1.0)
    assert better["promoted"] and better["champion"] == "2026-01-03"
    barely = regression_day(data_root, "2026-01-04", noise=4.8, margin=1.0)  # lower, but not by the margin
    assert not barely["promoted"] and "by margin 1.0" in barely["reasons"][0]
    verdict = json.loads(Layout(data_root, "2026-01-03").evaluation.read_text())
    assert verdict["primary_metric"] == "rmse" and verdict["higher_is_better"] is False
    assert set(verdict["candidates"][0]["metrics"]) == {"rmse", "mae", "r2", "rows"}


def test_a_regression_model_below_its_r2_threshold_is_not_blessed(data_root):
    lay = Layout(data_root, "2026-01-01")
    x, _ = held_out(lay)
    target = np.random.default_rng(1).normal(150, 50, ROWS)  # unrelated to x: R2 below 0
    model = {"kind": "linear_regression", "coefficients": [30.0, -20.0, 10.0], "intercept": 150.0}
    write_candidate(lay, "linear", model, target, predict_score(x, model), task="regression")
    result = evaluate("regression", lay.candidates_root, lay.evaluation, Thresholds(min_r2=0.35))
    assert not result["blessed"]
    assert json.loads(lay.evaluation.read_text())["candidates"][0]["reasons"][0].startswith("r2 -")


def test_one_model_name_is_ranked_on_one_metric(data_root):
    run_day(data_root, "2026-01-01", signal=1.5)
    lay = Layout(data_root, "2026-01-02")
    x, _ = held_out(lay)
    model = {"kind": "linear_regression", "coefficients": [1.0, 1.0, 1.0], "intercept": 0.0}
    write_candidate(lay, "linear", model, predict_score(x, model), predict_score(x, model), task="regression")
    evaluate("regression", lay.candidates_root, lay.evaluation, Thresholds())
    with pytest.raises(KilnError, match="model 'm' is ranked on auc, this evaluation on rmse"):
        register(lay.evaluation, lay.registry_root, "m", lay.ds, lay.transform_dir)


REGISTER = """
import sys
from pathlib import Path
from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import Layout
from ml_tasks.evaluation.registry import register
lay = Layout(Path(sys.argv[1]), "transactions", sys.argv[2])
try:
    register(lay.evaluation, lay.registry_root, "m", lay.ds, lay.transform_dir, test_features_dir=lay.features.test)
except KilnError as exc:
    print("REFUSED", exc, flush=True)
    sys.exit(3)
print("REGISTERED", flush=True)
"""


def test_two_first_registrations_ranked_on_different_metrics_never_mix_them(data_root):
    """Both see an empty registry before the lock (the early check passes for both); the one that comes
    second is refused under the lock, and the registry stays ranked on one metric, so decide() still works."""
    binary = Layout(data_root, "2026-01-01")
    make_candidate(binary, "strong", 2.0)
    evaluate("binary", binary.candidates_root, binary.evaluation, LOOSE)
    regression = Layout(data_root, "2026-01-02")
    x, _ = held_out(regression)
    model = {"kind": "linear_regression", "coefficients": [30.0, -20.0, 10.0], "intercept": 150.0}
    write_candidate(regression, "linear", model, predict_score(x, model) + 1.0, predict_score(x, model), task="regression")
    evaluate("regression", regression.candidates_root, regression.evaluation, Thresholds(min_r2=0.5))
    model_root = data_root / "registry" / "m"
    model_root.mkdir(parents=True)
    with folder_lock(model_root):  # both write their artifacts, then wait here for the decision
        procs = {ds: subprocess.Popen([sys.executable, "-c", REGISTER, str(data_root), ds], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for ds in ("2026-01-01", "2026-01-02")}
        deadline = time.monotonic() + 60
        while len(list(model_root.glob("versions/*/r*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(model_root.glob("versions/*/r*"))) == 2, "the registrations never wrote their artifacts"
        time.sleep(0.3)
    outcomes = {ds: proc.communicate(timeout=120) + (proc.returncode,) for ds, proc in procs.items()}
    registered = [ds for ds, (out, _, code) in outcomes.items() if code == 0 and "REGISTERED" in out]
    refused = [ds for ds, (out, _, code) in outcomes.items() if code == 3 and "is ranked on" in out]
    assert len(registered) == 1 and len(refused) == 1, outcomes
    state = read_state(data_root / "registry", "m")
    assert state["primary_metric"] == ("auc" if registered == ["2026-01-01"] else "rmse")
    assert list(state["versions"]) == registered and all(state["primary_metric"] in v for v in state["versions"].values())
    decide(state)  # never a KeyError: every version has the metric it is ranked on
    assert state["champion"] == registered[0]


def test_a_new_registration_of_the_champions_day_is_a_champion_change_to_warm(data_root):
    """A second run of the champion's day replaces its registration (another model, other features) under the same
    version: serving loads the new one, so the online features must move with it (an e2e backfill found the alias
    on the first run's features while the registry named the second's)."""
    first = run_day(data_root, "2026-05-01", signal=1.0)
    assert first["champion_changed"]
    again = run_day(data_root, "2026-05-01", signal=1.5)
    assert again["champion"] == "2026-05-01" and again["registration"] != first["registration"]
    assert again["champion_changed"] and again["previous_champion"] == "2026-05-01"
    other_day = run_day(data_root, "2026-04-30", signal=1.0)  # an older day does not displace the champion
    assert other_day["champion"] == "2026-05-01" and not other_day["champion_changed"]


def test_a_version_awaiting_approval_is_not_promoted_until_a_person_approves_it(data_root):
    run_day(data_root, "2026-05-01", signal=0.5)
    waiting = run_day(data_root, "2026-05-02", signal=2.0, require_approval=True)
    assert waiting["awaiting_approval"] and not waiting["promoted"] and waiting["reasons"] == ["awaiting approval"]
    assert waiting["champion"] == "2026-05-01" and not waiting["champion_changed"]
    # what the person is shown: this version's held-out metrics against the champion's, with the difference
    assert "| auc (ranks) |" in waiting["approval_request"] and "champion 2026-05-01" in waiting["approval_request"]
    approved = record_approval(data_root / "registry", "m", "2026-05-02", waiting["registration"], True, "ana", "fine")
    assert approved["promoted"] and approved["champion"] == "2026-05-02" and approved["champion_changed"]
    assert read_state(data_root / "registry", "m")["versions"]["2026-05-02"]["approval"]["by"] == "ana"


def test_a_rejected_or_unanswered_version_stays_registered_not_promoted_with_the_reason(data_root):
    run_day(data_root, "2026-05-01", signal=0.5)
    waiting = run_day(data_root, "2026-05-02", signal=2.0, require_approval=True)
    timed_out = approval_outcome({"chosen_options": ["Reject"], "params_input": {"reason": ""}, "responded_by_user": None}, 60)
    assert timed_out == (False, None, "no answer within 60 minutes")
    rejected = record_approval(data_root / "registry", "m", "2026-05-02", waiting["registration"], *timed_out)
    assert not rejected["promoted"] and rejected["reasons"] == ["not approved: no answer within 60 minutes"]
    assert rejected["champion"] == "2026-05-01" and not rejected["champion_changed"]
    state = read_state(data_root / "registry", "m")
    assert state["versions"]["2026-05-02"]["reasons"] == ["not approved: no answer within 60 minutes"]
    assert (data_root / "registry" / "m" / state["versions"]["2026-05-02"]["path"]).is_dir()  # registered, kept
    person = approval_outcome({"chosen_options": ["Reject"], "params_input": {"reason": "drift"},
                               "responded_by_user": {"id": "1", "name": "ana"}}, 60)
    assert person == (False, "ana", "drift")


def test_a_version_that_would_not_be_promoted_asks_nobody_and_a_stale_answer_is_refused(data_root):
    run_day(data_root, "2026-05-01", signal=2.0)
    worse = run_day(data_root, "2026-05-02", signal=0.3, require_approval=True)
    assert not worse["awaiting_approval"] and "does not beat baseline" in worse["reasons"][0]
    replaced = run_day(data_root, "2026-05-02", signal=3.0, require_approval=True)  # a rerun of the day
    with pytest.raises(KilnError, match="is not the day's registration any more"):
        record_approval(data_root / "registry", "m", "2026-05-02", worse["registration"], True, "ana", "ok")
    assert read_state(data_root / "registry", "m")["versions"]["2026-05-02"]["reasons"] == ["awaiting approval"]
    assert replaced["awaiting_approval"]


def test_a_registry_written_with_absolute_paths_reads_and_keeps_its_versions_wherever_it_is_mounted(data_root):
    """States written before paths were recorded relative to the model hold the writer's absolute paths: read
    under another mount point (serving's /data), they still name this model's folders, and a new registration's
    orphan sweep never takes them for orphans (it would delete the champion)."""
    import os
    import time

    from ml_tasks.core.layout import model_files

    run_day(data_root, "2026-05-01", signal=2.0)
    state_file = data_root / "registry" / "m" / "registry.json"
    state = json.loads(state_file.read_text())
    for rec in state["versions"].values():  # as an older Kiln wrote it, on a volume mounted at /elsewhere
        rec["path"] = f"/elsewhere/registry/m/{rec['path']}"
    state_file.write_text(json.dumps(state))
    champion = champion_dir(data_root / "registry", "m")
    assert champion == model_files(data_root / "registry", "m").dir / "versions" / "2026-05-01" / state["versions"]["2026-05-01"]["registration"]
    assert (champion / "model").is_dir()
    old = time.time() - 2 * 3600  # past the orphan age: only being named keeps it
    os.utime(champion, (old, old))
    run_day(data_root, "2026-05-02", signal=0.5)
    assert champion.is_dir(), "the older state's champion was swept as an orphan"
