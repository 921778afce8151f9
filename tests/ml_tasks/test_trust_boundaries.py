"""What a run's trigger may choose is bounded by its dataset's spec, and the stages check it again whatever the
form let through (issue #31): the model a run registers into, the blessing thresholds' floors, the folders an
input_path may read and the partition date. Through the real stage CLI on a real file system."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from ml_tasks.core.errors import KilnError
from ml_tasks.core.run_settings import resolve
from ml_tasks.core.spec import SpecError, discover, load_spec

SPEC = """
task: binary
source: {kind: file, path: data/rows.csv}
key: id
label: y
features: {numeric: [a, b]}
schedule: null
"""


@pytest.fixture
def specs(tmp_path):
    """A datasets folder with one file-source spec ``mine`` whose rows are in ``data/rows.csv`` beside it."""
    folder = tmp_path / "datasets"
    (folder / "data").mkdir(parents=True)
    rows = pd.DataFrame({"id": range(200), "y": [i % 2 for i in range(200)], "a": range(200), "b": [0.5] * 200})
    rows.to_csv(folder / "data" / "rows.csv", index=False)
    (folder / "mine.yaml").write_text(SPEC)
    return folder


def cli(*args: str, specs, data_root) -> subprocess.CompletedProcess:
    env = {**os.environ, "KILN_DATASETS_DIR": str(specs), "KILN_DATA_ROOT": str(data_root)}
    return subprocess.run([sys.executable, "-m", "ml_tasks", *args], capture_output=True, text=True, timeout=300, env=env)


# --- the model: the spec's, never the form's --------------------------------------------------------------------
def test_two_specs_naming_one_model_are_both_refused_naming_both_files(specs, data_root, monkeypatch):
    (specs / "other.yaml").write_text(SPEC + "model_name: mine\n")
    monkeypatch.setenv("KILN_DATASETS_DIR", str(specs))
    errors = {path.name: str(spec) for path, spec in discover() if isinstance(spec, SpecError)}
    assert set(errors) == {"mine.yaml", "other.yaml"}
    assert str(specs / "other.yaml") in errors["mine.yaml"] and str(specs / "mine.yaml") in errors["other.yaml"]
    assert "model 'mine' is also the model of" in errors["other.yaml"]
    out = cli("check-datasets", specs=specs, data_root=data_root)
    assert out.returncode == 2 and "2 of 2 dataset specs" in out.stderr, out.stderr
    # and a register stage of either refuses to write into the shared model, whatever started it
    out = cli("register", "--dataset", "other", "--ds", "2026-03-01", specs=specs, data_root=data_root)
    assert out.returncode == 2 and "model 'mine' is also the model of" in out.stderr, out.stderr
    assert not (data_root / "registry").exists()


def test_a_run_cannot_name_the_model_it_registers_into(specs, data_root):
    out = cli("register", "--dataset", "mine", "--ds", "2026-03-01", "--model-name", "transactions",
              specs=specs, data_root=data_root)
    assert out.returncode == 2 and "unrecognized arguments: --model-name" in out.stderr, out.stderr
    with pytest.raises(KilnError, match="param 'model_name' is not a Kiln setting"):
        resolve(load_spec(specs / "mine.yaml"), {"model_name": "transactions"})


# --- floors of the blessing thresholds ---------------------------------------------------------------------------
def test_a_spec_floor_bounds_every_run_and_becomes_the_default(specs, data_root):
    (specs / "mine.yaml").write_text(SPEC + "floors: {min_auc: 0.8, max_log_loss: 0.5, promote_margin: 0.01}\n")
    spec = load_spec(specs / "mine.yaml")
    settings = resolve(spec, {})
    assert (settings["min_auc"], settings["max_log_loss"], settings["promote_margin"]) == (0.8, 0.5, 0.01)
    assert resolve(spec, {"min_auc": 0.9})["min_auc"] == 0.9  # stricter is fine
    for name, value, message in [("min_auc", 0.7, "0.7 is less than the minimum of 0.8"),
                                 ("max_log_loss", 0.6, "0.6 is greater than the maximum of 0.5"),
                                 ("promote_margin", 0, "0 is less than the minimum of 0.01")]:
        with pytest.raises(KilnError, match=f"param '{name}': {message}"):
            resolve(spec, {name: value})
    # the stages check again: an evaluate (or register) command line past a floor is refused before any work
    out = cli("evaluate", "--dataset", "mine", "--ds", "2026-03-01", "--min-auc", "0.7", specs=specs, data_root=data_root)
    assert out.returncode == 2 and "option 'min_auc': 0.7 is less than the minimum of 0.8" in out.stderr, out.stderr
    out = cli("register", "--dataset", "mine", "--ds", "2026-03-01", "--promote-margin", "0", specs=specs,
              data_root=data_root)
    assert out.returncode == 2 and "option 'promote_margin': 0.0 is less than the minimum of 0.01" in out.stderr


@pytest.mark.parametrize(("floors", "message"), [
    ("{min_r2: 0.5}", "floors.min_r2: does not apply to a binary task"),
    ("{min_auc: 0.3}", "floors 'min_auc': 0.3 is less than the minimum of 0.5"),
    ("{pca_k: 2}", "floors.pca_k: not a threshold a floor can bound"),
])
def test_a_floor_is_a_blessing_threshold_of_the_task_within_its_own_bounds(specs, floors, message):
    (specs / "mine.yaml").write_text(SPEC + f"floors: {floors}\n")
    with pytest.raises(SpecError, match=message):
        load_spec(specs / "mine.yaml")


def test_a_spec_default_past_its_own_floor_is_refused(specs):
    (specs / "mine.yaml").write_text(SPEC + "floors: {min_auc: 0.8}\nsettings: {min_auc: 0.7}\n")
    with pytest.raises(SpecError, match="settings 'min_auc': 0.7 is less than the minimum of 0.8"):
        load_spec(specs / "mine.yaml")


def test_a_max_floor_makes_an_empty_bound_a_refused_value(specs):
    (specs / "mine.yaml").write_text(SPEC.replace("task: binary", "task: regression") + "floors: {max_rmse: 2.5}\n")
    spec = load_spec(specs / "mine.yaml")
    assert resolve(spec, {})["max_rmse"] == 2.5
    with pytest.raises(KilnError, match="param 'max_rmse': None is not of type 'number'"):
        resolve(spec, {"max_rmse": None})


# --- input_path: only under the spec's roots ---------------------------------------------------------------------
def test_input_path_reads_only_under_the_specs_roots_with_links_and_dots_resolved(specs, data_root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.csv").write_text((specs / "data" / "rows.csv").read_text())
    (specs / "data" / "link.csv").symlink_to(outside / "secret.csv")
    (specs / "data" / "linked_dir").symlink_to(outside)

    def ingest(path: str) -> subprocess.CompletedProcess:
        return cli("ingest", "--dataset", "mine", "--ds", "2026-03-01", "--run-id", f"r{abs(hash(path))}",
                   "--input-path", path, specs=specs, data_root=data_root)

    for path in [str(outside / "secret.csv"), str(specs / "data" / ".." / ".." / "elsewhere" / "secret.csv"),
                 str(specs / "data" / "link.csv"), str(specs / "data" / "*.csv"), str(specs / "data" / "linked_dir"),
                 str(specs / "data" / "linked_dir" / "*.csv")]:
        out = ingest(path)
        assert out.returncode == 2 and "input_path" in out.stderr and "refused" in out.stderr, (path, out.stderr)
    assert not (data_root / "mine" / "raw").exists()  # nothing was read, nothing written
    (specs / "data" / "link.csv").unlink()
    (specs / "data" / "linked_dir").unlink()
    assert ingest(str(specs / "data" / "rows.csv")).returncode == 0  # under the source's own folder: read
    # a spec can name other roots; a PostgreSQL source has none unless it names them
    (specs / "mine.yaml").write_text(SPEC + f"input_roots: [{outside}]\n")
    assert ingest(str(outside / "secret.csv")).returncode == 0
    out = ingest(str(specs / "data" / "rows.csv"))
    assert out.returncode == 2 and "not under the spec's input_roots" in out.stderr, out.stderr


# --- partition_date: a day the spec allows ----------------------------------------------------------------------
def test_a_partition_in_the_future_or_before_the_specs_start_is_refused_by_every_stage(specs, data_root):
    (specs / "mine.yaml").write_text(SPEC + "start_date: 2026-01-01\n")
    spec = load_spec(specs / "mine.yaml")
    today = datetime.now(UTC).date()  # the spec checks against UTC
    assert spec.check_partition((today + timedelta(days=1)).isoformat())
    for ds, message in [((today + timedelta(days=2)).isoformat(), "is in the future"),
                        ("2099-01-01", "is in the future"), ("2025-12-31", "is before dataset 'mine''s start_date")]:
        with pytest.raises(KilnError, match=message):
            spec.check_partition(ds)
        for stage in ("ingest", "register"):
            out = cli(stage, "--dataset", "mine", "--ds", ds, specs=specs, data_root=data_root)
            assert out.returncode == 2 and message in out.stderr, (stage, ds, out.stderr)
    assert not (data_root / "mine").exists() and not (data_root / "registry").exists()


def test_the_runs_plan_refuses_a_partition_or_input_path_the_spec_does_not_allow(specs, data_root, tmp_path, monkeypatch):
    """The DAG's first task (plan) resolves the form's values against the spec: a refused one fails the run there."""
    from ml_tasks.core.planning import plan_run

    monkeypatch.setenv("KILN_DATASETS_DIR", str(specs))
    plan = plan_run("mine", {"partition_date": "2026-03-01"}, str(data_root), None, None, "r1")
    assert plan["ds"] == "2026-03-01" and plan["model_name"] == "mine"
    with pytest.raises(KilnError, match="partition date 2099-01-01 is in the future"):
        plan_run("mine", {"partition_date": "2099-01-01"}, str(data_root), None, None, "r1")
    with pytest.raises(KilnError, match="not under the spec's input_roots"):
        plan_run("mine", {"input_path": "/etc/passwd"}, str(data_root), None, None, "r1")
    with pytest.raises(KilnError, match="param 'model_name' is not a Kiln setting"):
        plan_run("mine", {"model_name": "transactions"}, str(data_root), None, None, "r1")
