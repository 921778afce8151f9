"""Every stage of the CLI, once: its name, the run settings it takes, its own options, and what it runs.

From these definitions come the ``python -m ml_tasks`` parser (``ml_tasks.__main__``), the command
lines the Airflow operators, the search's trials, the stream's supervisor and the MXNet launcher run
(``Stage.arguments``, ``stage_command``), and which form fields feed which stage. A stage's function gets the parsed arguments, the dataset spec, the run's settings (explicit
options over the spec's defaults over the global ones) and the run's ``Layout``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_tasks.core.cli_types import CANDIDATE
from ml_tasks.core.environment import env_default, env_int, env_str
from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import Layout, registry_root
from ml_tasks.core.run_settings import ALERT_DEAD_LETTER_SHARE, SETTINGS, applies
from ml_tasks.core.spec import DatasetSpec
from ml_tasks.training.candidates import MLP_SETTINGS, TrainerRef, split_path


@dataclass(frozen=True)
class Run:
    """What a stage function works with."""

    args: argparse.Namespace
    spec: DatasetSpec | None
    settings: dict[str, Any]
    layout: Layout | None

    @property
    def lay(self) -> Layout:
        assert self.layout is not None
        return self.layout

    @property
    def data_spec(self) -> DatasetSpec:
        assert self.spec is not None
        return self.spec


def stage_command(stage: str, arguments: Sequence[str], python: str = "python") -> list[str]:
    """The one spelling of a stage's command line: ``<python> -m ml_tasks <stage> <arguments>``. ``python``: the
    interpreter on the image's PATH (a pod), or ``sys.executable`` (a process started here)."""
    return [python, "-m", "ml_tasks", stage, *arguments]


def partition_arguments(lay: Layout) -> list[str]:
    """The run-partition options (``--data-root --ds --run-id``) of a stage that runs for ``lay``."""
    return ["--data-root", str(lay.data_root), "--ds", lay.ds, "--run-id", lay.run_id]


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    run: Callable[[Run], dict[str, Any] | list[Any] | None]
    settings: tuple[str, ...] = ()
    # argparse arguments that are not run settings: (flags, kwargs)
    options: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = ()
    partition: bool = True  # takes --ds and --run-id
    dataset: bool = True  # takes --dataset

    def settings_for(self, spec: DatasetSpec) -> list[str]:
        return [s for s in self.settings if applies(s, spec.task, spec.source.kind)]

    def arguments(self, *, dataset: str, partition: Sequence[str], values: Mapping[str, Any],
                  options: Sequence[str] = ()) -> list[str]:
        """What follows ``python -m ml_tasks <stage>``: ``partition`` is ``--data-root/--ds/--run-id`` and their
        values, ``values`` maps setting names to what follows each flag (values, or templates in a DAG)."""
        args = ["--dataset", dataset, *partition]
        for name, value in values.items():
            if name not in self.settings:
                raise KilnError(f"stage {self.name} takes no setting {name!r}")
            args += [SETTINGS[name].flag, value if isinstance(value, str) else SETTINGS[name].to_cli(value)]
        return [*args, *options]

    def command(self, *, python: str = "python", **arguments: Any) -> list[str]:
        """The whole command line (``arguments``: those of ``Stage.arguments``)."""
        return stage_command(self.name, self.arguments(**arguments), python)


# --- the stage functions ----------------------------------------------------------------------------------------
def run_input(lay: Layout) -> Path:
    """The run's snapshot of its raw partition; a clear error when this run never ingested."""
    if not lay.input_dir.exists():
        raise KilnError(f"run {lay.run_id!r} of {lay.dataset} {lay.ds} has no ingested input at {lay.input_dir}; "
                        "run the ingest stage with the same --run-id first")
    return lay.input_dir


