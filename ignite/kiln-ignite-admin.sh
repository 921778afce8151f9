#!/usr/bin/env bash
# Ask an Ignite node something over the thin-client protocol (Ignite's control utility, 2.17+):
#   kiln-ignite-admin.sh ready HOST PORT     exit 0 only if the node answers and the cluster is ACTIVE
#                                            (a readiness probe: an open port is not a node that serves)
#   kiln-ignite-admin.sh activate HOST PORT  activate the cluster (idempotent) and let the baseline follow
#                                            nodes that join or leave (native persistence needs both)
# Runs $IGNITE_HOME/bin/control.sh in the apache/ignite image, or the control utility from the jars in
# KILN_IGNITE_LIBS (scripts/ignite.sh's .ignite/libs) with the JVM flags of jvm.options beside this script.
set -euo pipefail
command=${1:?usage: kiln-ignite-admin.sh ready|activate HOST PORT}
host=${2:?host}
port=${3:?port}

control() {
  if [ -n "${IGNITE_HOME:-}" ] && [ -x "$IGNITE_HOME/bin/control.sh" ]; then
    "$IGNITE_HOME/bin/control.sh" --host "$host" --port "$port" "$@"
  else
    java @"$(dirname "$0")/jvm.options" -Xms64m -Xmx256m \
      -cp "${KILN_IGNITE_LIBS:?set KILN_IGNITE_LIBS to the Ignite jars}/*" \
      org.apache.ignite.internal.commandline.CommandHandler --host "$host" --port "$port" "$@"
  fi
}

case "$command" in
  ready)
    state=$(control --state 2>&1) || { grep -m3 -E "[Ee]rror|[Ff]ailed|[Ee]xception" <<< "$state" >&2; exit 1; }
    grep -q "^Cluster state: ACTIVE$" <<< "$state" || { grep "^Cluster state" <<< "$state" >&2; exit 1; }
    ;;
  activate)
    control --set-state ACTIVE --yes
    control --baseline auto_adjust enable timeout 30000 --yes
    ;;
  *) echo "usage: $0 ready|activate HOST PORT" >&2; exit 2 ;;
esac
