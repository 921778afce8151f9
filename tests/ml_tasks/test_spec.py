"""Dataset specs: checked against their schema with errors that name the file and the field; drafted from data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ml_tasks.errors import KilnError
from ml_tasks.infer import infer_spec
from ml_tasks.run_settings import resolve
from ml_tasks.spec import SpecError, load_spec, parse_spec
from tests.conftest import PROJECT_ROOT

GOOD = """
task: binary
source: {kind: file, path: data.csv}
key: id
label: y
features: {numeric: [a, b], categorical: [c]}
"""


def write(tmp_path, text: str, name: str = "mine.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "message"), [
    (GOOD.replace("task: binary", "task: ranking"), r"field 'task': Input should be 'binary' or 'regression' \(got 'ranking'\)"),
    (GOOD.replace("label: y\n", ""), r"field 'label': Field required"),
    (GOOD.replace("kind: file, path: data.csv", "kind: file"), r"field 'source.path': Field required"),
    (GOOD.replace("kind: file", "kind: s3"), r"field 'source': Input tag 's3' found using 'kind' does not match"),
    (GOOD + "colour: red\n", r"field 'colour': Extra inputs are not permitted"),
    (GOOD.replace("categorical: [c]", "categorical: [a]"), r"columns with more than one role: a"),
    (GOOD + "settings: {min_auc: 2}\n", r"settings 'min_auc': 2 is greater than the maximum of 1"),
    (GOOD + "settings: {min_r2: 0.3}\n", r"settings.min_r2: does not apply to a binary task"),
    (GOOD + "settings: {pca_k: 3}\n", r"settings 'pca_k': 3 is greater than the maximum of 2"),
    (GOOD + "settings: {speed: 3}\n", r"settings.speed: not a Kiln setting"),
    (GOOD + "settings: {search_space: {mlp_hidden: [1, 8]}}\n",
     r"settings 'search_space' bound of 'mlp_hidden': 1 is less than the minimum of 4"),
    (GOOD + "settings: {search_space: {lr_reg: [0.1]}}\n", r"settings 'search_space': .* is too short"),
    (GOOD.replace("task: binary", "task: [binary"), r"not valid YAML"),
    ("- a\n- b\n", r"expected a mapping of fields"),
])
def test_a_bad_spec_is_refused_naming_file_and_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SpecError, match=message) as err:
        load_spec(path)
    assert str(err.value).startswith(str(path))


def test_the_file_name_is_the_dataset_name(tmp_path):
    assert load_spec(write(tmp_path, GOOD, "my_data.yaml")).name == "my_data"
    with pytest.raises(SpecError, match="the file name gives the dataset's name: dataset name 'My-Data'"):
        load_spec(write(tmp_path, GOOD, "My-Data.yaml"))


def test_settings_come_from_the_run_over_the_spec_over_the_defaults(tmp_path):
    spec = load_spec(write(tmp_path, GOOD + "settings: {max_psi: 0.5, min_auc: 0.8}\n"))
    settings = resolve(spec, {"min_auc": 0.9})
    assert (settings["min_auc"], settings["max_psi"], settings["max_null_ratio"]) == (0.9, 0.5, 0.2)
    assert "model_name" not in settings and "min_r2" not in settings  # the model is the spec's registry_name
    with pytest.raises(KilnError, match="param 'max_psi': -1 is less than the minimum of 0"):
        resolve(spec, {"max_psi": -1})


@pytest.mark.parametrize(("source", "label", "shipped"), [
    ("synthetic:transactions", "label", "transactions"), ("sklearn:breast_cancer", "target", "breast_cancer"),
    ("sklearn:diabetes", "target", "diabetes")])
def test_the_shipped_specs_are_what_infer_dataset_drafts_plus_a_few_edits(source, label, shipped):
    drafted = parse_spec(infer_spec(source, label=label), shipped, "draft", PROJECT_ROOT)
    spec = load_spec(PROJECT_ROOT / "datasets" / f"{shipped}.yaml")
    roles = ("task", "source", "key", "label", "timestamp", "features", "ignore")
    assert {r: getattr(drafted, r) for r in roles} == {r: getattr(spec, r) for r in roles}
    edited = set(spec.model_fields_set) - set(drafted.model_fields_set)
    assert edited <= {"description", "settings", "stream"}, edited


def test_a_stream_needs_an_event_time_and_names_its_topics(tmp_path):
    spec = load_spec(PROJECT_ROOT / "datasets" / "transactions.yaml")
    assert (spec.topic("events"), spec.topic("dead-letters")) == ("kiln.transactions.events", "kiln.transactions.dead-letters")
    with pytest.raises(SpecError, match="stream: needs 'timestamp'"):
        load_spec(write(tmp_path, GOOD + "stream: {topic: cards}\n"))  # GOOD declares no event time
    with_time = load_spec(write(tmp_path, GOOD + "timestamp: signup\nstream: {topic: cards}\n"))
    assert (with_time.topic("events"), with_time.topic("alerts")) == ("cards", f"kiln.{with_time.name}.alerts")


def test_infer_dataset_drafts_roles_from_a_users_csv(tmp_path):
    rng = np.random.default_rng(3)
    n = 400
    frame = pd.DataFrame({
        "account_number": [f"A{i:05d}" for i in range(n)], "signup": pd.date_range("2026-01-01", periods=n, freq="h"),
        "tenure_months": rng.integers(1, 60, n), "monthly_fee": rng.normal(30, 5, n), "region": rng.choice(["n", "s", "e"], n),
        "free_text_note": [f"note {i}" for i in range(n)], "left": rng.integers(0, 2, n)})
    frame.to_csv(tmp_path / "customers.csv", index=False)
    out = subprocess.run([sys.executable, "-m", "ml_tasks", "infer-dataset", str(tmp_path / "customers.csv"), "--label", "left",
                          "--key", "account_number"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    spec = parse_spec(out.stdout, "customers", "stdout", tmp_path)
    assert (spec.task, spec.key, spec.label, spec.timestamp) == ("binary", "account_number", "left", "signup")
    assert spec.features.numeric == ["tenure_months", "monthly_fee"] and spec.features.categorical == ["region"]
    assert spec.ignore == ["free_text_note"] and spec.source.path == str(tmp_path / "customers.csv")


def test_infer_dataset_names_a_missing_label(tmp_path):
    pd.DataFrame({"a": [1, 2]}).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(KilnError, match=r"label column 'y' is not in .*x.csv \(columns: a\)"):
        infer_spec(str(tmp_path / "x.csv"), label="y")