def _ingest(r: Run) -> dict[str, Any]:
    from ml_tasks.ingestion.ingest import ingest
    if r.settings.get("input_path"):
        r.data_spec.check_input_path(r.settings["input_path"])
    return ingest(r.data_spec, r.lay.ds, r.lay.raw_dir, rows=r.settings.get("rows", 0),
                  input_path=r.settings.get("input_path"), snapshot_dir=r.lay.input_dir)


def _validate(r: Run) -> dict[str, Any]:
    from ml_tasks.ingestion.validate import Thresholds, validate

    s = r.settings
    binary = r.data_spec.is_binary
    thresholds = Thresholds(min_rows=s["min_rows"], max_null_ratio=s["max_null_ratio"], max_psi=s["max_psi"],
                            **({"min_positive_rate": s["min_positive_rate"], "max_positive_rate": s["max_positive_rate"]}
                               if binary else {}))
    return validate(run_input(r.lay), r.lay.validation_report, thresholds, r.lay.previous_raw_dir(),
                    partition=f"{r.lay.dataset} ds={r.lay.ds}")


def _preprocess(r: Run) -> dict[str, Any]:
    from ml_tasks.features.preprocess import preprocess

    return preprocess(run_input(r.lay), r.lay.features, r.lay.transform, pca_k=r.settings["pca_k"],
                      test_fraction=r.settings["test_fraction"])


def run_candidate(r: Run, name: str, extra: Mapping[str, Any] | None = None, framework: str | None = None) -> dict[str, Any]:
    """Train candidate ``name`` (built-in or the spec's own) through the trainer contract, with its run settings.
    ``framework``: the built-in trainer of that name, whatever ``name`` (the MLP stages' folder) is."""
    from dataclasses import replace

    from ml_tasks.trainer import train_candidate
    from ml_tasks.training.candidates import BUILTIN_TRAINERS
    from ml_tasks.training.search import best_settings

    spec, lay = r.data_spec, r.lay
    ref = replace(BUILTIN_TRAINERS[framework], name=name) if framework else spec.trainer_refs.get(name)
    if ref is None:
        raise KilnError(f"dataset {spec.name!r} has no candidate {name!r} (candidates: {', '.join(spec.trainer_refs)})")
    preflight(ref)
    settings, search = best_settings(lay, name, r.settings)  # a searched candidate trains on its best trial's settings
    result = train_candidate(ref, settings, extra, task=spec.task, features=lay.features, candidate=lay.candidate(name),
                             checkpoint_dir=lay.checkpoint_dir(name), transform_dir=lay.transform_dir,
                             failure_file=lay.candidate_failure(name))
    return {**result, "search": search} if search else result


def preflight(ref: TrainerRef) -> None:
    """The candidate's check that its framework is installed (Singa's skips with exit 99 where it is not), before
    any input is read."""
    if ref.preflight:
        import importlib

        module, function = split_path(ref.preflight)
        getattr(importlib.import_module(module), function)()


def _train(r: Run) -> dict[str, Any]:
    return run_candidate(r, r.args.candidate)


def _train_spark(r: Run) -> dict[str, Any]:
    return run_candidate(r, f"spark_{r.args.model}")


def _train_mxnet(r: Run) -> dict[str, Any]:
    result = run_candidate(r, r.args.candidate, {"kvstore": r.args.kvstore}, framework="mxnet_mlp")
    if result.get("secondary"):
        r.args.result_file = None  # only rank 0 reports for the whole run
    return result


def mxnet_worker_command(r: Run) -> list[str]:
    """The ``train-mxnet`` command line every worker of a distributed run executes."""
    from ml_tasks.training.mxnet_cluster import worker_arguments

    return STAGES["train-mxnet"].command(
        python=sys.executable, dataset=r.lay.dataset, partition=partition_arguments(r.lay),
        values={k: r.settings[k] for k in MLP_SETTINGS}, options=worker_arguments(["--candidate", r.args.candidate]))


