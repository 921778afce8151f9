"""Dataset specs: checked against their schema with errors that name the file and the field; drafted from data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ml_tasks.core.errors import KilnError
from ml_tasks.core.run_settings import resolve
from ml_tasks.core.spec import SpecError, load_spec, parse_spec
from ml_tasks.ingestion.infer import infer_spec
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


def test_every_kiln_variable_is_read_through_its_one_declaration():
    """Each KILN_* variable's default is spelled once, in ml_tasks.core.environment: no module reads one ad hoc."""
    import re
    from pathlib import Path

    from ml_tasks.core.environment import ENV, env_int, env_str, parse_flag

    ad_hoc = re.compile(r"""(?:environ|env)\.get\(\s*f?["']KILN_|getenv\(\s*f?["']KILN_""")
    files = [*PROJECT_ROOT.glob("ml_tasks/**/*.py"), *PROJECT_ROOT.glob("plugins/**/*.py"),
             *PROJECT_ROOT.glob("dags/**/*.py"), *PROJECT_ROOT.glob("scripts/*.py")]
    readers = [f"{path.relative_to(PROJECT_ROOT)}:{n}" for path in files
               for n, line in enumerate(path.read_text().splitlines(), 1) if ad_hoc.search(line)]
    assert readers == []
    kinds = {"env_str": str, "env_int": int, "env_float": float, "env_bool": parse_flag, "env_path": Path}
    reads = [(m[1], m[2]) for path in files for m in re.finditer(r"""\b(env_\w+)\(["'](KILN_\w+)["']""", path.read_text())]
    assert {name for _, name in reads} >= {"KILN_DATA_ROOT", "KILN_IGNITE_PORT", "KILN_POD_LOGS", "KILN_SERVE_WORKERS"}
    for reader, name in reads:  # each read names a declared variable, with the accessor of its type
        assert name in ENV, name
        assert reader not in kinds or ENV[name].parse is kinds[reader], f"{reader}({name!r})"
    assert env_int("KILN_SEARCH_PARALLELISM", {}) == 2 and env_int("KILN_SEARCH_PARALLELISM", {"KILN_SEARCH_PARALLELISM": "5"}) == 5
    assert env_str("KILN_SHUFFLE_PARTITIONS", {}) == "8" and env_str("KILN_STREAM_SHUFFLE_PARTITIONS", {}) == "4"
    assert ENV["KILN_IGNITE_PASSWORD_FILE"].given({"KILN_IGNITE_PASSWORD_FILE": ""}) is None  # empty: not named
    with pytest.raises(TypeError, match="KILN_SEARCH_PARALLELISM is read with int"):
        env_str("KILN_SEARCH_PARALLELISM")


def test_the_docs_list_the_kiln_variables_as_they_are_declared():
    """docs/operations.md holds the generated table; every other docs table row naming a KILN_* variable shows its
    declared default."""
    import re

    from ml_tasks.core.environment import ENV, markdown_table

    assert markdown_table() in (PROJECT_ROOT / "docs" / "operations.md").read_text()
    row = re.compile(r"^\| `(KILN_\w+)`(?: / `KILN_\w+`)* \| ([^|]+) \|", re.MULTILINE)
    rows = [(path.name, *m.groups()) for path in (PROJECT_ROOT / "docs").glob("*.md") for m in row.finditer(path.read_text())]
    assert len(rows) > len(ENV)
    for doc, name, shown in rows:
        assert name in ENV, f"{doc}: {name} is not declared in ml_tasks/core/environment.py"
        declared = ENV[name].shown_default.replace("`", "")
        assert shown.replace("`", "").strip().startswith(declared), f"{doc}: {name} defaults to {declared}, not {shown}"
