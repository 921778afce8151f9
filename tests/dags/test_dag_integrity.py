"""Every DAG file parses cleanly and cheaply, in the spirit of Airflow's own example-DAG test."""

from __future__ import annotations

import copy
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(DAGS_DIR.glob("*.py"))
# ML libraries must stay out of parse time. (`kubernetes` is not listed: the Spark provider's hook
# imports it, and the DAG processor pre-imports a file's `airflow.*` imports once, before forking.)
HEAVY_MODULES = ("pyspark", "mxnet", "pandas", "pyignite", "sklearn", "pyarrow", "numpy")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_there_are_dag_files():
    assert {p.stem for p in DAG_FILES} >= {"kiln_datasets"}


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) >= {"kiln_training", "kiln_cache_refresh", "kiln_training_breast_cancer",
                                   "kiln_cache_refresh_breast_cancer", "kiln_training_diabetes", "kiln_cache_refresh_diabetes"}


def test_a_broken_spec_breaks_only_its_own_dag_naming_the_spec(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    shipped = DAGS_DIR.parent / "datasets"
    (tmp_path / "diabetes.yaml").write_text((shipped / "diabetes.yaml").read_text())
    (tmp_path / "broken.yaml").write_text("task: binary\nsource: {kind: sklearn, dataset: iris}\nkey: id\nlabel: y\n")
    monkeypatch.setenv("KILN_DATASETS_DIR", str(tmp_path))
    bag = DagBag(dag_folder=str(DAGS_DIR / "kiln_datasets.py"))
    assert set(bag.dag_ids) == {"kiln_training_diabetes", "kiln_cache_refresh_diabetes"}
    [error] = bag.import_errors.values()
    assert str(tmp_path / "broken.yaml") in error and "field 'source.dataset'" in error and "field 'features'" in error


def test_the_regression_dag_trains_regressors_with_regression_settings(dagbag):
    dag = dagbag.get_dag("kiln_training_diabetes")
    assert dag.get_task("choose_candidates").downstream_task_ids == {
        "train_spark_lr", "train_spark_gbt", "train_mxnet", "train_mxnet_dist", "train_singa"}
    assert {"min_r2", "max_rmse", "max_mae"} <= set(dag.params) and not {"min_auc", "rows", "input_path"} & set(dag.params)
    assert dag.params["min_r2"] == 0.35 and dag.params["pca_k"] == 0  # the spec's defaults
    assert dag.params.get_param("candidates").schema["items"]["enum"] == [
        "spark_lr", "spark_gbt", "mxnet_mlp", "mxnet_dist", "singa_mlp"]


def rendered_commands(dag) -> list[list[str]]:
    """Every stage command of ``dag`` as it runs with the form's defaults (plan's XComs stubbed)."""
    import jinja2

    stubs = {"{{ ti.xcom_pull(task_ids='plan', key='data_root') }}": "/d", "{{ ti.xcom_pull(task_ids='plan', key='ds') }}": "2026-01-01",
             "{{ run_id }}": "manual", "{{ params | tojson }}": "{}"}
    params = {name: dag.params[name] for name in dag.params}
    commands = []
    for t in dag.tasks:
        if hasattr(t, "stage"):
            args = [t.stage, *t.arguments]
        elif hasattr(t, "worker_args"):
            args = ["train-mxnet", *t.worker_args]
        else:
            continue
        for stub, value in stubs.items():
            args = [a.replace(stub, value) for a in args]
        commands.append([jinja2.Template(a).render(params=params) for a in args])
    return commands


@pytest.mark.parametrize("dag_id", ["kiln_training", "kiln_training_breast_cancer", "kiln_training_diabetes"])
def test_every_stage_command_is_accepted_by_the_cli_and_passes_every_form_setting(dagbag, dag_id):
    """One source of truth: the operators' command lines are generated from the same stage definitions as the CLI."""
    from ml_tasks.__main__ import build_parser
    from ml_tasks.core.spec import load_named
    from ml_tasks.core.stages import STAGES

    dag = dagbag.get_dag(dag_id)
    spec = load_named(dag_id.removeprefix("kiln_training").removeprefix("_") or "transactions")
    commands = rendered_commands(dag)
    assert len(commands) >= 10
    for command in commands:
        args = build_parser().parse_args(command)
        assert args.dataset == spec.name, command
        for name in STAGES[command[0]].settings_for(spec):
            if name in dag.params:
                assert getattr(args, f"setting_{name}") is not None, (command[0], name)


def test_the_streaming_dags_run_the_stream_stage_and_watch_the_alerts_topic(dagbag):
    """kiln_streaming: its form is the streaming settings only (and the training form has none of them), its
    command line is the stream stage's; kiln_stream_alerts is scheduled by a Kafka AssetWatcher on the alerts topic."""
    from ml_tasks.__main__ import build_parser
    from ml_tasks.core.run_settings import SETTINGS

    dag = dagbag.get_dag("kiln_streaming")
    streaming = {name for name, s in SETTINGS.items() if s.pipeline == "streaming"}
    assert set(dag.params) == streaming and not streaming & set(dagbag.get_dag("kiln_training").params)
    assert dag.params["stream_mode"] == "available_now" and dag.schedule == "*/5 * * * *"
    stubs = {"{{ ti.xcom_pull(task_ids='locate_stream', key='" + k + "') }}": v for k, v in
             {"data_root": "/d", "bootstrap_servers": "k:9092", "ignite_host": "i:10800"}.items()}
    [command] = [[t.stage, *t.arguments] for t in dag.tasks if hasattr(t, "stage")]
    for stub, value in stubs.items():
        command = [a.replace(stub, value) for a in command]
    import jinja2

    args = build_parser().parse_args([jinja2.Template(a).render(params={n: dag.params[n] for n in dag.params}) for a in command])
    assert (args.dataset, args.bootstrap_servers, args.ignite_host, args.setting_stream_mode) == (
        "transactions", "k:9092", "i:10800", "available_now")
    [asset] = dagbag.get_dag("kiln_stream_alerts").timetable.asset_condition.objects
    [watcher] = asset.watchers
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath.endswith("kafka.triggers.await_message.AwaitMessageTrigger"), classpath
    assert (kwargs["topics"], kwargs["apply_function"]) == (["kiln.transactions.alerts"], "ml_tasks.features.events.alert_of")
    assert "kiln_streaming_diabetes" not in dagbag.dag_ids  # a spec without a stream section gets no streaming DAG


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_parsing_makes_no_db_query_connection_or_variable_lookup(dag_file):
    """Parse in a fresh interpreter: count SQL statements and forbid connection/variable lookups."""
    probe = f"""
import sys
from sqlalchemy import event
import airflow.settings as settings
from airflow.sdk import Connection, Variable
from airflow.models.connection import Connection as ModelConnection
from airflow.models.variable import Variable as ModelVariable

def refuse(*a, **k):
    raise AssertionError("looked up a connection or variable at parse time")

for cls, name in [(Connection, "get"), (ModelConnection, "get_connection_from_secrets"), (Variable, "get"), (ModelVariable, "get")]:
    setattr(cls, name, refuse)
queries = []
settings.configure_orm()
event.listen(settings.engine, "before_cursor_execute", lambda *a: queries.append(a[2]))
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(dag_file)!r})
assert not bag.import_errors, bag.import_errors
assert bag.dags, "no DAG found"
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY_MODULES!r})
assert not heavy, f"heavy modules imported at parse time: {{heavy[:5]}}"
print("QUERIES", len(queries))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "QUERIES 0" in out.stdout


def test_dags_declare_owner_retries_tags_and_docs(dagbag):
    for dag in dagbag.dags.values():
        assert dag.tags and "kiln" in dag.tags, dag.dag_id
        assert dag.doc_md and dag.dag_id in dag.doc_md
        for t in dag.tasks:
            assert t.owner == "kiln", (dag.dag_id, t.task_id)
            assert t.retries >= 1, (dag.dag_id, t.task_id)


def test_training_dag_schedule_and_concurrency(dagbag):
    dag = dagbag.get_dag("kiln_training")
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.schedule == "@daily"
    order = ["plan", "ingest", "validate", "preprocess"]
    for up, down in itertools.pairwise(order):
        assert down in dag.get_task(up).downstream_task_ids
    trainers = {"train_spark_lr", "train_spark_gbt", "train_mxnet", "train_mxnet_dist", "train_singa"}
    assert dag.get_task("choose_candidates").downstream_task_ids == trainers
    # a failed trainer is left out, not the run: the guard waits for all of them, evaluate runs if one trained
    guard = dag.get_task("any_candidate_trained")
    assert guard.trigger_rule == "all_done" and dag.get_task("evaluate").upstream_task_ids == {guard.task_id}
    assert guard.upstream_task_ids == trainers


def test_trials_are_mapped_and_bounded_and_promotion_waits_for_the_approval_and_its_record(dagbag):
    from airflow.providers.standard.operators.hitl import HITLOperator

    dag = dagbag.get_dag("kiln_training")
    trials = dag.get_task("search_trials")
    assert trials.is_mapped and trials.partial_kwargs["max_active_tis_per_dagrun"] == 2
    assert trials.upstream_task_ids == {"plan_search"} and "preprocess" in dag.get_task("plan_search").upstream_task_ids
    for name in ("train_spark_lr", "train_spark_gbt", "train_mxnet", "train_singa"):
        trainer = dag.get_task(name)  # waits for the trials whatever became of each; still skipped when not chosen
        assert trainer.upstream_task_ids == {"choose_candidates", "search_trials"}, name
        assert trainer.trigger_rule == "none_failed_min_one_success", name
    assert "search_trials" not in dag.get_task("train_mxnet_dist").upstream_task_ids
    approve = dag.get_task("approve_promotion")
    assert isinstance(approve, HITLOperator) and approve.defaults == ["Reject"] and approve.options == ["Approve", "Reject"]
    chain = ["register", "approval_needed", "approve_promotion", "record_approval", "promotion_decision"]
    for up, down in itertools.pairwise(chain):
        assert dag.get_task(down).upstream_task_ids == {up} | ({"register"} if down == "promotion_decision" else set())
    decision = dag.get_task("promotion_decision")
    assert decision.trigger_rule == "none_failed"  # runs after a skipped approval, never after a failed register
    assert {"announce_champion", "champion_changed", "report"} <= decision.downstream_task_ids
    assert dag.get_task("report").trigger_rule == "all_done"


def test_every_param_is_a_described_bounded_form_field(dagbag):
    dag = dagbag.get_dag("kiln_training")
    for name, param in dag.params.items():
        param = dag.params.get_param(name)
        schema = param.schema
        assert param.description, name
        assert "type" in schema, name
        if schema["type"] in ("integer", "number"):
            assert "maximum" in schema and ("minimum" in schema or "exclusiveMinimum" in schema), name
    dag.params.validate()  # the defaults themselves are valid


BAD_FORM_VALUES = [
    ("rows", 5, "Invalid input for param rows: 5 is less than the minimum of 1000"),
    ("pca_k", 7, "Invalid input for param pca_k: 7 is greater than the maximum of 6"),
    ("min_auc", 1.5, "Invalid input for param min_auc: 1.5 is greater than the maximum of 1"),
    ("partition_date", "yesterday", "Invalid input for param partition_date"),
    ("candidates", [], "Invalid input for param candidates"),
    ("candidates", ["xgboost"], "Invalid input for param candidates"),
]


@pytest.mark.parametrize("name, value, message", BAD_FORM_VALUES)
def test_a_bad_form_value_is_refused_naming_the_param(dagbag, name, value, message):
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.get_dag("kiln_training").params)
    with pytest.raises(ParamValidationError, match=message):
        params[name] = value
        params.validate()


@pytest.mark.parametrize(
    "name, value", [(name, value) for name, value, _ in BAD_FORM_VALUES] + [("candidates", ["spark_lr", "spark_lr"])])
def test_the_serialized_form_refuses_a_bad_value_as_the_api_server_sees_it(dagbag, name, value):
    """The fields declare JSON Schema Draft 7 (the cheaper meta-schema for Airflow's per-call schema check): every rule
    still holds where a triggered run's conf is checked, on the DAG as the scheduler and API server deserialize it."""
    from airflow.sdk.exceptions import ParamValidationError
    from airflow.serialization.serialized_objects import DagSerialization
    from jsonschema import Draft7Validator

    served = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.get_dag("kiln_training")))
    for field, param in served.params.items():
        assert param.schema["$schema"] == Draft7Validator.META_SCHEMA["$schema"], field
        Draft7Validator.check_schema(param.schema)
    served.params.validate()  # the defaults pass
    with pytest.raises(ParamValidationError, match=f"Invalid input for param {name}"):
        served.params.deep_merge({name: value}).validate()