def _train_mxnet_dist(r: Run) -> dict[str, Any]:
    from ml_tasks.core.atomic import read_json
    from ml_tasks.training.mxnet_cluster import run_cluster

    lay, name = r.lay, r.args.candidate
    workers, servers = r.settings["mxnet_workers"], r.settings["mxnet_servers"]
    ckpt = lay.checkpoint(name)
    bound = {"timeout": r.args.timeout} if r.args.timeout else {}  # else the launcher's own
    run_cluster(mxnet_worker_command(r), servers, workers, log=lambda line: print(line, file=sys.stderr, flush=True),
                pid_file=ckpt.pids, **bound)
    digests = {rank: read_json(ckpt.final_rank(rank))["digest"] for rank in range(workers)}
    return {"candidate": name, "workers": workers, "servers": servers,
            "params_identical": len(set(digests.values())) == 1, "candidate_dir": str(lay.candidate_dir(name))}


def _train_singa(r: Run) -> dict[str, Any]:
    return run_candidate(r, r.args.candidate, framework="singa_mlp")


def _search_plan(r: Run) -> list[list[str]]:
    """Plan the trials; the result is each trial's ``trial`` arguments (the search's mapped task's expansion)."""
    from ml_tasks.core.run_settings import resolve
    from ml_tasks.training.search import plan_search

    # The trials train with the whole form's settings (each candidate's own), not only the search's.
    settings = {**resolve(r.data_spec, json.loads(r.args.params_json)), **{
        name: r.settings[name] for name in STAGES["search-plan"].settings_for(r.data_spec)}}
    return [STAGES["trial"].arguments(dataset=r.data_spec.name, partition=partition_arguments(r.lay), values={},
                                      options=["--candidate", candidate, "--trial", key])
            for candidate, key in plan_search(r.data_spec, r.lay, settings)]


def _trial(r: Run) -> dict[str, Any]:
    from ml_tasks.training.search import run_trial

    ref = r.data_spec.trainer_refs.get(r.args.candidate)
    if ref is not None:
        preflight(ref)
    return run_trial(r.data_spec, r.lay, r.args.candidate, r.args.trial)


def _evaluate(r: Run) -> dict[str, Any]:
    from ml_tasks.evaluation.evaluate import Thresholds, evaluate

    names = ("min_auc", "max_log_loss", "max_calibration_error", "min_r2", "max_rmse", "max_mae")
    thresholds = Thresholds(**{k: r.settings[k] for k in names if k in r.settings})
    return evaluate(r.data_spec.task, r.lay.candidates_root, r.lay.evaluation, thresholds, r.settings["candidates"],
                    failure_file=r.lay.candidate_failure)


def _online_features(r: Run) -> dict[str, Any]:
    from ml_tasks.features.online_features import latest_features

    return latest_features(run_input(r.lay), r.lay.online_features)


def _register(r: Run) -> dict[str, Any]:
    from ml_tasks.core.spec import check_model_owner
    from ml_tasks.evaluation.registry import register

    lay = r.lay
    check_model_owner(r.data_spec)
    lineage = {"dataset": lay.dataset, "data_partition": str(lay.raw_dir), "dag_run_id": lay.run_id,
               "params": json.loads(r.args.params_json)}
    online = lay.online_features if lay.online_features.exists() else None
    result = register(lay.evaluation, lay.registry_root, r.data_spec.registry_name, lay.ds, lay.transform_dir,
                      r.settings["promote_margin"], lineage, online_features=online, test_features_dir=lay.features.test,
                      require_approval=r.settings["require_approval"])
    return {**result, "dataset": lay.dataset, "feature_cache": r.data_spec.feature_cache, "key": r.data_spec.key}


def _produce_events(r: Run) -> dict[str, Any]:
    from ml_tasks.features.events import produce_events

    a = r.args
    return produce_events(r.data_spec, a.bootstrap_servers, r.data_spec.topic("events"), a.rate, a.seconds,
                          entities=a.entities, late_share=a.late_share, malformed_share=a.malformed_share, seed=a.seed,
                          start=a.first_index)


