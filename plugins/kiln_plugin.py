"""Registers Kiln with Airflow (shown under Admin > Plugins); the operators are imported from ``kiln``."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class KilnPlugin(AirflowPlugin):
    name = "kiln"
