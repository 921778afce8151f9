#!/usr/bin/env bash
# Start or stop a long-running Spark Connect server: `spark_connect.sh up|down|status`.
# One JVM (the pyspark wheel's spark-submit and jars, no download) that every Spark stage attaches to as a
# thin client, instead of starting a JVM of its own. Point the `spark_default` connection at it
# (sc://127.0.0.1:15002) and the DAGs' Spark stages run over Connect; spark:// or local URLs keep spark-submit.
# Its own Spark master is KILN_SPARK_CONNECT_MASTER: local[*] by default, or a standalone cluster
# (spark://127.0.0.1:7077 from `make spark-up`).
# `ensure URL` starts it only when URL (a connection's) names a Connect server on this machine that is not up.
# Env: KILN_SPARK_CONNECT_DIR (state folder, default .spark-connect), KILN_SPARK_CONNECT_PORT (15002),
#      KILN_SPARK_CONNECT_HOST (bind address, 127.0.0.1), KILN_SPARK_CONNECT_UI_PORT (4045),
#      KILN_SPARK_CONNECT_MASTER (local[*]), KILN_SPARK_CONNECT_MEMORY (driver memory, 2g).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="${KILN_SPARK_CONNECT_DIR:-$root/.spark-connect}"
port="${KILN_SPARK_CONNECT_PORT:-15002}"
host="${KILN_SPARK_CONNECT_HOST:-127.0.0.1}"
ui_port="${KILN_SPARK_CONNECT_UI_PORT:-4045}"
pidfile="$state/connect.pid"
log="$state/connect.log"
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$root/.venv/bin/python}"
spark_submit="${SPARK_SUBMIT:-$root/.venv/bin/spark-submit}"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Alive means running, not a zombie: a killed server's parent (init here) may not reap it at once.
live_in() { ps -eo "$1=,stat=" | awk -v id="$2" '$1 == id && $2 !~ /^Z/ {found = 1} END {exit !found}'; }
alive() { [ -f "$pidfile" ] && live_in pid "$(cat "$pidfile")"; }

up() {
  mkdir -p "$state"
  if alive; then echo "spark-connect: already running at sc://127.0.0.1:$port (pid $(cat "$pidfile"))"; return 0; fi
  if port_open "$port"; then echo "spark-connect: port $port is taken by another process" >&2; exit 1; fi
  # Settings every Kiln stage wants, fixed once for the server (sessions may still set their own SQL confs).
  # Data sits on a shared filesystem, so waiting for data-local slots only delays tasks (locality.wait 0).
  setsid "$spark_submit" --class org.apache.spark.sql.connect.service.SparkConnectServer --name kiln-spark-connect \
    --master "${KILN_SPARK_CONNECT_MASTER:-local[*]}" --driver-memory "${KILN_SPARK_CONNECT_MEMORY:-2g}" \
    --conf "spark.connect.grpc.binding.address=$host" --conf "spark.connect.grpc.binding.port=$port" \
    --conf "spark.ui.port=$ui_port" --conf spark.ui.showConsoleProgress=false --conf spark.log.level=WARN \
    --conf spark.sql.session.timeZone=UTC --conf spark.sql.shuffle.partitions=8 --conf spark.locality.wait=0 \
    > "$log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
  for _ in $(seq 1 240); do
    if port_open "$port"; then echo "spark-connect: up at sc://127.0.0.1:$port (UI http://127.0.0.1:$ui_port, log $log)"; return 0; fi
    if ! alive; then echo "spark-connect: the server exited; last log lines:" >&2; tail -20 "$log" >&2; rm -f "$pidfile"; exit 1; fi
    sleep 0.5
  done
  echo "spark-connect: not listening on $port within 120 s (log $log)" >&2; down; exit 1
}

down() {
  if [ -f "$pidfile" ] && live_in pgid "$(cat "$pidfile")"; then
    pid=$(cat "$pidfile")
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do live_in pgid "$pid" || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "spark-connect: stopped"
  else
    echo "spark-connect: not running"
  fi
  rm -f "$pidfile"
}

# `ensure URL`: the URL a Spark connection holds; a Connect server on this machine that is not listening yet is
# started on its port. Anything else (spark://, local[*], a remote host) is left to whoever runs it.
ensure() {
  local url="${1//%5B/[}"
  if [[ "$url" =~ ^sc://(127\.0\.0\.1|localhost)(:([0-9]+))?/?(;.*)?$ ]]; then
    port="${BASH_REMATCH[3]:-15002}"
    port_open "$port" || up
  fi
}

case "${1:-}" in
  up) up ;;
  ensure) ensure "${2:?usage: $0 ensure URL}" ;;
  down) down ;;
  status) if alive; then echo "spark-connect: running at sc://127.0.0.1:$port (pid $(cat "$pidfile"))"; else echo "spark-connect: not running"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status|ensure URL" >&2; exit 2 ;;
esac
