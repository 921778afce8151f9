"""The DAGs of a dataset spec: its training pipeline and its cache refresh, wired from ``ml_tasks.core.stages``.

DAG ids: the built-in ``transactions`` dataset keeps ``kiln_training`` and ``kiln_cache_refresh`` (and, as
its spec has a ``stream:`` section, ``kiln_streaming`` and ``kiln_stream_alerts``); every other dataset
``<name>`` gets ``kiln_training_<name>`` and ``kiln_cache_refresh_<name>`` (``kiln_streaming_<name>``,
``kiln_stream_alerts_<name>``). Each has
its own form (fields and bounds from the spec), schedule, champion asset ``kiln_champion_<model>``,
registry model, Ignite feature alias and serving route.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, dag, task

from ml_tasks.core.environment import env_int
from ml_tasks.core.run_settings import TASK_TIMEOUT, searchable
from ml_tasks.core.spec import BUILTIN_DATASET, DatasetSpec, PostgresSource, SpecError
from ml_tasks.core.stages import STAGES
from ml_tasks.training.candidates import TrainerRef

# Search trials running at once in one run, whichever candidates they tune (each is a training process;
# KILN_SEARCH_PARALLELISM, read when the DAG is parsed).
SEARCH_PARALLELISM = env_int("KILN_SEARCH_PARALLELISM")
# A searched candidate's trainer waits for its trials, whatever became of each (a failed trial is left out).
AFTER_TRIALS = "none_failed_min_one_success"
START = pendulum.datetime(2024, 1, 1, tz="UTC")


def training_dag_id(dataset: str) -> str:
    return "kiln_training" if dataset == BUILTIN_DATASET else f"kiln_training_{dataset}"


def cache_refresh_dag_id(dataset: str) -> str:
    return "kiln_cache_refresh" if dataset == BUILTIN_DATASET else f"kiln_cache_refresh_{dataset}"


def streaming_dag_id(dataset: str) -> str:
    return "kiln_streaming" if dataset == BUILTIN_DATASET else f"kiln_streaming_{dataset}"


def stream_alerts_dag_id(dataset: str) -> str:
    return "kiln_stream_alerts" if dataset == BUILTIN_DATASET else f"kiln_stream_alerts_{dataset}"


def champion_asset(spec: DatasetSpec) -> Asset:
    return Asset(f"kiln_champion_{spec.registry_name}")


def plan_value(key: str) -> str:
    return "{{ ti.xcom_pull(task_ids='plan', key='" + key + "') }}"


PARTITION = ["--data-root", plan_value("data_root"), "--ds", plan_value("ds"), "--run-id", "{{ run_id }}"]
# Paths a task renders come from the run's Layout (the ``kiln_layout`` macro below), never from string joins here.
RESULT_FILE = "{{ kiln_layout(ti).result_file(ti.task_id, ti.map_index) }}"


def run_layout(ti: Any) -> Any:
    """The run's ``Layout``, from what its ``plan`` task resolved: the DAG's ``kiln_layout`` template macro."""
    from ml_tasks.core.layout import Layout

    plan = ti.xcom_pull(task_ids="plan")  # its whole result (multiple_outputs pushes it too): one pull
    return Layout(Path(plan["data_root"]), plan["dataset"], plan["ds"], plan["run_id"])


def stage_arguments(spec: DatasetSpec, stage: str, options: Sequence[str] = ()) -> list[str]:
    """The stage's arguments with every setting it takes for this dataset as a form-field template."""
    from kiln.form import param_template

    values = {name: param_template(name) for name in STAGES[stage].settings_for(spec)}
    return STAGES[stage].arguments(dataset=spec.name, partition=PARTITION, values=values, options=options)


def _stage(spec: DatasetSpec, task_id: str, stage: str, options: Sequence[str] = (), **kwargs: Any):
    from kiln.operators.stage import KilnStageOperator

    return KilnStageOperator(task_id=task_id, stage=stage, arguments=stage_arguments(spec, stage, options),
                             result_path=RESULT_FILE, timeout_minutes="{{ params.stage_timeout_minutes }}", **kwargs)


