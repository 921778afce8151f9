#!/usr/bin/env bash
# Start or stop Kiln's local Ignite node(s): `ignite.sh up|down|status`. `up` starts the nodes not running
# (a killed node rejoins: in-memory caches rebalance onto it from their backups); `down` stops all.
# Jars come from Maven Central via ignite/pom.xml (resolved once into .ignite/libs); the node starts
# from ignite/kiln-ignite.xml with the --add-opens flags Ignite's own ignite.sh passes on Java 17.
# Env: KILN_IGNITE_DIR (state folder, default .ignite), KILN_IGNITE_PERSISTENCE=true for native persistence,
#      KILN_IGNITE_NODES (how many nodes form the cluster, default 1; node i takes each port + i),
#      KILN_IGNITE_BACKUPS (backup copies of each cache, default 1 with two or more nodes, else 0), KILN_IGNITE_ACTIVATE=false to leave a
#      persistent cluster inactive as a fresh one starts in Kubernetes (ignite/kiln-ignite-admin.sh activates),
#      KILN_IGNITE_PORT / _DISCOVERY_PORT / _COMMUNICATION_PORT (10800 / 47500 / 47100),
#      KILN_IGNITE_AUTHENTICATION=true: thin clients log in (needs persistence); this script logs in as
#      KILN_IGNITE_USERNAME / KILN_IGNITE_PASSWORD (default ignite / ignite, Ignite's first user).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="${KILN_IGNITE_DIR:-$root/.ignite}"
libs="$root/.ignite/libs"
run="$state/run"
nodes="${KILN_IGNITE_NODES:-1}"
base_port="${KILN_IGNITE_PORT:-10800}"
base_discovery="${KILN_IGNITE_DISCOVERY_PORT:-47500}"
base_communication="${KILN_IGNITE_COMMUNICATION_PORT:-47100}"
# Two or more nodes keep one backup of every cache unless told otherwise: losing a node loses no entry.
backups="${KILN_IGNITE_BACKUPS:-$([ "$nodes" -gt 1 ] && echo 1 || echo 0)}"
persistence="${KILN_IGNITE_PERSISTENCE:-false}"
authentication="${KILN_IGNITE_AUTHENTICATION:-false}"
if [ "$authentication" = "true" ] && [ "$persistence" != "true" ]; then
  echo "ignite: KILN_IGNITE_AUTHENTICATION=true needs KILN_IGNITE_PERSISTENCE=true (Ignite keeps its users there)" >&2; exit 2
fi
# The script's own login (read by its Python from the environment, never on a command line).
export KILN_IGNITE_ADMIN_USER="${KILN_IGNITE_USERNAME:-ignite}" KILN_IGNITE_ADMIN_PASSWORD="${KILN_IGNITE_PASSWORD:-ignite}"
python="$root/.venv/bin/python"
# A connected client, logging in when the node asks for it.
client_py="import os; from pyignite import Client
def client(timeout):
    login = {'username': os.environ['KILN_IGNITE_ADMIN_USER'], 'password': os.environ['KILN_IGNITE_ADMIN_PASSWORD']} if '$authentication' == 'true' else {}
    return Client(timeout=timeout, **login)"
# shellcheck source=scripts/jvm_service.sh
. "$root/scripts/jvm_service.sh"

# Node i (0-based) listens on the base ports + i; node 0 keeps the single-node file names.
suffix() { [ "$1" -eq 0 ] && echo "" || echo "-$1"; }
pidfile() { echo "$run/ignite$(suffix "$1").pid"; }
port_of() { echo $(( base_port + $1 )); }
running() { [ -f "$(pidfile "$1")" ] && alive_pid "$(cat "$(pidfile "$1")")"; }
answers() {  # a real request answered, not only an open port (the port opens before the node serves)
  port_open "$1" && "$python" -c "$client_py
c = client(5); c.connect('127.0.0.1', $1); c.get_cluster().get_state()" 2>/dev/null
}

resolve() {
  if [ ! -f "$libs/ignite-control-utility-2.17.0.jar" ]; then
    resolve_jars ignite "$root/ignite/pom.xml" "$libs"
  fi
}

start_node() {
  local i=$1 port work
  port=$(port_of "$i"); work="$state/work$(suffix "$i")"
  if port_open "$port"; then echo "ignite: port $port is taken by another process" >&2; exit 1; fi
  mkdir -p "$work"
  IGNITE_HOME="$state" nohup java @"$root/ignite/jvm.options" \
    -Dkiln.ignite.work="$work" \
    -Dkiln.ignite.persistence="$persistence" \
    -Dkiln.ignite.authentication="$authentication" \
    -Dkiln.ignite.backups="$backups" \
    -Dkiln.ignite.port="$port" \
    -Dkiln.ignite.discovery.port="$(( base_discovery + i ))" \
    -Dkiln.ignite.discovery="127.0.0.1:$base_discovery..$(( base_discovery + 9 ))" \
    -Dkiln.ignite.communication.port="$(( base_communication + i ))" \
    -cp "$libs/*" org.apache.ignite.startup.cmdline.CommandLineStartup "$root/ignite/kiln-ignite.xml" \
    > "$run/ignite$(suffix "$i").log" 2>&1 < /dev/null &
  echo $! > "$(pidfile "$i")"
  for _ in $(seq 1 120); do
    if answers "$port"; then echo "ignite: node $i up on 127.0.0.1:$port (pid $!, log $run/ignite$(suffix "$i").log)"; return 0; fi
    if ! running "$i"; then echo "ignite: node $i exited; last log lines:" >&2; tail -20 "$run/ignite$(suffix "$i").log" >&2; exit 1; fi
    sleep 0.5
  done
  echo "ignite: node $i did not answer on port $port within 60 s" >&2; down; exit 1
}

up() {
  resolve
  mkdir -p "$run"
  local started=0
  for i in $(seq 0 $(( nodes - 1 ))); do
    if running "$i"; then echo "ignite: node $i already running (pid $(cat "$(pidfile "$i")"))"; continue; fi
    start_node "$i"; started=$(( started + 1 ))
  done
  # A persistent cluster starts inactive; activating it once every node is in sets the baseline to all of them.
  if [ "$started" -gt 0 ] && [ "$persistence" = "true" ] && [ "${KILN_IGNITE_ACTIVATE:-true}" = "true" ]; then
    "$python" -c "$client_py
c = client(30); c.connect('127.0.0.1', $base_port); c.get_cluster().set_state(1); c.get_cache_names()"
  fi
  echo "ignite: $nodes node(s) on 127.0.0.1:$base_port..$(port_of $(( nodes - 1 ))), $backups backup(s) per cache"
}

down() {
  local any=0
  for file in "$run"/ignite.pid "$run"/ignite-*.pid; do
    [ -f "$file" ] || continue
    pid=$(cat "$file")
    if alive_pid "$pid"; then
      kill "$pid"
      for _ in $(seq 1 40); do alive_pid "$pid" || break; sleep 0.25; done
      alive_pid "$pid" && kill -9 "$pid"
      echo "ignite: stopped (pid $pid)"; any=1
    fi
    rm -f "$file"
  done
  [ "$any" -eq 1 ] || echo "ignite: not running"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status)
    rc=0
    for i in $(seq 0 $(( nodes - 1 ))); do
      if running "$i"; then echo "ignite: node $i running (pid $(cat "$(pidfile "$i")"))"; else echo "ignite: node $i not running"; rc=1; fi
    done
    exit "$rc" ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
