#!/usr/bin/env bash
# Run kiln_training end to end for one partition on the embedded defaults, then print the headline.
# With an Ignite node on 127.0.0.1:10800 (make ignite-up) it also warms the online cache, asks the
# prediction service for one entity, then streams new events for it through Kafka (a broker on
# $KILN_KAFKA_BOOTSTRAP, started here when it is this machine's and not running) and Spark Structured
# Streaming into Ignite, and asks again: the prediction changed with no re-warm.
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
# The run's HTML report (written by its last task, report): the table below, plots, search, drift, registry history.
run_id=$(python -c "
import json, sys
from ml_tasks.core.layout import Layout
reports = sorted(Layout.at(sys.argv[1], 'transactions', sys.argv[2]).result_files_of_partition('report'),
                 key=lambda p: p.stat().st_mtime)
print(json.loads(reports[-1].read_text())['run_id'])
" "$KILN_DATA_ROOT" "$ds")
summary=$(python -m ml_tasks --log-level WARNING report --ds "$ds" --run-id "$run_id")
echo "$summary" | sed '$d'
echo "$summary" | tail -1 | python -c "
import json, os, sys, urllib.parse
result = json.load(sys.stdin)
print(f\"report         : {result['report']} (opens offline)\")
print(f\"in Airflow's UI: http://127.0.0.1:{os.environ.get('KILN_AIRFLOW_PORT', '8080')}/kiln/reports/kiln_training/\"
      f\"{urllib.parse.quote(result['run_id'], safe='')}\")
print('                 (make airflow-up, sign in; a run started there has it in its Report tab)')"

if [ "$ignite" = 1 ]; then
  # card_00000000: the entity the streaming segment sends events for (produce-events --entities 1)
  entity=$(python -c "
import pandas as pd, sys
from ml_tasks.core.layout import registry_root
from ml_tasks.evaluation.registry import champion_features
ids = pd.read_parquet(champion_features(registry_root(sys.argv[1]), 'transactions')['source'], columns=['entity_id']).entity_id
print('card_00000000' if (ids == 'card_00000000').any() else ids.iloc[0])
" "$KILN_DATA_ROOT" 2>/dev/null || true)
  if [ -z "$entity" ]; then
    echo "online cache   : not warmed (there is no champion; see the report above)"
    exit 0
  fi
  # The champion may predate this Ignite node (an earlier run without it, a restarted node): the cache refresh DAG
  # loads the champion's own features, as it does after an Ignite restart.
  if ! python -c "
import sys
from pyignite import Client
from ml_tasks.features.feature_cache import current_version
c = Client(timeout=10); c.connect('127.0.0.1', 10800)
sys.exit(0 if current_version(c, 'kiln_features_transactions') else 1)"; then
    echo "online cache   : not warmed for the current champion; running 'airflow dags test kiln_cache_refresh'"
    airflow dags test kiln_cache_refresh "$ds" > "$AIRFLOW_HOME/demo-refresh.log" 2>&1 \
      || { tail -5 "$AIRFLOW_HOME/demo-refresh.log"; echo "demo: the cache refresh failed (log: $AIRFLOW_HOME/demo-refresh.log)"; exit 1; }
  fi
  port=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  python -m ml_tasks --log-level WARNING serve --port "$port" > "$AIRFLOW_HOME/demo-serve.log" 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  for _ in $(seq 1 60); do curl -fs "http://127.0.0.1:$port/healthz" > /dev/null 2>&1 && break; sleep 0.5; done
  echo "online prediction: GET /predict/$entity"
  curl -fs "http://127.0.0.1:$port/predict/$entity"; echo

  # Streaming: events for the entity through Kafka and Spark Structured Streaming into Ignite; no re-warm.
  if [ "${KILN_KAFKA_BOOTSTRAP%:*}" = 127.0.0.1 ] && ! (exec 3<>"/dev/tcp/127.0.0.1/${KILN_KAFKA_BOOTSTRAP##*:}") 2>/dev/null; then
    scripts/system_deps.sh services  # Maven: the broker's jars (make ignite-up asked for it already)
    KILN_KAFKA_PORT="${KILN_KAFKA_BOOTSTRAP##*:}" scripts/kafka.sh up > /dev/null  # left running (make kafka-down stops it)
  fi
  echo "streaming      : 20 new events for $entity -> Kafka $KILN_KAFKA_BOOTSTRAP -> Spark Structured Streaming -> Ignite"
  python -m ml_tasks --log-level WARNING produce-events --rate 40 --seconds 0.5 --entities 1 --late-share 0 \
    --first-index "$(date +%s)" > "$AIRFLOW_HOME/demo-produce.log" 2>&1 || { tail -5 "$AIRFLOW_HOME/demo-produce.log"; exit 1; }
  python -m ml_tasks --log-level WARNING stream > "$AIRFLOW_HOME/demo-stream.log" 2>&1 \
    || { grep -E "ERROR|Error" "$AIRFLOW_HOME/demo-stream.log" | tail -5; echo "demo: the stream failed (log: $AIRFLOW_HOME/demo-stream.log)"; exit 1; }
  tail -1 "$AIRFLOW_HOME/demo-stream.log" | python -c "import json,sys; r=json.load(sys.stdin); print(f\"                 {r['events']} events in {r['batches']} batch(es), {r['written']} entities updated in {r['live_version']}\")"
  echo "online prediction after the stream: GET /predict/$entity"
  curl -fs "http://127.0.0.1:$port/predict/$entity"; echo
fi
