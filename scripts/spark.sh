#!/usr/bin/env bash
# Start or stop a Spark standalone cluster on loopback: `spark.sh up|down|status`.
# A master and N workers from the pyspark wheel's own launcher (spark-class) and jars; point the
# `spark_default` connection at it (spark://127.0.0.1:7077) and the DAGs' Spark stages run there.
# Each daemon runs in its own process group, so `down` also stops the executors a worker launched.
# `up` starts only what is not running (a killed worker comes back; the others are left alone).
# Env: KILN_SPARK_DIR (state folder, default .spark), KILN_SPARK_WORKERS (2), KILN_SPARK_WORKER_CORES (1),
#      KILN_SPARK_WORKER_MEMORY (2g), KILN_SPARK_MASTER_PORT (7077), KILN_SPARK_MASTER_UI_PORT (8090; worker i's
#      UI is that + 1 + i), KILN_SPARK_WORKER_TIMEOUT (seconds of silence before the master drops a worker, 15).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="${KILN_SPARK_DIR:-$root/.spark}"
run="$state/run"
workers="${KILN_SPARK_WORKERS:-2}"
master_port="${KILN_SPARK_MASTER_PORT:-7077}"
ui_port="${KILN_SPARK_MASTER_UI_PORT:-8090}"
master_url="spark://127.0.0.1:$master_port"
spark_class="$root/.venv/bin/spark-class"
export SPARK_LOCAL_IP=127.0.0.1
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$root/.venv/bin/python}"
export SPARK_MASTER_OPTS="-Dspark.worker.timeout=${KILN_SPARK_WORKER_TIMEOUT:-15} ${SPARK_MASTER_OPTS:-}"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Alive means running, not a zombie: a killed daemon's parent (init here) may not reap it at once.
live_in() { ps -eo "$1=,stat=" | awk -v id="$2" '$1 == id && $2 !~ /^Z/ {found = 1} END {exit !found}'; }
alive() { [ -f "$run/$1.pid" ] && live_in pid "$(cat "$run/$1.pid")"; }
daemons() { echo master; for i in $(seq 1 "$workers"); do echo "worker-$i"; done; }

start() {  # name, then the daemon's class and arguments
  local name=$1; shift
  # setsid: the daemon leads its own process group, which the executors it launches join.
  setsid "$spark_class" "$@" > "$run/$name.log" 2>&1 < /dev/null &
  echo $! > "$run/$name.pid"
}

wait_for() {  # name, what answers when it is up (a command)
  local name=$1; shift
  for _ in $(seq 1 120); do
    if "$@"; then return 0; fi
    if ! alive "$name"; then echo "spark: $name exited; last log lines:" >&2; tail -20 "$run/$name.log" >&2; down; exit 1; fi
    sleep 0.5
  done
  echo "spark: $name did not come up within 60 s (log $run/$name.log)" >&2; down; exit 1
}

alive_workers() {  # workers the master counts as ALIVE, from its own JSON API
  "$root/.venv/bin/python" - "$ui_port" <<'EOF'
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/json/", timeout=5) as r:
    print(sum(w["state"] == "ALIVE" for w in json.load(r)["workers"]))
EOF
}

workers_registered() { [ "$(alive_workers 2>/dev/null)" -ge "$workers" ] 2>/dev/null; }
group_alive() { [ -f "$run/$1.pid" ] && live_in pgid "$(cat "$run/$1.pid")"; }

up() {
  mkdir -p "$run" "$state/work"
  if ! alive master; then
    if port_open "$master_port"; then echo "spark: port $master_port is taken by another process" >&2; exit 1; fi
    start master org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "$master_port" --webui-port "$ui_port"
    wait_for master port_open "$ui_port"
  fi
  for i in $(seq 1 "$workers"); do
    alive "worker-$i" && continue
    start "worker-$i" org.apache.spark.deploy.worker.Worker --host 127.0.0.1 --webui-port "$((ui_port + i))" \
      --cores "${KILN_SPARK_WORKER_CORES:-1}" --memory "${KILN_SPARK_WORKER_MEMORY:-2g}" \
      --work-dir "$state/work/worker-$i" "$master_url"
  done
  # Up means the master counts every worker as registered, not that a port is open.
  wait_for master workers_registered
  echo "spark: up at $master_url with $workers workers (UI http://127.0.0.1:$ui_port, logs $run)"
}

down() {
  local stopped=()
  for name in $(daemons); do
    # The group, not only its leader: a worker killed alone leaves its executors running in it.
    group_alive "$name" || { rm -f "$run/$name.pid"; continue; }
    pid=$(cat "$run/$name.pid")
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do group_alive "$name" || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$run/$name.pid"
    stopped+=("$name")
  done
  echo "spark: stopped ${stopped[*]:-nothing}"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status)
    for name in $(daemons); do
      if alive "$name"; then echo "$name: running (pid $(cat "$run/$name.pid"))"; else echo "$name: not running"; fi
    done
    alive master ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