def test_the_form_names_no_model_and_refuses_a_threshold_past_the_specs_floor(dagbag, tmp_path, monkeypatch):
    """A run registers into its spec's model only, and cannot bless below the floors its spec declares: the form,
    as the API server deserializes it, refuses the value before a run starts."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import ParamValidationError
    from airflow.serialization.serialized_objects import DagSerialization

    assert "model_name" not in dagbag.get_dag("kiln_training").params
    assert not dagbag.get_dag("kiln_cache_refresh").params  # the champion of the spec's model, nothing to choose
    shipped = DAGS_DIR.parent / "datasets"
    (tmp_path / "breast_cancer.yaml").write_text((shipped / "breast_cancer.yaml").read_text()
                                                  + "floors: {min_auc: 0.9, promote_margin: 0.005}\n")
    monkeypatch.setenv("KILN_DATASETS_DIR", str(tmp_path))
    bag = DagBag(dag_folder=str(DAGS_DIR / "kiln_datasets.py"))
    assert bag.import_errors == {}
    served = DagSerialization.from_dict(DagSerialization.to_dict(bag.get_dag("kiln_training_breast_cancer")))
    served.params.validate()  # the defaults pass: at least the floors
    assert served.params["min_auc"] >= 0.9 and served.params["promote_margin"] >= 0.005
    served.params.deep_merge({"min_auc": 0.95}).validate()
    for name, value in [("min_auc", 0.85), ("promote_margin", 0.0)]:
        with pytest.raises(ParamValidationError, match=f"Invalid input for param {name}"):
            served.params.deep_merge({name: value}).validate()


EXAMPLES = DAGS_DIR.parent / "examples"


@pytest.mark.parametrize(("folder", "candidate", "task_id", "fields"), [
    ("sklearn_forest", "forest", "train_forest", {"forest_n_estimators": (10, 2000, 200), "forest_max_depth": (1, 64, 8)}),
    ("gluon_wide_deep", "wide_deep", "train_wide_deep", {"wide_deep_hidden": (4, 512, 16), "wide_deep_epochs": (1, 1000, 100)}),
])
def test_an_example_spec_gives_its_trainer_a_task_form_fields_and_a_cli_command(monkeypatch, folder, candidate, task_id, fields):
    from airflow.dag_processing.dagbag import DagBag

    from ml_tasks.__main__ import build_parser, candidate_params
    from ml_tasks.core.spec import discover

    monkeypatch.setenv("KILN_DATASETS_DIR", str(EXAMPLES / folder))
    bag = DagBag(dag_folder=str(DAGS_DIR / "kiln_datasets.py"))
    assert not bag.import_errors
    [(_, spec)] = discover()
    dag = bag.get_dag(f"kiln_training_{spec.name}")
    assert task_id in dag.get_task("choose_candidates").downstream_task_ids
    assert task_id in dag.get_task("any_candidate_trained").upstream_task_ids
    assert candidate in dag.params["candidates"] and candidate in dag.params.get_param("candidates").schema["items"]["enum"]
    for name, (low, high, default) in fields.items():
        schema = dag.params.get_param(name).schema
        assert (schema["minimum"], schema["maximum"], dag.params[name]) == (low, high, default), name
        assert dag.params.get_param(name).description
    [command] = [c for c in rendered_commands(dag) if c[0] == "train"]
    args = build_parser().parse_args(command)
    assert args.candidate == candidate
    assert candidate_params(spec, args) == {**{name: default for name, (_, _, default) in fields.items()},
                                            **{k: dag.params[k] for k in dag.params if k.startswith(candidate) and k not in fields}}


def test_a_trainer_import_path_that_does_not_resolve_is_an_import_error_naming_spec_and_path(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    spec = (EXAMPLES / "sklearn_forest" / "cancer_forest.yaml").read_text()
    (tmp_path / "forest.yaml").write_text(spec.replace('python_path: ["."]', f'python_path: ["{EXAMPLES / "sklearn_forest"}"]'))
    (tmp_path / "typo.yaml").write_text(spec.replace("entry: sklearn_forest:train", "entry: sklearn_forrest:train"))
    monkeypatch.setenv("KILN_DATASETS_DIR", str(tmp_path))
    bag = DagBag(dag_folder=str(DAGS_DIR / "kiln_datasets.py"))
    assert set(bag.dag_ids) == {"kiln_training_forest", "kiln_cache_refresh_forest"}
    [error] = bag.import_errors.values()
    assert str(tmp_path / "typo.yaml") in error and "field 'trainers.forest.entry'" in error
    assert "import path 'sklearn_forrest:train': no module 'sklearn_forrest'" in error


def test_parsing_an_example_spec_imports_neither_its_trainer_nor_its_framework():
    env = {**os.environ, "KILN_DATASETS_DIR": str(EXAMPLES / "gluon_wide_deep")}
    probe = ("import sys\nfrom airflow.dag_processing.dagbag import DagBag\n"
             f"bag = DagBag(dag_folder={str(DAGS_DIR / 'kiln_datasets.py')!r})\nassert not bag.import_errors, bag.import_errors\n"
             "assert 'kiln_training_diabetes_wide_deep' in bag.dag_ids\n"
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in {(*HEAVY_MODULES, 'gluon_wide_deep')!r}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
