"""
### kiln_training

Daily training pipeline for the card-transactions model:
**ingest -> validate -> preprocess (Spark) -> train (Spark MLlib LR and GBT, MXNet MLP in one process
and on a dist_sync parameter-server cluster, Apache Singa in its container) -> evaluate -> register -> warm the Ignite feature cache**
(with the champion's features, when the champion changed and `warm_cache` is on).

* Trigger it from the form: every field is typed, bounded and described; a bad value is refused
  before the run starts. `partition_date` picks the day to build (default: the logical date).
* Backfill history with `airflow backfill create --dag-id kiln_training --from-date ... --to-date ...`:
  one model version per day; rerunning a day replaces only that day's outputs.
* Outputs live under `$KILN_DATA_ROOT` (default `data/`): `raw/ds=.../`, `runs/ds=.../run=.../` (this run's
  intermediates, so concurrent runs of one day never mix), `registry/`.
* Every stage is killed with its process group after `stage_timeout_minutes`.
* Heavy steps run as local subprocesses or Kubernetes pods (`KILN_EXECUTION`); Spark steps go
  through the `spark_default` connection.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, dag, task
from kiln.form import form_params
from kiln.operators.ignite import IgniteCacheWarmOperator
from kiln.operators.mxnet import MXNetDistributedOperator
from kiln.operators.stage import KilnStageOperator

from ml_tasks.params import TASK_TIMEOUT

SPARK_APP = str(Path(__file__).resolve().parents[1] / "scripts" / "spark_stage.py")
SINGA_IMAGE = os.environ.get("KILN_SINGA_IMAGE", "kiln/kiln-singa:latest")
CHAMPION_MODEL = Asset("kiln_champion_model")
FEATURE_CACHE = "kiln_features"


def plan_value(key: str) -> str:
    return "{{ ti.xcom_pull(task_ids='plan', key='" + key + "') }}"


PARTITION = ["--data-root", plan_value("data_root"), "--ds", plan_value("ds"), "--run-id", "{{ run_id }}"]
STAGE_TIMEOUT = "{{ params.stage_timeout_minutes }}"


def result_path(task_id: str) -> str:
    return plan_value("results_dir") + f"/{task_id}.json"


def stage(task_id: str, stage_name: str, args: list[str], **kwargs) -> KilnStageOperator:
    return KilnStageOperator(
        task_id=task_id, stage=stage_name, arguments=[*PARTITION, *args], result_path=result_path(task_id),
        timeout_minutes=STAGE_TIMEOUT, **kwargs
    )


def spark_stage(task_id: str, args: list[str]) -> SparkSubmitOperator:
    return SparkSubmitOperator(
        task_id=task_id,
        conn_id="spark_default",
        application=SPARK_APP,
        application_args=[*args[:1], *PARTITION, *args[1:]],
        name=f"kiln-{task_id}",
        conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "8", "spark.log.level": "WARN"},
        pool_slots=2,
    )


@dag(
    dag_id="kiln_training",
    doc_md=__doc__,
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["kiln", "ml", "training"],
    # execution_timeout is the backstop for every task (Spark and Python ones too); stages get the form's tighter one.
    default_args={"owner": "kiln", "retries": 1, "retry_delay": timedelta(seconds=15), "execution_timeout": TASK_TIMEOUT},
    params=form_params(),
    render_template_as_native_obj=False,
)
def kiln_training():
    @task(multiple_outputs=True)
    def plan(params=None, logical_date=None, dag_run=None) -> dict:
        """Resolve the partition and its paths once; every later task reads them from here."""
        from kiln.settings import data_root

        from ml_tasks.planning import plan_run

        return plan_run(dict(params), data_root(), logical_date, getattr(dag_run, "run_after", None), dag_run.run_id)

    ingest = stage("ingest", "ingest", ["--source", "{{ params.source }}", "--rows", "{{ params.rows }}",
                                        "--input-path", "{{ params.input_path or '' }}"])
    validate = stage("validate", "validate", ["--max-null-ratio", "{{ params.max_null_ratio }}", "--max-psi", "{{ params.max_psi }}"])
    preprocess = spark_stage("preprocess", ["preprocess", "--pca-k", "{{ params.pca_k }}", "--test-fraction", "{{ params.test_fraction }}"])
    spark_args = ["--lr-reg", "{{ params.lr_reg }}", "--gbt-max-iter", "{{ params.gbt_max_iter }}",
                  "--gbt-max-depth", "{{ params.gbt_max_depth }}"]
    train_lr = spark_stage("train_spark_lr", ["train-spark", "--model", "lr", *spark_args])
    train_gbt = spark_stage("train_spark_gbt", ["train-spark", "--model", "gbt", *spark_args])
    mlp_args = ["--epochs", "{{ params.mxnet_epochs }}", "--hidden", "{{ params.mxnet_hidden }}",
                "--layers", "{{ params.mxnet_layers }}", "--dropout", "{{ params.mxnet_dropout }}",
                "--learning-rate", "{{ params.mxnet_learning_rate }}", "--batch-size", "{{ params.mxnet_batch_size }}"]
    train_mxnet = stage("train_mxnet", "train-mxnet", ["--candidate", "mxnet_mlp", *mlp_args], pod_resources="medium")
    train_mxnet_dist = MXNetDistributedOperator(
        task_id="train_mxnet_dist",
        worker_args=[*PARTITION, "--candidate", "mxnet_dist", *mlp_args],
        result_path=result_path("train_mxnet_dist"),
        checkpoint_dir=plan_value("checkpoints_root") + "/mxnet_dist",
        num_servers="{{ params.mxnet_servers }}",
        num_workers="{{ params.mxnet_workers }}",
        cluster_timeout="{{ params.stage_timeout_minutes * 60 }}",
    )
    train_singa = stage("train_singa", "train-singa", ["--candidate", "singa_mlp", *mlp_args], pod_resources="medium",
                        image=SINGA_IMAGE)
    evaluate = stage("evaluate", "evaluate", ["--min-auc", "{{ params.min_auc }}", "--max-log-loss", "{{ params.max_log_loss }}",
                                              "--max-calibration-error", "{{ params.max_calibration_error }}",
                                              "--candidates", "{{ params.candidates | join(',') }}"],
                     trigger_rule="none_failed_min_one_success")
    online_features = stage("online_features", "online-features", [])
    register = stage("register", "register", ["--model-name", "{{ params.model_name }}", "--margin", "{{ params.promote_margin }}",
                                              "--params-json", "{{ params | tojson }}"])

    @task.short_circuit(ignore_downstream_trigger_rules=True)
    def champion_changed(params=None, ti=None) -> bool:
        """Warm only when the champion changed (a backfill of an older day rarely changes it), and only if asked."""
        decision = ti.xcom_pull(task_ids="register")
        if not params["warm_cache"]:
            print("warm_cache is off for this run; the online cache is left as it is")
            return False
        if not decision["champion_changed"]:
            print(f"champion unchanged ({decision['champion']}); version {decision['version']} promoted="
                  f"{decision['promoted']} {'; '.join(decision['reasons'])}; the online cache is left as it is")
            return False
        return True

    warm_cache = IgniteCacheWarmOperator(
        task_id="warm_feature_cache",
        source="{{ ti.xcom_pull(task_ids='register')['champion_features'] }}",  # the champion's own, never this run's date
        cache_name=FEATURE_CACHE,
        version_prefix="{{ ti.xcom_pull(task_ids='register')['champion'] }}-",
        batch_size=1000,
        retain=2,
    )

    trainers = {"spark_lr": train_lr, "spark_gbt": train_gbt, "mxnet_mlp": train_mxnet, "mxnet_dist": train_mxnet_dist,
                "singa_mlp": train_singa}

    @task.branch
    def choose_candidates(params=None) -> list[str]:
        """Run only the trainers chosen in the form; the others are skipped, not failed."""
        return [trainers[name].task_id for name in params["candidates"] if name in trainers]

    @task(outlets=[CHAMPION_MODEL])
    def announce_champion(ti=None) -> str:
        """Update the kiln_champion_model asset only when the champion changed (a skip emits no event)."""
        from airflow.sdk.exceptions import AirflowSkipException

        decision = ti.xcom_pull(task_ids="register")
        if not decision["champion_changed"]:
            raise AirflowSkipException(f"champion unchanged or none ({decision['champion']})")
        return decision["champion"]

    register >> announce_champion()
    register >> champion_changed() >> warm_cache
    plan() >> ingest >> validate >> preprocess >> choose_candidates() >> list(trainers.values()) >> evaluate
    evaluate >> online_features >> register


kiln_training()
