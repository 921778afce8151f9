#!/usr/bin/env bash
# Run kiln_training end to end for one partition on the embedded defaults, then print the headline.
set -euo pipefail
ds=${1:?usage: demo.sh YYYY-MM-DD}
cd "$(dirname "$0")/.."
echo "== kiln_training for partition $ds (SQLite metadata DB, Spark local[*], data in $KILN_DATA_ROOT)"
airflow dags test kiln_training "$ds" > "$AIRFLOW_HOME/demo-$ds.log" 2>&1 || { tail -40 "$AIRFLOW_HOME/demo-$ds.log"; exit 1; }
grep -E "Marking run|DagRun Finished|state=failed" "$AIRFLOW_HOME/demo-$ds.log" | tail -3 || true
python -m ml_tasks report --ds "$ds" >/dev/null 2>&1 || { tail -40 "$AIRFLOW_HOME/demo-$ds.log"; echo "demo: the run did not finish (log: $AIRFLOW_HOME/demo-$ds.log)"; exit 1; }
python -m ml_tasks --log-level WARNING report --ds "$ds" | sed '$d'
echo "full log: $AIRFLOW_HOME/demo-$ds.log"
