"""Kiln's ML code: one module per pipeline stage, importable and testable without Airflow.

Stages read and write files under a partition-scoped layout (see ``ml_tasks.layout``); each returns a
small JSON-serialisable summary that the CLI writes as the stage's result manifest.
"""
