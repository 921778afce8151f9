"""Registers Kiln with Airflow (shown under Admin > Plugins): the run reports' routes and their tab on a run's page.
The operators are imported from ``kiln``."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from kiln.report_app import app as report_app


class KilnPlugin(AirflowPlugin):
    name = "kiln"
    fastapi_apps = [{"app": report_app, "url_prefix": "/kiln", "name": "Kiln run reports"}]
    external_views = [{"name": "Report", "href": "kiln/reports/{DAG_ID}/{RUN_ID}", "destination": "dag_run",
                       "url_route": "kiln-report", "category": "Kiln"}]
