#!/usr/bin/env bash
# Run kiln_training end to end for one partition on the embedded defaults, then print the headline.
# With an Ignite node on 127.0.0.1:10800 (make ignite-up) it also warms the online cache and asks the
# prediction service for one entity.
set -euo pipefail
ds=${1:?usage: demo.sh YYYY-MM-DD}
cd "$(dirname "$0")/.."
log="$AIRFLOW_HOME/demo-$ds.log"
if (exec 3<>/dev/tcp/127.0.0.1/10800) 2>/dev/null; then ignite=1; conf='{}'; else ignite=0; conf='{"warm_cache": false}'; fi
echo "== kiln_training for partition $ds (SQLite metadata DB, Spark $AIRFLOW_CONN_SPARK_DEFAULT, data in $KILN_DATA_ROOT)"
# The Spark stages attach to a Spark Connect server: started here if it is this machine's and not running, and
# left running for the next runs (make spark-connect-down stops it).
scripts/spark_connect.sh ensure "$AIRFLOW_CONN_SPARK_DEFAULT"
[ "$ignite" = 1 ] || echo "   no Ignite node on 127.0.0.1:10800: cache warming is off for this run (make ignite-up to include it)"
echo "   running 'airflow dags test kiln_training $ds' (about a minute; log: $log)"
if ! airflow dags test kiln_training "$ds" -c "$conf" > "$log" 2>&1; then
  grep -E "ERROR|Error|rejected" "$log" | tail -15
  echo "demo: kiln_training failed for $ds (full log: $log)"
  exit 1
fi
python -m ml_tasks --log-level WARNING report --ds "$ds" | sed '$d'

if [ "$ignite" = 1 ]; then
  entity=$(python -c "
import pandas as pd, sys
from ml_tasks.layout import registry_root
from ml_tasks.registry import champion_features
print(pd.read_parquet(champion_features(registry_root(sys.argv[1]), 'transactions')['source'], columns=['entity_id']).entity_id.iloc[0])
" "$KILN_DATA_ROOT" 2>/dev/null || true)
  if [ -z "$entity" ]; then
    echo "online cache   : not warmed (there is no champion; see the report above)"
    exit 0
  fi
  port=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  python -m ml_tasks --log-level WARNING serve --port "$port" > "$AIRFLOW_HOME/demo-serve.log" 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  for _ in $(seq 1 60); do curl -fs "http://127.0.0.1:$port/healthz" > /dev/null 2>&1 && break; sleep 0.5; done
  echo "online prediction: GET /predict/$entity"
  curl -fs "http://127.0.0.1:$port/predict/$entity"; echo
fi
