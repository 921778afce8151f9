#!/bin/bash
# The official postgres image's start-up, the parts Kiln uses: on an empty PGDATA, initdb with POSTGRES_USER
# as superuser and POSTGRES_PASSWORD, host connections from anywhere with scram-sha-256, POSTGRES_DB created,
# *.sql / *.sh in /docker-entrypoint-initdb.d run; then the server runs in the foreground as user postgres.
set -Eeuo pipefail
PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA

if [ "${1:0:1}" = - ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi

if [ "$(id -u)" = 0 ]; then  # root: own the data folder (a fresh volume may be root's), then drop to postgres
  mkdir -p "$PGDATA" /var/run/postgresql
  find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
  chmod 700 "$PGDATA"
  chown postgres:postgres /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
    echo "postgres: database is uninitialized and POSTGRES_PASSWORD is not set" >&2
    exit 1
  fi
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
  initdb --username="$user" --pwfile=<(printf '%s' "${POSTGRES_PASSWORD:-}") --auth-local=trust \
    --auth-host="$auth" --encoding=UTF8 ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA"
  printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"
  # a server on the Unix socket only while the database is created and the init scripts run
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
  if [ "$db" != postgres ]; then
    psql -v ON_ERROR_STOP=1 --username "$user" --dbname postgres -q --set db="$db" <<<'CREATE DATABASE :"db";'
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) echo "postgres: running $f"; . "$f" ;;
      *.sql) echo "postgres: running $f"; psql -v ON_ERROR_STOP=1 --username "$user" --dbname "$db" -f "$f" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop
  echo "postgres: init process complete; ready for start up"
fi
exec "$@"
