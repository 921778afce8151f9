"""
### kiln_cache_refresh

Re-warms the online feature cache in Apache Ignite whenever `kiln_training` updates the
`kiln_champion_model` asset (the champion changed), with **the champion's own features** (registered
with the model), never a newer or older day's. Warming loads a new versioned cache and switches the
`kiln_features` alias only after verifying it, under a lease on the alias, so it never races the
training DAG's own warm and readers never see a partial load. Needs an Ignite node (`make ignite-up`,
connection `ignite_default`). Trigger it by hand to repair the cache after an Ignite restart.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task
from kiln.form import form_params
from kiln.operators.ignite import IgniteCacheWarmOperator

from ml_tasks.params import TASK_TIMEOUT


@dag(
    dag_id="kiln_cache_refresh",
    doc_md=__doc__,
    schedule=[Asset("kiln_champion_model")],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["kiln", "ignite", "serving"],
    default_args={"owner": "kiln", "retries": 2, "retry_delay": timedelta(seconds=20), "execution_timeout": TASK_TIMEOUT},
    params=form_params("model_name"),
)
def kiln_cache_refresh():
    @task(multiple_outputs=True)
    def find_champion(params=None) -> dict:
        """The registry's champion and the features it was registered with: what serving must see."""
        from kiln.settings import data_root

        from ml_tasks.layout import registry_root
        from ml_tasks.registry import champion_features

        return champion_features(registry_root(data_root()), params["model_name"])

    champion = find_champion()
    IgniteCacheWarmOperator(
        task_id="warm_feature_cache",
        source=champion["source"],
        cache_name="kiln_features",
        version_prefix="{{ ti.xcom_pull(task_ids='find_champion')['version'] }}-",
    )


kiln_cache_refresh()