def _spark_settings(spec: DatasetSpec, task_id: str) -> dict[str, Any]:
    """How a Spark stage runs: over Spark Connect when ``spark_default`` is a Connect server, else spark-submit."""
    return dict(
        conn_id="spark_default", application_name=f"kiln-{spec.name}-{task_id}",
        # The UI stays on: on a cluster it is the application's REST API, linked from the master's page. Kiln's data
        # sits on a shared filesystem, so waiting for a data-local slot (3 s by default) only delays each stage.
        submit_conf={"spark.sql.shuffle.partitions": "8", "spark.log.level": "WARN", "spark.locality.wait": "0"},
        pool_slots=2, pod_resources="medium", timeout_minutes="{{ params.stage_timeout_minutes }}",
    )


def _spark_stage(spec: DatasetSpec, task_id: str, stage: str, options: Sequence[str] = (), **kwargs: Any):
    from kiln.operators.spark import KilnSparkStageOperator

    settings = {**_spark_settings(spec, task_id), **kwargs}
    return KilnSparkStageOperator(task_id=task_id, stage=stage, arguments=stage_arguments(spec, stage, options),
                                  result_path=RESULT_FILE, **settings)


def _image(ref: TrainerRef) -> str | None:
    """A candidate's pod image (``None``: Kiln's)."""
    return ref.image or None


def candidate_task(spec: DatasetSpec, ref: TrainerRef):
    """The task that trains one candidate, as its declaration (``ml_tasks.training.candidates``) says: its stage and options,
    and a process (or pod), a Spark stage, or a parameter-server cluster. It waits for the candidate's trials, if any."""
    after_trials = {"trigger_rule": AFTER_TRIALS} if ref.searchable else {}
    if ref.runner == "spark":
        return _spark_stage(spec, ref.airflow_task_id, ref.stage, ref.stage_options, pod_resources=ref.resources,
                            **after_trials)
    if ref.runner == "mxnet_cluster":
        from kiln.operators.mxnet import MXNetDistributedOperator

        return MXNetDistributedOperator(
            task_id=ref.airflow_task_id, worker_args=stage_arguments(spec, ref.stage, ref.stage_options),
            result_path=RESULT_FILE, checkpoint_dir="{{ kiln_layout(ti).checkpoint_dir('" + ref.name + "') }}",
            num_servers="{{ params.mxnet_servers }}", num_workers="{{ params.mxnet_workers }}",
            cluster_timeout="{{ params.stage_timeout_minutes * 60 }}", image=_image(ref), **after_trials)
    from kiln.form import param_template

    # Settings its stage does not take as flags (a spec's own trainer's, through ``train``) go as --param form fields.
    params = [arg for setting in ref.settings if setting not in STAGES[ref.stage].settings
              for arg in ("--param", f"{setting}={param_template(setting, spec.trainer_settings[setting])}")]
    options = [*ref.stage_options, *params]
    return _stage(spec, ref.airflow_task_id, ref.stage, options, pod_resources=ref.resources, image=_image(ref),
                  **after_trials)


def _trials(spec: DatasetSpec, plan_search: Any):
    """Every searched candidate's trials: one mapped task instance per planned trial (none without a search)."""
    from kiln.operators.spark import KilnTrialOperator

    refs = spec.trainer_refs
    return KilnTrialOperator.partial(
        task_id="search_trials", stage="trial", max_active_tis_per_dagrun=SEARCH_PARALLELISM, result_path=RESULT_FILE,
        spark_candidates=[name for name, ref in refs.items() if ref.runner == "spark"],
        candidate_images={name: image for name, ref in refs.items() if (image := _image(ref))},
        **_spark_settings(spec, "search_trials"),
    ).expand(arguments=plan_search.output)


def _training_doc(spec: DatasetSpec) -> str:
    return (f"### {training_dag_id(spec.name)}\n\n{spec.description or 'Training pipeline of dataset ' + spec.name}\n\n"
            f"Dataset spec `datasets/{spec.name}.yaml`: {spec.task} task, label `{spec.label}`, key `{spec.key}`, "
            f"{spec.source.kind} source. **ingest -> validate -> preprocess (Spark) -> train (Spark MLlib, MXNet single "
            f"and dist_sync, Singa{''.join(', ' + n for n in spec.trainers)}) -> evaluate -> register -> warm the Ignite "
            f"feature cache `{spec.feature_cache}`** when the champion of model `{spec.registry_name}` changes.\n\n"
            "Trigger it from the form (every field typed, bounded, described; defaults from the spec), let the "
            "schedule run it, or backfill: `airflow backfill create --dag-id "
            f"{training_dag_id(spec.name)} --from-date ... --to-date ... --max-active-runs 1`. Outputs: "
            f"`$KILN_DATA_ROOT/{spec.name}/raw/ds=.../`, `$KILN_DATA_ROOT/{spec.name}/runs/ds=.../run=.../`, "
            f"`$KILN_DATA_ROOT/registry/{spec.registry_name}/`.")


