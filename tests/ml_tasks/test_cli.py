"""The stage CLI refuses names that would become paths outside their place, before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ml_tasks.core.layout import Layout, check_ds, run_key


def cli(*args: str, data_root) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ml_tasks", *args], capture_output=True, text=True, timeout=120,
                          env={"KILN_DATA_ROOT": str(data_root), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize(("args", "message"), [
    (["register", "--ds", "2026-03-01", "--model-name", "../x"], "unrecognized arguments: --model-name ../x"),
    (["rollback", "--model-name", "other"], "unrecognized arguments: --model-name other"),
    (["ingest", "--dataset", "../x", "--ds", "2026-03-01"], "dataset name '../x' is not a valid name"),
    (["ingest", "--dataset", "nosuch", "--ds", "2026-03-01"], "no dataset 'nosuch'"),
    (["preprocess", "--ds", "2026-03-01", "--pca-k", "7"], "option 'pca_k': 7 is greater than the maximum of 6"),
    (["evaluate", "--ds", "2026-03-01", "--min-r2", "0.5"], "option 'min_r2' does not apply to binary dataset 'transactions'"),
    (["evaluate", "--dataset", "diabetes", "--ds", "2026-03-01", "--candidates", "xgboost"],
     "option 'candidates': 'xgboost' is not one of"),
    (["train-mxnet", "--ds", "2026-03-01", "--candidate", "../x"], "candidate '../x' is not a valid name"),
    (["train-singa", "--ds", "2026-03-01", "--candidate", "a/b"], "candidate 'a/b' is not a valid name"),
    (["ingest", "--ds", "20260301"], "partition date '20260301' is not an ISO date YYYY-MM-DD"),
    (["validate", "--ds", "2026-02-30"], "partition date '2026-02-30' is not an ISO date"),
])
def test_a_name_that_would_escape_its_folder_is_refused_naming_it(args, message, data_root):
    out = cli(*args, data_root=data_root)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert list(data_root.iterdir()) == []  # nothing was written


def test_run_ids_become_safe_distinct_folder_names(data_root):
    ids = ["manual__2026-03-01T00:00:00+00:00", "manual__2026-03-01T00_00_00_00_00", "../../etc", "scheduled__x"]
    keys = [run_key(i) for i in ids]
    assert len(set(keys)) == len(ids) and all("/" not in k and not k.startswith(".") for k in keys)
    assert Layout(data_root, "mine", "2026-03-01", "../../etc").run_dir.parent == data_root / "mine" / "runs" / "ds=2026-03-01"
    assert check_ds("2026-03-01") == "2026-03-01"


def test_a_run_id_chosen_as_another_runs_folder_name_gets_a_folder_of_its_own(data_root):
    """A run id equal to another run's slug-plus-hash must not map to that run's folder and read its intermediates."""
    first = "manual__2026-03-01T00:00:00+00:00"
    lookalike = run_key(first)  # what someone triggering through the API may choose as a run id
    assert run_key(lookalike) != run_key(first)
    assert Layout(data_root, "breast_cancer", "2026-03-01", lookalike).run_dir != Layout(
        data_root, "breast_cancer", "2026-03-01", first).run_dir
    out = cli("ingest", "--dataset", "breast_cancer", "--ds", "2026-03-01", "--run-id", first, data_root=data_root)
    assert out.returncode == 0, out.stderr
    out = cli("validate", "--dataset", "breast_cancer", "--ds", "2026-03-01", "--run-id", lookalike, data_root=data_root)
    assert out.returncode == 2 and f"run {lookalike!r} of breast_cancer 2026-03-01 has no ingested input" in out.stderr, out.stderr
