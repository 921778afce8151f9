"""Kiln's DAGs, two per dataset spec in ``datasets/`` (``KILN_DATASETS_DIR``): ``kiln_training`` and
``kiln_cache_refresh`` for the built-in ``transactions`` dataset, ``kiln_training_<name>`` and
``kiln_cache_refresh_<name>`` for every other one (see ``kiln.pipelines``).

Wiring only (airflow's dag processor finds this file by those two words): parsing reads the small spec files and builds the DAGs; a spec that does not load
becomes an import error naming its file, and the other specs' DAGs are unaffected.
"""

from __future__ import annotations

from kiln.pipelines import dags_of

from ml_tasks.core.spec import discover

for _path, _spec in discover():
    for _dag in dags_of(_path, _spec):
        globals()[_dag.dag_id] = _dag
