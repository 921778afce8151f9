"""Kiln's ML code, importable and testable without Airflow, grouped the way the pipeline runs:

- ``ml_tasks.ingestion``: data in (sources, ingest, schema, validation, event rules, spec inference);
- ``ml_tasks.features``: Spark preprocessing, online features, the Ignite feature cache, Kafka and the stream;
- ``ml_tasks.training``: the built-in candidates, the frameworks' trainers, the MXNet cluster, the search;
- ``ml_tasks.evaluation``: comparing candidates, the registry and its champion;
- ``ml_tasks.serving``: the prediction service and the portable models it scores with;
- ``ml_tasks.reports``: the run's summary and HTML report;
- ``ml_tasks.core``: specs, run settings, the stage table (the CLI), Layout, atomic writes, the environment.

``ml_tasks.trainer`` is the trainer contract user code imports (``from ml_tasks.trainer import TrainerInput``) and
``python -m ml_tasks`` the stage CLI. Stages read and write files under a partition-scoped layout
(``ml_tasks.core.layout``); each returns a small JSON-serialisable summary the CLI writes as its result manifest.
"""
