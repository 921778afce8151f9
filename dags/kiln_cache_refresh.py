"""
### kiln_cache_refresh

Re-warms the online feature cache in Apache Ignite whenever `kiln_training` updates the
`kiln_champion_model` asset (a promotion), from the newest raw partition's latest row per entity.
Warming loads a new versioned cache and switches the `kiln_features` alias only after verifying it,
so readers never see a partial load. Needs an Ignite node (`make ignite-up`, connection `ignite_default`).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task
from kiln.operators.ignite import IgniteCacheWarmOperator
from kiln.operators.stage import KilnStageOperator


def latest(key: str) -> str:
    return "{{ ti.xcom_pull(task_ids='find_latest_partition', key='" + key + "') }}"


@dag(
    dag_id="kiln_cache_refresh",
    doc_md=__doc__,
    schedule=[Asset("kiln_champion_model")],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["kiln", "ignite", "serving"],
    default_args={"owner": "kiln", "retries": 2, "retry_delay": timedelta(seconds=20)},
)
def kiln_cache_refresh():
    @task(multiple_outputs=True)
    def find_latest_partition() -> dict:
        """The newest raw partition under the data root; its features are what serving should see."""
        from pathlib import Path

        from kiln.settings import data_root

        from ml_tasks.layout import Layout, latest_partition

        root = Path(data_root())
        return Layout(root.resolve(), latest_partition(root)).as_dict()

    online_features = KilnStageOperator(
        task_id="online_features",
        stage="online-features",
        arguments=["--data-root", latest("data_root"), "--ds", latest("ds")],
        result_path=latest("run_dir") + "/_results/cache_refresh_online_features.json",
    )
    warm = IgniteCacheWarmOperator(
        task_id="warm_feature_cache",
        source=latest("run_dir") + "/online_features.parquet",
        cache_name="kiln_features",
        version_prefix=latest("ds") + "-",
    )
    find_latest_partition() >> online_features >> warm


kiln_cache_refresh()