def _data_tasks(spec: DatasetSpec) -> tuple[Any, Any]:
    """plan -> ingest -> validate -> preprocess; returns (plan, preprocess)."""

    @task(multiple_outputs=True)
    def plan(params=None, logical_date=None, dag_run=None) -> dict:
        """Check the params against the spec and resolve the partition and its paths once."""
        from kiln.settings import data_root
        from ml_tasks.core.planning import plan_run

        return plan_run(spec.name, dict(params), data_root(), logical_date, getattr(dag_run, "run_after", None),
                        dag_run.run_id)

    connections = [spec.source.conn_id] if isinstance(spec.source, PostgresSource) else []
    planned = plan()
    preprocess = _spark_stage(spec, "preprocess", "preprocess")
    planned >> _stage(spec, "ingest", "ingest", connections=connections) >> _stage(spec, "validate", "validate") >> preprocess
    return planned, preprocess


def _training_tasks(spec: DatasetSpec, preprocess: Any) -> Any:
    """The search's trials and every candidate's trainer, of which the form's ``candidates`` run; returns the task
    that fails the run when none of them trained."""
    trainers = {name: candidate_task(spec, ref) for name, ref in spec.trainer_refs.items()}
    plan_search = _stage(spec, "plan_search", "search-plan", ["--params-json", "{{ params | tojson }}"])

    @task.branch
    def choose_candidates(params=None) -> list[str]:
        """Run only the trainers chosen in the form; the others are skipped, not failed."""
        return [trainers[name].task_id for name in params["candidates"] if name in trainers]

    # A trainer that fails its contract is left out, not the run: once every chosen trainer is done (failed
    # ones too), evaluate compares whoever trained. When none did (or ingest already failed) this task fails
    # instead, so evaluate and what follows start no pod or process and the run ends failed, not green.
    @task(trigger_rule="all_done")
    def any_candidate_trained(ti=None) -> list[str]:
        from airflow.sdk.exceptions import AirflowFailException

        from ml_tasks.evaluation.evaluate import trained_candidates

        trained = [c.dir.name for c in trained_candidates(run_layout(ti).candidates_root)]
        if not trained:
            raise AirflowFailException("no candidate trained in this run: the failed or skipped tasks before this one say why")
        return trained

    preprocess >> choose_candidates() >> list(trainers.values())
    preprocess >> plan_search
    _trials(spec, plan_search) >> [trainers[name] for name in searchable(spec)]
    trained = any_candidate_trained()
    list(trainers.values()) >> trained
    return trained


