# Shared by scripts/ignite.sh and scripts/kafka.sh (sourced): the JVM services Kiln runs from Maven Central jars.

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Running, not a zombie: a killed process's parent (init here) may not reap it at once.
alive_pid() { ps -o stat= -p "$1" 2>/dev/null | grep -qv '^Z'; }

# resolve_jars NAME POM LIBS: copy the pom's dependencies into LIBS. Quiet Maven still prints colour resets
# (ESC[0m) into the demo's output, so its output is shown only when it fails.
resolve_jars() {
  echo "$1: resolving jars from Maven Central into $3"
  local out
  if ! out=$(mvn -q -B -f "$2" dependency:copy-dependencies -DoutputDirectory="$3" 2>&1); then
    echo "$out" >&2
    return 1
  fi
}
