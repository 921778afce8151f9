#!/usr/bin/env bash
# Start or stop Kiln's local Apache Kafka broker: `kafka.sh up|down|status`. One KRaft node (broker and
# controller in one process, no ZooKeeper) from Maven Central jars (kafka/pom.xml, resolved once into
# .kafka/libs). Its log directory survives down/up, so a restarted broker keeps its topics and offsets.
# Env: KILN_KAFKA_DIR (state folder, default .kafka), KILN_KAFKA_PORT (9092), KILN_KAFKA_CONTROLLER_PORT
#      (the port + 1), KILN_KAFKA_HEAP (512m).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="${KILN_KAFKA_DIR:-$root/.kafka}"
libs="$root/.kafka/libs"
run="$state/run"
port="${KILN_KAFKA_PORT:-9092}"
controller_port="${KILN_KAFKA_CONTROLLER_PORT:-$(( port + 1 ))}"
pidfile="$run/kafka.pid"
log="$run/kafka.log"

# shellcheck source=scripts/jvm_service.sh
. "$root/scripts/jvm_service.sh"
running() { [ -f "$pidfile" ] && alive_pid "$(cat "$pidfile")"; }
kafka_java() { java "-Xmx${KILN_KAFKA_HEAP:-512m}" "-Dlog4j2.configurationFile=$root/kafka/log4j2.yaml" -cp "$libs/*" "$@"; }

resolve() {
  if ! ls "$libs"/kafka_2.13-*.jar > /dev/null 2>&1; then
    resolve_jars kafka "$root/kafka/pom.xml" "$libs"
  fi
}

configure() {
  mkdir -p "$run" "$state/data"
  cat > "$state/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$state/data
num.partitions=4
auto.create.topics.enable=true
# every topic's messages carry the time the broker received them (a producer's clock cannot set it): Kiln checks
# event times against it, also on an events topic a producer created by writing first (docs/streaming.md)
log.message.timestamp.type=LogAppendTime
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
  if [ ! -f "$state/data/meta.properties" ]; then  # format the log directory once; later starts keep the data
    kafka_java kafka.tools.StorageTool format -t "$(kafka_java kafka.tools.StorageTool random-uuid)" \
      -c "$state/server.properties" > "$run/format.log" 2>&1 || { cat "$run/format.log" >&2; exit 1; }
  fi
}

up() {
  resolve
  if running; then echo "kafka: already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return 0; fi
  if port_open "$port"; then echo "kafka: port $port is taken by another process" >&2; exit 1; fi
  configure
  # exec: the pid file holds the JVM's pid, not a subshell's
  (exec java "-Xmx${KILN_KAFKA_HEAP:-512m}" "-Dlog4j2.configurationFile=$root/kafka/log4j2.yaml" -cp "$libs/*" \
    kafka.Kafka "$state/server.properties" > "$log" 2>&1 < /dev/null) &
  echo $! > "$pidfile"
  for _ in $(seq 1 120); do
    if grep -q "Kafka Server started" "$log" && port_open "$port"; then
      echo "kafka: broker up on 127.0.0.1:$port (pid $(cat "$pidfile"), log $log)"; return 0
    fi
    if ! running; then echo "kafka: broker exited; last log lines:" >&2; tail -20 "$log" >&2; exit 1; fi
    sleep 0.5
  done
  echo "kafka: broker did not start within 60 s; see $log" >&2; down; exit 1
}

down() {
  if running; then
    pid=$(cat "$pidfile"); kill "$pid"
    for _ in $(seq 1 60); do alive_pid "$pid" || break; sleep 0.25; done
    alive_pid "$pid" && kill -9 "$pid"
    echo "kafka: stopped (pid $pid)"
  else
    echo "kafka: not running"
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if running; then echo "kafka: running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; else echo "kafka: not running"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
