"""Run DAGs for real with `airflow dags test` against an isolated data root."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def dags_test(dag_id: str, ds: str, data_root: Path, conf: dict | None = None, timeout: int = 600,
              datasets: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "KILN_DATA_ROOT": str(data_root), **({"KILN_DATASETS_DIR": str(datasets)} if datasets else {}),
           **(env or {})}
    cmd = ["airflow", "dags", "test", dag_id, ds]
    if conf:
        cmd += ["-c", json.dumps(conf)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"{dag_id}-{ds}.log").write_text(out.stdout + out.stderr)
    return out


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
