#!/bin/bash
# The official apache/ignite image's entry point: start a server node from CONFIG_URI (default: the
# in-memory default-config.xml), with JVM_OPTS after the image's Java 17 flags (ignite.sh reads it).
set -euo pipefail
exec "$IGNITE_HOME/bin/ignite.sh" "${CONFIG_URI:-$IGNITE_HOME/config/default-config.xml}" "$@"
