"""The run reports inside Airflow's UI: a FastAPI app the Kiln plugin mounts on the API server at ``/kiln``.

Airflow does not put a plugin's routes behind its auth, so every route here does it itself, with Airflow's own
pieces: the caller's JWT (the UI's ``_token`` cookie, or an ``Authorization: Bearer`` token from ``/auth/token``)
resolved by Airflow's auth manager, which must also allow reading the runs of the DAG the report belongs to.
The only file served is a run's report, where the report stage writes it (``Layout.report``): anything else in a
run (a trainer's own HTML), a path that leaves the data root (``..``, an absolute path) and a report that is a
symlink out of it are refused. The report is served on Airflow's origin, so it is sent as HTML the browser may not
sniff, under a Content-Security-Policy that runs no script (the report has none) in a sandbox of its own origin.

- ``GET /kiln/reports/{dag_id}/{run_id}``: a training DAG run's report (the run page's "Report" tab).
- ``GET /kiln/files/{path}``: a run's report, by its path under the data root.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse

from ml_tasks.core.layout import Layout, check_name

# What the report needs and nothing more: its inline <style> and SVG (matplotlib's may embed a data: image), shown in
# the run page's frame. No script, no fetch, no form; ``sandbox`` gives it an origin of its own, away from Airflow's
# cookies, should anything slip through.
REPORT_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'self'; sandbox",
    "X-Content-Type-Options": "nosniff",
}
NOT_A_REPORT = "not a run report under the data root"

app = FastAPI(title="Kiln run reports", docs_url=None, redoc_url=None, openapi_url=None)


def dataset_of(dag_id: str) -> str:
    """The dataset whose training DAG is ``dag_id`` (``kiln.pipelines.training_dag_id`` read backwards)."""
    from kiln.pipelines import training_dag_id
    from ml_tasks.core.spec import BUILTIN_DATASET

    name = BUILTIN_DATASET if dag_id == training_dag_id(BUILTIN_DATASET) else dag_id.removeprefix("kiln_training_")
    try:
        if training_dag_id(check_name("dataset", name)) != dag_id:
            raise ValueError
    except ValueError:
        raise HTTPException(404, f"{dag_id} is not a Kiln training DAG: only their runs have reports") from None
    return name


async def authorize(request: Request, dag_id: str | None) -> None:
    """401 without a valid Airflow token (cookie or bearer), 403 when it may not read ``dag_id``'s runs (None: any
    valid user, before a path says which DAG)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    token = credentials if scheme.lower() == "bearer" and credentials else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    user = await resolve_user_from_token(token)  # raises 401 (none, expired) or 403 (invalid)
    if dag_id is not None and not get_auth_manager().is_authorized_dag(method="GET", access_entity=DagAccessEntity.RUN,
                                                details=DagDetails(id=dag_id), user=user):
        raise HTTPException(403, f"not allowed to read the runs of {dag_id}")


def data_root() -> Path:
    from kiln.settings import data_root as configured

    return Path(configured()).resolve()


def report_response(report: Path) -> FileResponse:
    """``report`` as HTML the browser may not sniff or script, unless it is a symlink out of the data root."""
    target = report.resolve()
    if not target.is_relative_to(data_root()) or not target.is_file():
        raise HTTPException(404, NOT_A_REPORT)
    return FileResponse(target, media_type="text/html", headers=REPORT_HEADERS)


@app.get("/reports/{dag_id}/{run_id}")
async def run_report(dag_id: str, run_id: str, request: Request) -> FileResponse:
    await authorize(request, dag_id)
    found = Layout.reports_of(data_root(), dataset_of(dag_id), run_id)
    if not found:
        raise HTTPException(404, f"run {run_id} of {dag_id} has no report yet: its last task, report, writes it")
    return report_response(found[-1])


@app.get("/files/{path:path}")
async def report_file(path: str, request: Request) -> FileResponse:
    await authorize(request, None)
    # Refuse before touching the file system: only a relative path of plain names, starting with a dataset's.
    parts = Path(path).parts
    if Path(path).is_absolute() or ".." in parts or not parts:
        raise HTTPException(404, NOT_A_REPORT)
    try:
        dataset = check_name("dataset", parts[0])
    except ValueError:
        raise HTTPException(404, NOT_A_REPORT) from None
    from kiln.pipelines import training_dag_id

    await authorize(request, training_dag_id(dataset))
    root = data_root()
    if root / path not in Layout.reports_of(root, dataset):  # a run's report, not any file of the run
        raise HTTPException(404, NOT_A_REPORT)
    return report_response(root / path)
