"""The Kiln plugin's report routes on Airflow's own API app (loaded from the plugins folder, Airflow's auth manager and
JWTs, served by uvicorn on loopback): only the report the report stage wrote is served, and as a page that cannot
script Airflow's origin."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ml_tasks.core.layout import Layout
from ml_tasks.reports.html_report import write_report
from tests.conftest import PROJECT_ROOT, transactions_spec
from tests.ports import free_port

SERVE_AIRFLOW_API = """
import sys, uvicorn
from airflow.api_fastapi.app import create_app
uvicorn.run(create_app(apps="core"), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
RUN_ID = "manual__2026-06-03T10:00:00.123456+00:00"  # as Airflow names a triggered run: its folder is a hashed key
LINKED_RUN_ID = "scheduled__2026-06-04T00:00:00+00:00"


@pytest.fixture(scope="module")
def airflow_api(tmp_path_factory):
    """Airflow's API app with the repo's plugins, the simple auth manager (one admin) and a data root of its own."""
    home = tmp_path_factory.mktemp("airflow-api")
    (home / "passwords.json").write_text(json.dumps({"admin": "admin-pw"}))
    port = free_port()
    # The metadata DB is the one `make setup` migrated (AIRFLOW_HOME, tests/conftest.py): a token's check reads it.
    env = {**os.environ, "KILN_DATA_ROOT": str(home / "data"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
           "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
           "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16)}
    log = (home / "api.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", SERVE_AIRFLOW_API, str(port)], cwd=PROJECT_ROOT, env=env,
                            stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (home / "api.log").read_text()
        try:
            token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": "admin-pw"}, timeout=5)
            token.raise_for_status()
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "Airflow's API app did not answer within 120 s"
            time.sleep(0.5)
    try:
        yield {"url": url, "data_root": home / "data", "auth": {"Authorization": f"Bearer {token.json()['access_token']}"}}
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


@pytest.mark.slow  # Airflow's API server (uvicorn, its own port)
def test_only_the_runs_own_report_is_served_unsniffed_unscripted_and_inside_the_data_root(airflow_api, tmp_path):
    root = airflow_api["data_root"]
    lay = Layout.at(root, "transactions", "2026-06-03", RUN_ID)
    write_report(transactions_spec(), lay, "transactions")  # what the report stage writes
    # a trainer may write anything into its own folder, including a page called report
    planted = lay.candidate_dir("mxnet_mlp") / "report" / "x.html"
    planted.parent.mkdir(parents=True)
    planted.write_text("<script>fetch('/api/v2/connections')</script>")
    # a run whose report is a symlink out of the data root
    outside = tmp_path / "secret.html"
    outside.write_text("not for the report")
    linked = Layout.at(root, "transactions", "2026-06-04", LINKED_RUN_ID)
    linked.report_dir.mkdir(parents=True)
    linked.report.symlink_to(outside)

    def files(path: Path) -> str:
        return f"/kiln/files/{path.relative_to(root.resolve())}"

    with httpx.Client(base_url=airflow_api["url"], headers=airflow_api["auth"], timeout=30) as http:
        assert httpx.get(f"{airflow_api['url']}/kiln/reports/kiln_training/{RUN_ID}").status_code == 401
        for path in (f"/kiln/reports/kiln_training/{RUN_ID}", files(lay.report)):
            page = http.get(path)
            assert page.status_code == 200 and "Kiln run report: transactions partition 2026-06-03" in page.text, path
            assert page.headers["content-type"].startswith("text/html")
            assert page.headers["x-content-type-options"] == "nosniff"
            policy = dict((d.strip().split(" ", 1) + [""])[:2] for d in page.headers["content-security-policy"].split(";"))
            assert policy["default-src"] == "'none'" and "script-src" not in policy, policy  # no script runs
            assert "sandbox" in policy and policy["frame-ancestors"] == "'self'", policy
        planted_answer = http.get(files(planted))
        assert planted_answer.status_code == 404 and "<script" not in planted_answer.text
        for path in (f"/kiln/reports/kiln_training/{LINKED_RUN_ID}", files(linked.report)):
            leaked = http.get(path)
            assert leaked.status_code == 404 and "not for the report" not in leaked.text, path
