# Shell functions the cluster's scripts share (sourced by scripts/k8s.sh and scripts/k8s_node.sh). The caller
# sets: pki (the CA's folder), api_port, run (pid and log files), components (its processes, in start order),
# and defines log and down.

pid_of() { cat "$run/$1.pid" 2>/dev/null; }
running() { local pid; pid=$(pid_of "$1") && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

sign_certificate() {  # folder holding ca.crt and ca.key, name, subject, x509 extensions; kept if it exists
  local dir=$1 name=$2
  [ -f "$dir/$name.crt" ] && return 0
  openssl req -newkey rsa:2048 -nodes -subj "$3" -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
  printf '%s\n' "${4:-basicConstraints=CA:FALSE}" > "$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 3650 \
    -out "$dir/$name.crt" -extfile "$dir/$name.ext" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

write_kubeconfig() {  # file, client certificate name (in $pki)
  local file=$1
  rm -f "$file"
  kubectl config --kubeconfig "$file" set-cluster kiln --server "https://127.0.0.1:$api_port" \
    --certificate-authority "$pki/ca.crt" --embed-certs > /dev/null
  kubectl config --kubeconfig "$file" set-credentials "$2" --client-certificate "$pki/$2.crt" \
    --client-key "$pki/$2.key" --embed-certs > /dev/null
  kubectl config --kubeconfig "$file" set-context kiln --cluster kiln --user "$2" > /dev/null
  kubectl config --kubeconfig "$file" use-context kiln > /dev/null
}

start() {  # name, command...: in the background, its pid and log in $run
  local name=$1; shift
  nohup "$@" > "$run/$name.log" 2>&1 < /dev/null &
  echo $! > "$run/$name.pid"
}

wait_for() {  # what, seconds, command...: until the command succeeds; a component that exits ends it all
  local what=$1 seconds=$2; shift 2
  for _ in $(seq 1 $((seconds * 4))); do
    "$@" > /dev/null 2>&1 && return 0
    for c in "${components[@]}"; do
      if [ -f "$run/$c.pid" ] && ! running "$c"; then
        log "$c exited; last log lines:"; tail -20 "$run/$c.log" >&2; down > /dev/null; exit 1
      fi
    done
    sleep 0.25
  done
  log "$what not ready within $seconds s; logs in $run"; down > /dev/null; exit 1
}

stop_components() {  # $components in reverse order: SIGTERM, then SIGKILL after 10 s; each one stopped is added to
  local i c pid      # the caller's array "stopped"
  for ((i = ${#components[@]} - 1; i >= 0; i--)); do
    c=${components[i]}
    pid=$(pid_of "$c") || continue
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      { kill -0 "$pid" && kill -9 "$pid"; } 2>/dev/null || true
      stopped+=("$c")
    fi
    rm -f "$run/$c.pid"
  done
}
