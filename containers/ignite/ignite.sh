#!/bin/bash
# ignite.sh CONFIG: one Ignite server node in the foreground, from the Spring XML CONFIG. JVM flags: the ones
# Ignite 2.17 needs on Java 17 (config/jvm.options), then $JVM_OPTS (a later -Xmx or -D wins).
set -euo pipefail
: "${IGNITE_HOME:?}"
config=${1:-$IGNITE_HOME/config/default-config.xml}
# shellcheck disable=SC2086  # JVM_OPTS is a list of flags, split on spaces as the official ignite.sh does
exec java @"$IGNITE_HOME/config/jvm.options" ${JVM_OPTS:-} -DIGNITE_HOME="$IGNITE_HOME" \
  -cp "$IGNITE_HOME/libs/*" org.apache.ignite.startup.cmdline.CommandLineStartup "$config"
