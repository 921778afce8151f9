"""The run reports inside Airflow's UI: a FastAPI app the Kiln plugin mounts on the API server at ``/kiln``.

Airflow does not put a plugin's routes behind its auth, so every route here does it itself, with Airflow's own
pieces: the caller's JWT (the UI's ``_token`` cookie, or an ``Authorization: Bearer`` token from ``/auth/token``)
resolved by Airflow's auth manager, which must also allow reading the runs of the DAG the report belongs to.
Files are served only from run report folders under the data root: a path that leaves it (``..``, an absolute
path, a symlink out) is refused.

- ``GET /kiln/reports/{dag_id}/{run_id}``: a training DAG run's report (the run page's "Report" tab).
- ``GET /kiln/files/{path}``: a file of a report folder, by its path under the data root.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse

from ml_tasks.layout import check_name, run_key

app = FastAPI(title="Kiln run reports", docs_url=None, redoc_url=None, openapi_url=None)


def dataset_of(dag_id: str) -> str:
    """The dataset whose training DAG is ``dag_id`` (``kiln.pipelines.training_dag_id`` read backwards)."""
    from kiln.pipelines import training_dag_id
    from ml_tasks.spec import BUILTIN_DATASET

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


@app.get("/reports/{dag_id}/{run_id}")
async def run_report(dag_id: str, run_id: str, request: Request) -> FileResponse:
    await authorize(request, dag_id)
    dataset = dataset_of(dag_id)
    found = sorted((data_root() / dataset / "runs").glob(f"ds=*/run={run_key(run_id)}/report/index.html"))
    if not found:
        raise HTTPException(404, f"run {run_id} of {dag_id} has no report yet: its last task, report, writes it")
    return FileResponse(found[-1], media_type="text/html")


@app.get("/files/{path:path}")
async def report_file(path: str, request: Request) -> FileResponse:
    await authorize(request, None)
    root = data_root()
    # Refuse before touching the file system: only a relative path of plain names, inside a run's report folder.
    parts = Path(path).parts
    if Path(path).is_absolute() or ".." in parts or "" in parts or len(parts) < 5 or parts[1] != "runs" \
            or "report" not in parts[4:-1]:
        raise HTTPException(404, "not a report file under the data root")
    try:
        dataset = check_name("dataset", parts[0])
    except ValueError:
        raise HTTPException(404, "not a report file under the data root") from None
    from kiln.pipelines import training_dag_id

    await authorize(request, training_dag_id(dataset))
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():  # a symlink out of the data root, or nothing there
        raise HTTPException(404, "not a report file under the data root")
    return FileResponse(target)
