#!/usr/bin/env bash
# Start or stop Kiln's local Ignite node: `ignite.sh up|down|status`.
# Jars come from Maven Central via ignite/pom.xml (resolved once into .ignite/libs); the node starts
# from ignite/kiln-ignite.xml with the --add-opens flags Ignite's own ignite.sh passes on Java 17.
# Env: KILN_IGNITE_DIR (state folder, default .ignite), KILN_IGNITE_PERSISTENCE=true for native persistence,
#      KILN_IGNITE_BACKUPS (backup copies of each cache, default 0), KILN_IGNITE_ACTIVATE=false to leave a
#      persistent cluster inactive as a fresh one starts in Kubernetes (ignite/kiln-ignite-admin.sh activates),
#      KILN_IGNITE_PORT / _DISCOVERY_PORT / _COMMUNICATION_PORT (10800 / 47500 / 47100).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="${KILN_IGNITE_DIR:-$root/.ignite}"
libs="$root/.ignite/libs"
run="$state/run"
pidfile="$run/ignite.pid"
port="${KILN_IGNITE_PORT:-10800}"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

resolve() {
  if [ ! -f "$libs/ignite-control-utility-2.17.0.jar" ]; then
    echo "ignite: resolving jars from Maven Central into $libs"
    mvn -q -f "$root/ignite/pom.xml" dependency:copy-dependencies -DoutputDirectory="$libs"
  fi
}

up() {
  if running; then echo "ignite: already running (pid $(cat "$pidfile"))"; return 0; fi
  if port_open; then echo "ignite: port $port is taken by another process" >&2; exit 1; fi
  resolve
  mkdir -p "$run" "$state/work"
  IGNITE_HOME="$state" nohup java @"$root/ignite/jvm.options" \
    -Dkiln.ignite.work="$state/work" \
    -Dkiln.ignite.persistence="${KILN_IGNITE_PERSISTENCE:-false}" \
    -Dkiln.ignite.backups="${KILN_IGNITE_BACKUPS:-0}" \
    -Dkiln.ignite.port="$port" \
    -Dkiln.ignite.discovery.port="${KILN_IGNITE_DISCOVERY_PORT:-47500}" \
    -Dkiln.ignite.discovery="127.0.0.1:${KILN_IGNITE_DISCOVERY_PORT:-47500}..$(( ${KILN_IGNITE_DISCOVERY_PORT:-47500} + 9 ))" \
    -Dkiln.ignite.communication.port="${KILN_IGNITE_COMMUNICATION_PORT:-47100}" \
    -cp "$libs/*" org.apache.ignite.startup.cmdline.CommandLineStartup "$root/ignite/kiln-ignite.xml" \
    > "$run/ignite.log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
  for _ in $(seq 1 120); do
    # The thin-client port opens before the node serves requests: up means a real request answered
    # (a persistent node starts inactive and is activated first).
    activate=$([ "${KILN_IGNITE_PERSISTENCE:-false}" = "true" ] && [ "${KILN_IGNITE_ACTIVATE:-true}" = "true" ] \
      && echo "c.get_cluster().set_state(1); c.get_cache_names();" || true)
    if port_open && "$root/.venv/bin/python" -c "from pyignite import Client; c=Client(timeout=5); c.connect('127.0.0.1', $port); $activate c.get_cluster().get_state()" 2>/dev/null; then
      echo "ignite: up on 127.0.0.1:$port (pid $(cat "$pidfile"), log $run/ignite.log)"; return 0
    fi
    if ! running; then echo "ignite: the node exited; last log lines:" >&2; tail -20 "$run/ignite.log" >&2; exit 1; fi
    sleep 0.5
  done
  echo "ignite: port $port did not open within 60 s" >&2; down; exit 1
}

down() {
  if ! running; then rm -f "$pidfile"; echo "ignite: not running"; return 0; fi
  pid=$(cat "$pidfile")
  kill "$pid"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$pidfile"
  echo "ignite: stopped (pid $pid)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if running; then echo "ignite: running (pid $(cat "$pidfile"))"; else echo "ignite: not running"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
