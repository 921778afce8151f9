#!/usr/bin/env bash
# A running Airflow 3 for the UI, schedules and backfills: `airflow.sh up|down|status|cli ARGS...` (`postgres`:
# only the metadata PostgreSQL, its roles and databases; `down` stops it).
# PostgreSQL (Debian's package, data in the state folder) as the metadata DB, LocalExecutor, and the
# api-server, scheduler, dag-processor and triggerer as separate processes. Secrets (DB password,
# JWT secret) are generated on first start into the git-ignored state folder, never kept in code.
# The same PostgreSQL holds database kiln_source (role kiln_source) for datasets read from PostgreSQL,
# exported to Airflow as connection kiln_source (AIRFLOW_CONN_KILN_SOURCE).
# Env (defaults): KILN_AIRFLOW_STATE (.airflow/server), KILN_AIRFLOW_PORT (8080), KILN_PG_PORT (5433),
# KILN_LOG_SERVER_PORT (8793; the triggerer's is +1), KILN_AIRFLOW_PARALLELISM (4), AIRFLOW_CONN_SPARK_DEFAULT
# (sc://127.0.0.1:15002: a Spark Connect server `up` starts, and `down` stops, when it is not already running).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="${KILN_AIRFLOW_STATE:-$root/.airflow/server}"
port="${KILN_AIRFLOW_PORT:-8080}"
pg_port="${KILN_PG_PORT:-5433}"
log_port="${KILN_LOG_SERVER_PORT:-8793}"
pg_bin="$(dirname "$(readlink -f "$(command -v initdb || echo /usr/lib/postgresql/15/bin/initdb)")")"
pgdata="$state/postgres"
pgsock="$state/pg-socket"  # PostgreSQL's Unix socket folder: the postgres user's alone (0700)
run="$state/run"
components=(api-server scheduler dag-processor triggerer)
export PATH="$root/.venv/bin:$PATH"

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
# The database superuser is the OS user the server runs as, so local (socket) logins use peer auth.
pg_super() { if [ "$(id -u)" -eq 0 ]; then echo postgres; else id -un; fi; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_env() {
  mkdir -p "$state" "$run"
  [ -f "$state/secrets.env" ] || {
    umask 077
    printf 'KILN_PG_PASSWORD=%s\nAIRFLOW__API_AUTH__JWT_SECRET=%s\nAIRFLOW__API__SECRET_KEY=%s\n' \
      "$(openssl rand -hex 16)" "$(openssl rand -hex 32)" "$(openssl rand -hex 32)" > "$state/secrets.env"
  }
  grep -q '^KILN_SOURCE_PASSWORD=' "$state/secrets.env" || (umask 077; printf 'KILN_SOURCE_PASSWORD=%s\n' "$(openssl rand -hex 16)" >> "$state/secrets.env")
  # shellcheck disable=SC1091
  set -a; source "$state/secrets.env"; set +a
  export AIRFLOW_HOME="$state/home"
  export AIRFLOW__CORE__DAGS_FOLDER="$root/dags" AIRFLOW__CORE__PLUGINS_FOLDER="$root/plugins"
  export AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__EXECUTOR=LocalExecutor
  export AIRFLOW__CORE__PARALLELISM="${KILN_AIRFLOW_PARALLELISM:-4}"
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://airflow:${KILN_PG_PASSWORD}@127.0.0.1:${pg_port}/airflow"
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:${port}/execution/"
  export AIRFLOW__API__BASE_URL="http://127.0.0.1:${port}"
  export AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT="$port"
  export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$log_port"
  export AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT="$((log_port + 1))"
  # name:role pairs (KILN_AIRFLOW_USERS, e.g. "admin:admin,reviewer:user"); passwords are generated into the file below
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${KILN_AIRFLOW_USERS:-admin:admin}"
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$state/admin-password.json"
  export AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL=10
  export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=10
  # Spark stages attach to a Spark Connect server (started by `up` when it is this machine's and not running);
  # a spark:// or local[*] URL makes them spark-submit instead.
  export AIRFLOW_CONN_SPARK_DEFAULT="${AIRFLOW_CONN_SPARK_DEFAULT:-sc://127.0.0.1:15002}"
  export KILN_SPARK_CONNECT_DIR="$state/spark-connect"
  export AIRFLOW_CONN_IGNITE_DEFAULT="${AIRFLOW_CONN_IGNITE_DEFAULT:-ignite://127.0.0.1:10800}"
  kafka_conn='{"conn_type": "kafka", "extra": {"bootstrap.servers": "'"${KILN_KAFKA_BOOTSTRAP:-127.0.0.1:9092}"'", "group.id": "kiln"}}'
  export AIRFLOW_CONN_KAFKA_DEFAULT="${AIRFLOW_CONN_KAFKA_DEFAULT:-$kafka_conn}"
  export KILN_DATA_ROOT="${KILN_DATA_ROOT:-$root/data}"
  # A PostgreSQL database for datasets' own tables (source kind postgres), read through this connection.
  export AIRFLOW_CONN_KILN_SOURCE="${AIRFLOW_CONN_KILN_SOURCE:-postgres://kiln_source:${KILN_SOURCE_PASSWORD}@127.0.0.1:${pg_port}/kiln_source}"
  export PYSPARK_PYTHON="$root/.venv/bin/python" SPARK_LOCAL_IP=127.0.0.1
  mkdir -p "$AIRFLOW_HOME"
}

postgres_up() {
  mkdir -p "$pgsock"
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    mkdir -p "$pgdata"
    [ "$(id -u)" -eq 0 ] && chown -R postgres "$pgdata"
    # No trust anywhere: the socket takes only its own OS user (peer), TCP needs the generated password.
    as_pg "$pg_bin/initdb" -D "$pgdata" -U "$(pg_super)" --auth-local=peer --auth-host=scram-sha-256 > "$run/initdb.log"
  fi
  [ "$(id -u)" -eq 0 ] && chown -R postgres "$pgdata" "$pgsock" 2>/dev/null || true
  chmod 700 "$pgsock"
  if ! as_pg "$pg_bin/pg_ctl" -D "$pgdata" status > /dev/null 2>&1; then
    as_pg "$pg_bin/pg_ctl" -D "$pgdata" -l "$pgsock/postgres.log" -w -o "-p $pg_port -k $pgsock -c listen_addresses=127.0.0.1" start > /dev/null
  fi
  psql_super() { as_pg "$pg_bin/psql" -h "$pgsock" -p "$pg_port" -U "$(pg_super)" -d postgres "$@"; }
  # The password goes to psql on stdin (printf is a builtin: no process gets it in its argv, which any local user
  # can read in /proc/<pid>/cmdline or ps).
  create_role() {
    printf "CREATE ROLE %s LOGIN PASSWORD '%s';\n" "$1" "${2//\'/\'\'}" | psql_super -q -v ON_ERROR_STOP=1 > /dev/null
  }
  psql_super -tAc "SELECT 1 FROM pg_roles WHERE rolname='airflow'" | grep -q 1 || create_role airflow "$KILN_PG_PASSWORD"
  psql_super -tAc "SELECT 1 FROM pg_database WHERE datname='airflow'" | grep -q 1 || \
    psql_super -qc "CREATE DATABASE airflow OWNER airflow"
  psql_super -tAc "SELECT 1 FROM pg_roles WHERE rolname='kiln_source'" | grep -q 1 || create_role kiln_source "$KILN_SOURCE_PASSWORD"
  psql_super -tAc "SELECT 1 FROM pg_database WHERE datname='kiln_source'" | grep -q 1 || \
    psql_super -qc "CREATE DATABASE kiln_source OWNER kiln_source"
}

up() {
  write_env
  for p in "$port" "$log_port" "$((log_port + 1))"; do
    if port_open "$p" && ! [ -f "$run/api-server.pid" ]; then echo "airflow: port $p is already in use" >&2; exit 1; fi
  done
  postgres_up
  "$root/scripts/spark_connect.sh" ensure "$AIRFLOW_CONN_SPARK_DEFAULT"
  airflow db migrate > "$run/migrate.log" 2>&1 || { tail -20 "$run/migrate.log" >&2; exit 1; }
  for c in "${components[@]}"; do
    if [ -f "$run/$c.pid" ] && kill -0 "$(cat "$run/$c.pid")" 2>/dev/null; then continue; fi
    setsid nohup airflow "$c" > "$run/$c.log" 2>&1 < /dev/null &
    echo $! > "$run/$c.pid"
  done
  for _ in $(seq 1 120); do
    if curl -fs "http://127.0.0.1:$port/api/v2/monitor/health" > /dev/null 2>&1; then
      chmod 600 "$state/admin-password.json" 2>/dev/null || true
      echo "airflow: up at http://127.0.0.1:$port  (log in as admin; the password is in $state/admin-password.json)"
      echo "airflow: metadata DB PostgreSQL on 127.0.0.1:$pg_port, logs in $run/"
      echo "airflow: CLI against this instance: scripts/airflow.sh cli dags list"
      return 0
    fi
    for c in "${components[@]}"; do
      kill -0 "$(cat "$run/$c.pid")" 2>/dev/null || { echo "airflow: $c exited; last lines:" >&2; tail -20 "$run/$c.log" >&2; down; exit 1; }
    done
    sleep 1
  done
  echo "airflow: api-server not healthy after 120 s" >&2; down; exit 1
}

down() {
  write_env
  for c in "${components[@]}"; do
    [ -f "$run/$c.pid" ] || continue
    pid=$(cat "$run/$c.pid")
    kill -INT -- "-$pid" 2>/dev/null || true  # SIGINT to the whole group: children exit with the parent
  done
  for c in "${components[@]}"; do
    [ -f "$run/$c.pid" ] || continue
    pid=$(cat "$run/$c.pid")
    for _ in $(seq 1 40); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$run/$c.pid"
  done
  if [ -f "$pgdata/PG_VERSION" ]; then as_pg "$pg_bin/pg_ctl" -D "$pgdata" -m fast -w stop > /dev/null 2>&1 || true; fi
  "$root/scripts/spark_connect.sh" down > /dev/null  # only the server `up` started (its pid file is in $state)
  echo "airflow: stopped"
}

case "${1:-}" in
  up) up ;;
  postgres) write_env; postgres_up; echo "airflow: metadata DB PostgreSQL on 127.0.0.1:$pg_port (roles airflow, kiln_source)" ;;
  down) down ;;
  status) write_env; for c in "${components[@]}"; do
            if [ -f "$run/$c.pid" ] && kill -0 "$(cat "$run/$c.pid")" 2>/dev/null; then echo "$c: running"; else echo "$c: stopped"; fi; done ;;
  cli) shift; write_env; exec airflow "$@" ;;
  # Names of secrets are left out, and any value that embeds one (the DB URL holds the password) is masked.
  env) write_env; env | grep -E '^(AIRFLOW|KILN|PYSPARK|SPARK_LOCAL)' | grep -v -E 'PASSWORD|SECRET' | sed -e "s/$KILN_PG_PASSWORD/***/g" -e "s/$KILN_SOURCE_PASSWORD/***/g" ;;
  *) echo "usage: $0 up|down|status|postgres|cli ARGS...|env" >&2; exit 2 ;;
esac
