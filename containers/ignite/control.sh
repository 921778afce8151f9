#!/bin/bash
# control.sh ARGS: Ignite's control utility (thin-client protocol), e.g. --host H --port 10800 --state.
set -euo pipefail
: "${IGNITE_HOME:?}"
# shellcheck disable=SC2086
exec java @"$IGNITE_HOME/config/jvm.options" -Xms64m -Xmx256m ${CONTROL_JVM_OPTS:-} -DIGNITE_HOME="$IGNITE_HOME" \
  -cp "$IGNITE_HOME/libs/*" org.apache.ignite.internal.commandline.CommandHandler "$@"