def _approval_tasks(spec: DatasetSpec, register: Any) -> Any:
    """Human approval (form field require_approval): only a version that would otherwise be promoted waits for it.
    Returns the task that holds the registry's decision for this run's version."""
    from kiln.operators.approval import PromotionApprovalOperator, approver_ids

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def approval_needed(ti=None) -> bool:
        decision = ti.xcom_pull(task_ids="register")
        if not decision["awaiting_approval"]:
            print(f"no approval to ask: promoted={decision['promoted']} {'; '.join(decision['reasons'])}")
        return bool(decision["awaiting_approval"])

    registered = "ti.xcom_pull(task_ids='register')"
    approvers = spec.approval.approvers
    approve = PromotionApprovalOperator(
        task_id="approve_promotion", timeout_minutes="{{ params.approval_timeout_minutes }}",
        approvers=approver_ids(approvers.users, approvers.roles) if approvers else (),
        subject="Promote {{ " + registered + "['model_name'] }}/{{ " + registered + "['version'] }} ({{ "
                + registered + "['candidate'] }}) to champion?",
        body="{{ " + registered + "['approval_request'] }}")

    @task
    def record_approval(params=None, ti=None) -> dict:
        """The answer (or the timeout) goes into the registry, which re-decides the champion."""
        from kiln.settings import data_root
        from ml_tasks.core.layout import registry_root
        from ml_tasks.evaluation.registry import approval_outcome
        from ml_tasks.evaluation.registry import record_approval as record

        decision = ti.xcom_pull(task_ids="register")
        approved, by, reason = approval_outcome(ti.xcom_pull(task_ids="approve_promotion"),
                                                params["approval_timeout_minutes"])
        return record(registry_root(data_root()), decision["model_name"], decision["version"],
                      decision["registration"], approved, by, reason)

    @task(trigger_rule="none_failed")
    def promotion_decision(ti=None) -> dict:
        """The registry's decision for this run's version: after the approval when one was asked."""
        decision = ti.xcom_pull(task_ids="record_approval") or ti.xcom_pull(task_ids="register")
        print(f"{decision['model_name']}/{decision['version']}: promoted={decision['promoted']} "
              f"{'; '.join(decision['reasons'])}; champion {decision['champion']}")
        return decision

    decision = promotion_decision()
    register >> approval_needed() >> approve >> record_approval() >> decision
    register >> decision
    return decision


def _serving_tasks(spec: DatasetSpec, decision: Any) -> None:
    """When the champion changed: announce it (the champion asset) and warm its features into the Ignite cache."""
    from kiln.operators.ignite import IgniteCacheWarmOperator

    @task.short_circuit(ignore_downstream_trigger_rules=True)
    def champion_changed(params=None, ti=None) -> bool:
        """Warm only when the champion changed (a backfill of an older day rarely changes it), and only if asked."""
        decided = ti.xcom_pull(task_ids="promotion_decision")
        if not params["warm_cache"]:
            print("warm_cache is off for this run; the online cache is left as it is")
            return False
        if not decided["champion_changed"]:
            print(f"champion unchanged ({decided['champion']}); version {decided['version']} promoted="
                  f"{decided['promoted']} {'; '.join(decided['reasons'])}; the online cache is left as it is")
            return False
        return True

    @task(outlets=[champion_asset(spec)])
    def announce_champion(ti=None) -> str:
        """Update the champion asset only when the champion changed (a skip emits no event)."""
        from airflow.sdk.exceptions import AirflowSkipException

        decided = ti.xcom_pull(task_ids="promotion_decision")
        if not decided["champion_changed"]:
            raise AirflowSkipException(f"champion unchanged or none ({decided['champion']})")
        return decided["champion"]

    warm_cache = IgniteCacheWarmOperator(
        task_id="warm_feature_cache",
        source="{{ ti.xcom_pull(task_ids='promotion_decision')['champion_features'] }}",  # the champion's own
        cache_name=spec.feature_cache,
        key=spec.key,
        version_prefix="{{ ti.xcom_pull(task_ids='promotion_decision')['champion'] }}-",
    )
    decision >> announce_champion()
    decision >> champion_changed() >> warm_cache


def training_dag(spec: DatasetSpec) -> DAG:
    from kiln.form import form_params

    @dag(dag_id=training_dag_id(spec.name), doc_md=_training_doc(spec), schedule=spec.schedule, start_date=START,
         catchup=False, max_active_runs=1, tags=["kiln", "ml", "training", f"dataset:{spec.name}"],
         # execution_timeout is the backstop for every task; stages get the form's tighter one.
         default_args={"owner": "kiln", "retries": 1, "retry_delay": timedelta(seconds=15), "execution_timeout": TASK_TIMEOUT},
         params=form_params(spec), render_template_as_native_obj=False, user_defined_macros={"kiln_layout": run_layout})
    def pipeline():
        _, preprocess = _data_tasks(spec)
        trained = _training_tasks(spec, preprocess)
        evaluate = _stage(spec, "evaluate", "evaluate")
        online_features = _stage(spec, "online_features", "online-features")
        register = _stage(spec, "register", "register", ["--params-json", "{{ params | tojson }}"])
        trained >> evaluate >> online_features >> register
        decision = _approval_tasks(spec, register)
        _serving_tasks(spec, decision)
        # Last, whatever happened before: the run's HTML report (the "Report" tab of the run's page).
        decision >> _stage(spec, "report", "report", trigger_rule="all_done")

    return pipeline()