def _stream(r: Run) -> dict[str, Any]:
    from ml_tasks.core.layout import StreamFiles
    from ml_tasks.features.feature_cache import parse_addresses
    from ml_tasks.features.ignite_connection import DEFAULT_PORT, options_from_env
    from ml_tasks.features.streaming import StreamConfig, run_stream, supervise

    spec, s, a = r.data_spec, r.settings, r.args
    continuous = s["stream_mode"] == "continuous"
    files = StreamFiles.of(a.data_root, spec.name)
    hosts, port, ignite_options = options_from_env()  # the nodes, login and TLS its operator handed it
    ignite_hosts = a.ignite_host or ",".join(f"{h}:{p}" for h, p in parse_addresses(hosts or env_default("KILN_IGNITE_HOST"), port or DEFAULT_PORT))
    if continuous and not a.driver:  # this process supervises; the driver is a child that may die and restart
        command = STAGES["stream"].command(
            python=sys.executable, dataset=spec.name, partition=["--data-root", str(a.data_root)],
            values={name: s[name] for name in STAGES["stream"].settings},
            options=["--bootstrap-servers", a.bootstrap_servers, "--ignite-host", ignite_hosts, "--driver"])
        return supervise(command, s["stream_max_restarts"], files.driver_log)
    cfg = StreamConfig(
        dataset=spec.name, schema=spec.schema, limits=spec.limits, feature_cache=spec.feature_cache, bootstrap_servers=a.bootstrap_servers,
        topic=spec.topic("events"), dead_letter_topic=spec.topic("dead-letters"), alerts_topic=spec.topic("alerts"),
        checkpoint=files.checkpoint, ignite_hosts=ignite_hosts, ignite_options=ignite_options, available_now=not continuous,
        trigger_seconds=s["stream_trigger_seconds"], max_events_per_batch=s["stream_max_events_per_batch"],
        run_minutes=s["stream_run_minutes"],
        alert_dead_letter_share=(spec.stream.alert_dead_letter_share if spec.stream else ALERT_DEAD_LETTER_SHARE))
    return run_stream(cfg)


def _rollback(r: Run) -> dict[str, Any]:
    from ml_tasks.evaluation.registry import rollback

    return rollback(registry_root(r.args.data_root), r.data_spec.registry_name)


def _report(r: Run) -> dict[str, Any]:
    from ml_tasks.reports.html_report import write_report
    from ml_tasks.reports.report import report

    page = write_report(r.data_spec, r.lay, r.data_spec.registry_name)
    summary = report(r.lay, r.data_spec.registry_name) if r.lay.evaluation.exists() or r.args.require_evaluation else {}
    return {**summary, "report": str(page), "run_id": r.lay.run_id}


def _serve(r: Run) -> None:
    from ml_tasks.serving.service import serve

    os.environ["KILN_DATA_ROOT"] = str(Path(r.args.data_root).resolve())
    serve(r.args.host, r.args.port, r.args.workers)


def _infer_dataset(r: Run) -> None:
    from ml_tasks.ingestion.infer import infer_spec

    a = r.args
    print(infer_spec(a.source, label=a.label, key=a.key, task=a.task, timestamp=a.timestamp, date_column=a.date_column,
                     sample_rows=a.sample_rows), end="")


def _check_datasets(r: Run) -> dict[str, Any]:
    from ml_tasks.core.spec import discover, specs_dir

    found = discover()
    for path, spec in found:
        print(f"{'ok   ' if isinstance(spec, DatasetSpec) else 'ERROR'} {path.name}: "
              f"{f'{spec.task}, {spec.source.kind} source' if isinstance(spec, DatasetSpec) else spec}", file=sys.stderr)
    broken = [str(p) for p, s in found if not isinstance(s, DatasetSpec)]
    if broken:
        raise KilnError(f"{len(broken)} of {len(found)} dataset specs in {specs_dir()} are broken: {', '.join(broken)}")
    return {"datasets": [s.name for _, s in found], "folder": str(specs_dir())}


