"""kiln_training end to end at 1 M rows (`airflow dags test`, embedded SQLite, Spark local[*]).

Prints each task's duration (from the metadata DB) and the ratio of the run's wall time to the sum
of the tasks' own durations: how much of the run is Airflow overhead and start-up between tasks
(`dags test` runs tasks one after another, so the ideal is 1.0). Cache warming is off here
(bench_ignite.py measures it against a node of its own).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--ds", default="2026-01-15")
    args = parser.parse_args()
    data_root = Path(tempfile.mkdtemp(prefix="kiln-bench-pipeline-"))
    env = {**os.environ, "KILN_DATA_ROOT": str(data_root)}
    conf = {"rows": args.rows, "warm_cache": False}
    started = time.perf_counter()
    out = subprocess.run(["airflow", "dags", "test", "kiln_training", args.ds, "-c", json.dumps(conf)], env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"the run failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    db = sqlite3.connect(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db")
    run_id = db.execute("SELECT run_id FROM dag_run WHERE dag_id='kiln_training' ORDER BY id DESC LIMIT 1").fetchone()[0]
    tasks = db.execute("SELECT task_id, duration, state FROM task_instance WHERE dag_id='kiln_training' AND run_id=? "
                       "ORDER BY start_date", (run_id,)).fetchall()
    total = sum(d or 0.0 for _, d, _ in tasks)
    print(f"\nkiln_training, {args.rows:,} rows, partition {args.ds}, 2 cores (run {run_id})")
    print(f"{'task':<22}{'seconds':>9}  state")
    for task, duration, state in tasks:
        print(f"{task:<22}{(duration or 0):>9.1f}  {state}")
    print(f"{'sum of tasks':<22}{total:>9.1f}")
    print(f"{'run wall time':<22}{wall:>9.1f}")
    print(f"wall / sum of task time: {wall / total:.2f}")
    (evaluation_file,) = (data_root / "transactions" / "runs" / f"ds={args.ds}").glob("run=*/evaluation.json")
    evaluation = json.loads(evaluation_file.read_text())
    print("\n" + "\n".join(f"{c['candidate']:<14} auc {c['metrics']['auc']:.4f}" for c in evaluation["candidates"]))


if __name__ == "__main__":
    main()