def cache_refresh_dag(spec: DatasetSpec) -> DAG:
    from kiln.operators.ignite import IgniteCacheWarmOperator

    doc = (f"### {cache_refresh_dag_id(spec.name)}\n\nRe-warms the Ignite feature cache `{spec.feature_cache}` of "
           f"dataset `{spec.name}` whenever `{training_dag_id(spec.name)}` updates the `{champion_asset(spec).name}` "
           "asset (the champion changed), with **the champion's own features** (registered with the model). Loads "
           "a new versioned cache and switches the alias only after verifying it, under a lease on the alias. "
           "Needs an Ignite node (`make ignite-up`, connection `ignite_default`). Trigger it by hand to repair the "
           "cache after an Ignite restart.")

    @dag(dag_id=cache_refresh_dag_id(spec.name), doc_md=doc, schedule=[champion_asset(spec)], start_date=START,
         catchup=False, max_active_runs=1, tags=["kiln", "ignite", "serving", f"dataset:{spec.name}"],
         default_args={"owner": "kiln", "retries": 2, "retry_delay": timedelta(seconds=20), "execution_timeout": TASK_TIMEOUT})
    def refresh():
        @task(multiple_outputs=True)
        def find_champion() -> dict:
            """The registry's champion and the features it was registered with: what serving must see."""
            from kiln.settings import data_root
            from ml_tasks.core.layout import registry_root
            from ml_tasks.evaluation.registry import champion_features

            return champion_features(registry_root(data_root()), spec.registry_name)  # the spec's model, no other

        champion = find_champion()
        IgniteCacheWarmOperator(
            task_id="warm_feature_cache",
            source=champion["source"],
            cache_name=spec.feature_cache,
            key=spec.key,
            version_prefix="{{ ti.xcom_pull(task_ids='find_champion')['version'] }}-",
        )

    return refresh()


def streaming_dag(spec: DatasetSpec) -> DAG:
    from kiln.form import form_params, param_template
    from kiln.operators.stage import KilnStageOperator

    assert spec.stream is not None
    doc = (f"### {streaming_dag_id(spec.name)}\n\nKeeps the online features of dataset `{spec.name}` fresh from its "
           f"Kafka events (`{spec.topic('events')}`): Spark Structured Streaming validates each event against the "
           f"dataset's schema, sends malformed ones to `{spec.topic('dead-letters')}` with the reason, and writes each "
           f"entity's newest event into the Ignite feature cache `{spec.feature_cache}` (an older event never replaces "
           "a newer one). The schedule's runs process what is waiting and stop (`stream_mode` available_now, the "
           "checkpoint carries the offsets); trigger with `stream_mode` continuous for a long-running query, restarted "
           "by its supervisor when its driver dies and failing this task when it keeps dying. Connections "
           "`kafka_default` (extra `bootstrap.servers`) and `ignite_default`.")

    @dag(dag_id=streaming_dag_id(spec.name), doc_md=doc, schedule=spec.stream.schedule, start_date=START, catchup=False,
         max_active_runs=1, tags=["kiln", "streaming", "kafka", "ignite", f"dataset:{spec.name}"],
         default_args={"owner": "kiln", "retries": 1, "retry_delay": timedelta(seconds=30), "execution_timeout": TASK_TIMEOUT},
         params=form_params(spec, pipeline="streaming"))
    def streaming():
        @task(multiple_outputs=True)
        def locate_stream(run_id=None) -> dict:
            """Where the query keeps its state and result, and the brokers and nodes it talks to (from the connections)."""
            from airflow.sdk import BaseHook

            from kiln.hooks.ignite import IgniteHook
            from kiln.settings import data_root
            from ml_tasks.core.layout import StreamFiles

            addresses, _ = IgniteHook().client_config()
            return {"data_root": data_root(), "result_path": str(StreamFiles.of(data_root(), spec.name).result(run_id)),
                    "bootstrap_servers": BaseHook.get_connection("kafka_default").extra_dejson["bootstrap.servers"],
                    "ignite_host": ",".join(f"{host}:{port}" for host, port in addresses)}

        def located(key: str) -> str:
            return "{{ ti.xcom_pull(task_ids='locate_stream', key='" + key + "') }}"

        stage = STAGES["stream"]
        arguments = stage.arguments(
            dataset=spec.name, partition=["--data-root", located("data_root")],
            values={name: param_template(name) for name in stage.settings_for(spec)},
            options=["--bootstrap-servers", located("bootstrap_servers"), "--ignite-host", located("ignite_host")])
        locate_stream() >> KilnStageOperator(task_id="stream_events", stage="stream", arguments=arguments,
                                             result_path=located("result_path"), pod_resources="medium",
                                             connections=["ignite_default"])  # its login and TLS

    return streaming()