MLP_OPTION_HELP = "candidate name (its folder under candidates/)"
KAFKA_OPTION = (("--bootstrap-servers",), {"default": env_str("KILN_KAFKA_BOOTSTRAP"),
                                           "help": "Kafka brokers host:port[,host:port] (KILN_KAFKA_BOOTSTRAP)"})
STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("ingest", "write the raw partition from the dataset's source", _ingest, ("rows", "input_path")),
    Stage("validate", "check columns, types, counts, missing and non-finite values, label, drift", _validate,
          ("min_rows", "max_null_ratio", "max_psi", "min_positive_rate", "max_positive_rate")),
    Stage("preprocess", "Spark: impute, encode, scale, PCA, split", _preprocess, ("pca_k", "test_fraction")),
    Stage("train-spark", "Spark MLlib candidate (linear model or gradient-boosted trees)", _train_spark,
          ("lr_reg", "gbt_max_iter", "gbt_max_depth"), ((("--model",), {"choices": ["lr", "gbt"], "required": True}),)),
    Stage("train-mxnet", "MXNet MLP in one process, or one worker of a dist_sync run", _train_mxnet, MLP_SETTINGS,
          ((("--candidate",), {"default": "mxnet_mlp", "type": CANDIDATE, "help": MLP_OPTION_HELP}),
           (("--kvstore",), {"default": "local", "choices": ["local", "dist_sync"]}))),
    Stage("train-mxnet-dist", "MXNet MLP on a local parameter-server cluster", _train_mxnet_dist,
          (*MLP_SETTINGS, "mxnet_workers", "mxnet_servers"),
          ((("--candidate",), {"default": "mxnet_dist", "type": CANDIDATE, "help": MLP_OPTION_HELP}),
           (("--timeout",), {"type": float, "help": "seconds before the cluster is stopped (default: "
                                                    "ml_tasks.training.mxnet_cluster.CLUSTER_TIMEOUT_S)"}))),
    Stage("train-singa", "Apache Singa MLP (built from source by setup; skips where Singa is not installed)", _train_singa, MLP_SETTINGS,
          ((("--candidate",), {"default": "singa_mlp", "type": CANDIDATE, "help": MLP_OPTION_HELP}),)),
    Stage("train", "train one candidate through the trainer contract: a built-in one or one of the dataset spec's "
                   "own trainers", _train,
          options=((("--candidate",), {"required": True, "type": CANDIDATE, "help": "a name from the candidates setting"}),
                   (("--param",), {"action": "append", "default": [], "metavar": "SETTING=VALUE",
                                   "help": "a run setting of this candidate (e.g. lr_reg=0.1, or <candidate>_<param>=... "
                                           "for the spec's own trainers); repeatable"}))),
    Stage("search-plan", "plan the hyper-parameter search's trials (seeded random search) of the searched candidates",
          _search_plan, ("candidates", "search_candidates", "search_trials", "search_seed", "search_space"),
          ((("--params-json",), {"default": "{}", "help": "the run's other settings (the candidates' own), as JSON"}),)),
    Stage("trial", "train one planned trial on the validation split and record its score", _trial,
          options=((("--candidate",), {"required": True, "type": CANDIDATE, "help": "a searched candidate"}),
                   (("--trial",), {"required": True, "help": "the trial's key in the candidate's search plan"}))),
    Stage("evaluate", "compare candidates on the task's metrics, bless the best", _evaluate,
          ("candidates", "min_auc", "max_log_loss", "max_calibration_error", "min_r2", "max_rmse", "max_mae")),
    Stage("online-features", "latest row per entity, the table the Ignite cache serves", _online_features),
    Stage("register", "version the best candidate, decide promotion", _register,
          ("promote_margin", "require_approval"),
          ((("--params-json",), {"default": "{}", "help": "the run's parameters, kept in the version's lineage"}),)),
    Stage("produce-events", "send transactions-shaped events to the dataset's Kafka topic (demo, tests, benchmarks)",
          _produce_events, partition=False,
          options=(KAFKA_OPTION,
                   (("--rate",), {"type": float, "default": 1000.0, "help": "events per second (0: as fast as possible)"}),
                   (("--seconds",), {"type": float, "default": 10.0}),
                   (("--entities",), {"type": int, "default": 5000, "help": "distinct entity ids (the synthetic "
                                                                            "ingest's pool is its rows / 4)"}),
                   (("--late-share",), {"type": float, "default": 0.05, "help": "share of events up to 2 h late"}),
                   (("--malformed-share",), {"type": float, "default": 0.0, "help": "share of broken events"}),
                   (("--seed",), {"type": int, "default": 7}),
                   (("--first-index",), {"type": int, "default": 0, "help": "index of the first event (another "
                                                                            "run's events differ by it)"}))),
    Stage("stream", "Spark Structured Streaming: the dataset's Kafka events -> each entity's newest features in Ignite",
          _stream, ("stream_mode", "stream_trigger_seconds", "stream_max_events_per_batch", "stream_max_restarts",
                    "stream_run_minutes"), partition=False,
          options=(KAFKA_OPTION,
                   (("--ignite-host",), {"help": "Ignite nodes host[:port][,host[:port]] (default: KILN_IGNITE_HOST, "
                                                 "else the Ignite connection AIRFLOW_CONN_IGNITE_DEFAULT's, else "
                                                 "127.0.0.1; a node without a port: KILN_IGNITE_PORT, else the "
                                                 "connection's, else 10800). Login and TLS: the connection's, else "
                                                 "KILN_IGNITE_USERNAME, KILN_IGNITE_PASSWORD_FILE, KILN_IGNITE_USE_SSL"}),
                   (("--driver",), {"action": "store_true", "help": "continuous mode: run the query here, unsupervised "
                                                                    "(what the supervisor starts)"}))),
    Stage("rollback", "retire the dataset's champion; the registry re-decides without it", _rollback, partition=False),
    Stage("report", "write the run's HTML report (report/index.html) and print its evaluation and the registry state",
          _report,
          options=((("--require-evaluation",), {"action": "store_true", "help": "fail when the run has no evaluation (else "
                                                                        "the report says what the run did reach)"}),)),
    Stage("serve", "online predictions for every dataset (features from Ignite, the champion models)", _serve,
          options=((("--host",), {"default": "127.0.0.1"}), (("--port",), {"type": int, "default": 8000}),
                   (("--workers",), {"type": int, "default": env_int("KILN_SERVE_WORKERS"),
                                     "help": "server processes sharing the port (KILN_SERVE_WORKERS, 1): one per core "
                                             "the service may use; Python runs one request at a time per process"})),
          partition=False, dataset=False),
    Stage("infer-dataset", "draft a dataset spec (YAML on stdout) from a sample of the data", _infer_dataset,
          options=((("source",), {"help": "CSV/Parquet file, folder or glob; sklearn:breast_cancer|diabetes; "
                                          "synthetic:transactions; postgres:CONN_ID/SCHEMA.TABLE"}),
                   (("--label",), {"required": True, "help": "the column to predict"}),
                   (("--key",), {"help": "the entity id column (default: inferred)"}),
                   (("--task",), {"choices": ["binary", "regression"], "help": "default: from the label's values"}),
                   (("--timestamp",), {"help": "the event-time column (default: inferred)"}),
                   (("--date-column",), {"help": "the column that selects a run's day (file and postgres sources)"}),
                   (("--sample-rows",), {"type": int, "default": 10_000})),
          partition=False, dataset=False),
    Stage("check-datasets", "load every dataset spec; name each broken one", _check_datasets, partition=False, dataset=False),
]}


__all__ = ["STAGES", "Run", "Stage", "partition_arguments", "stage_command"]
