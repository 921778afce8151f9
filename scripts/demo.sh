#!/usr/bin/env bash
# Run kiln_training end to end for one partition on the embedded defaults, then print the headline.
set -euo pipefail
ds=${1:?usage: demo.sh YYYY-MM-DD}
cd "$(dirname "$0")/.."
log="$AIRFLOW_HOME/demo-$ds.log"
echo "== kiln_training for partition $ds (SQLite metadata DB, Spark local[*], data in $KILN_DATA_ROOT)"
echo "   running 'airflow dags test kiln_training $ds' (about 2-3 minutes; log: $log)"
if ! airflow dags test kiln_training "$ds" > "$log" 2>&1; then
  grep -E "ERROR|Error|rejected" "$log" | tail -15
  echo "demo: kiln_training failed for $ds (full log: $log)"
  exit 1
fi
python -m ml_tasks --log-level WARNING report --ds "$ds" | sed '$d'