def stream_alerts_asset(spec: DatasetSpec) -> Asset:
    """Updated by Airflow's Kafka trigger (in the triggerer) whenever the stream publishes an alert."""
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
    from airflow.sdk import AssetWatcher

    trigger = MessageQueueTrigger(scheme="kafka", topics=[spec.topic("alerts")], apply_function="ml_tasks.features.events.alert_of",
                                  kafka_config_id="kafka_default", poll_interval=1)
    return Asset(f"kiln_stream_alerts_{spec.name}",
                 watchers=[AssetWatcher(name=f"kiln_stream_alerts_{spec.name}", trigger=trigger)])


def stream_alerts_dag(spec: DatasetSpec) -> DAG:
    doc = (f"### {stream_alerts_dag_id(spec.name)}\n\nEvent-driven: runs when the stream of dataset `{spec.name}` "
           f"publishes an alert on `{spec.topic('alerts')}` (an AssetWatcher with the Kafka message-queue trigger; the "
           "triggerer must run). It re-reads the batch's dead letters and reports which rules the events broke, with an "
           "example of each, so a producer's schema change is named within a minute of reaching the stream.")

    @dag(dag_id=stream_alerts_dag_id(spec.name), doc_md=doc, schedule=[stream_alerts_asset(spec)], start_date=START,
         catchup=False, tags=["kiln", "streaming", "alerts", f"dataset:{spec.name}"],
         default_args={"owner": "kiln", "retries": 1, "retry_delay": timedelta(seconds=15)})
    def alerts():
        @task
        def summarise_dead_letters(triggering_asset_events=None) -> dict:
            """Which rules the alerting batch's events broke (from the dead-letter topic)."""
            from airflow.sdk import BaseHook

            from ml_tasks.features.events import dead_letter_summary

            alerts = [event.extra.get("payload", event.extra) for events in (triggering_asset_events or {}).values()
                      for event in events]
            alert = alerts[-1] if alerts else {}
            print(f"alert: {alert}")
            summary = dead_letter_summary(BaseHook.get_connection("kafka_default").extra_dejson["bootstrap.servers"],
                                          spec.topic("dead-letters"), batch_id=alert.get("batch_id"))
            for rule, count in summary["by_rule"].items():
                print(f"{count} events broke rule {rule!r}, e.g. {summary['examples'][rule]}")
            return {"alert": alert, **summary}

        summarise_dead_letters()

    return alerts()


class BrokenSpecDag(DAG):
    """Stands for the DAG of a spec that does not load. Airflow validates each DAG of a file separately, so
    raising here records an import error naming the spec file while the other specs' DAGs load."""

    def __init__(self, dag_id: str, error: SpecError):
        super().__init__(dag_id=dag_id, schedule=None, start_date=START, doc_md=f"Broken dataset spec: {error}")
        self.spec_error = error

    def validate(self) -> None:
        raise self.spec_error


def dags_of(path: Path, spec: DatasetSpec | SpecError) -> list[DAG]:
    """The DAGs of one spec file; a broken file gives a DAG that fails validation with the spec's error."""
    name = path.name.removesuffix(path.suffix)
    if isinstance(spec, SpecError):
        return [BrokenSpecDag(training_dag_id(name), spec)]
    try:
        streaming = [streaming_dag(spec), stream_alerts_dag(spec)] if spec.stream is not None else []
        return [training_dag(spec), cache_refresh_dag(spec), *streaming]
    except Exception as exc:  # e.g. a schedule Airflow does not understand: only this spec's DAGs are lost
        return [BrokenSpecDag(training_dag_id(name), SpecError(f"{path}: its DAG cannot be built: {exc}"))]
