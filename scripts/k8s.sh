#!/usr/bin/env bash
# A real Kubernetes cluster on this machine: `k8s.sh up|down|status|kubeconfig`.
#
# The control plane on loopback: etcd, kube-apiserver (RBAC, PodSecurity and the default admission plugins
# on), kube-controller-manager, kube-scheduler. Then one node, KILN_K8S_NODE:
#   real  (default) a real node, scripts/k8s_node.sh: containerd + kubelet + bridge CNI + kube-proxy +
#         CoreDNS, Kiln's images imported (make images); pods really run. Needs root.
#   kwok  kwok plays a node (k8s/kwok/stages.yaml: pods go Pending -> Running -> Succeeded/Failed, no container
#         runs): what the API-level tests use, as no image is needed and no container starts.
# Binaries come from scripts/build_k8s.sh (built once, cached). Addresses: Services 198.19.0.0/24, pods
# 198.18.64.0/24 (real) or 198.18.128.0/24 (kwok), the real node 198.18.0.1 (RFC 2544's benchmarking range).
# `up` prints the admin kubeconfig: `export KUBECONFIG=...` and use kubectl as with any cluster.
#
# Env: KILN_K8S_NODE (real), KILN_K8S_DIR (state folder, default .k8s), KILN_K8S_API_PORT (6443),
#      KILN_K8S_ETCD_PORT (2379; peer +1), KILN_K8S_CONTROLLER_PORT (10257), KILN_K8S_SCHEDULER_PORT (10259),
#      KILN_K8S_KUBELET_PORT (10250: kwok's kubelet API; it answers log requests with "log target not found"),
#      KILN_K8S_NODE_KUBELET_PORT (10250, on 198.18.0.1: the real kubelet's).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="${KILN_K8S_DIR:-$root/.k8s}"
state="$(mkdir -p "$state" && cd "$state" && pwd)"
pki="$state/pki"
run="$state/run"
api_port="${KILN_K8S_API_PORT:-6443}"
etcd_port="${KILN_K8S_ETCD_PORT:-2379}"
controller_port="${KILN_K8S_CONTROLLER_PORT:-10257}"
scheduler_port="${KILN_K8S_SCHEDULER_PORT:-10259}"
kubelet_port="${KILN_K8S_KUBELET_PORT:-10250}"
admin_kubeconfig="$state/admin.kubeconfig"
node_name=kiln-kwok-node-0
node_kind="${KILN_K8S_NODE:-real}"
case "$node_kind" in real|kwok) ;; *) echo "k8s: KILN_K8S_NODE is real or kwok, not '$node_kind'" >&2; exit 2 ;; esac
# Started in this order, stopped in the reverse one.
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { echo "k8s: $*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
kubectl_admin() { kubectl --kubeconfig "$admin_kubeconfig" "$@"; }
# shellcheck source=scripts/k8s_common.sh
. "$root/scripts/k8s_common.sh"

make_pki() {  # a CA, the apiserver's serving cert, one client cert per component, the service-account keys
  [ -f "$pki/sa.pub" ] && return 0
  mkdir -p "$pki.part" && cd "$pki.part"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kiln-loopback-ca" -keyout ca.key -out ca.crt 2>/dev/null
  client() { sign_certificate "$pki.part" "$@"; }  # name, subject, x509 extensions
  client apiserver "/CN=kube-apiserver" \
    "subjectAltName=IP:127.0.0.1,IP:198.19.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  client admin "/O=system:masters/CN=kiln-admin"
  client controller-manager "/CN=system:kube-controller-manager"
  client scheduler "/CN=system:kube-scheduler"
  client kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  client kwok-serving "/CN=kiln-kwok-node-0" "subjectAltName=IP:127.0.0.1,DNS:localhost"
  openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  cd "$state" && mv "$pki.part" "$pki"
}

up() {
  if running kube-apiserver; then log "already running"; echo "$admin_kubeconfig"; return 0; fi
  for p in "$api_port" "$etcd_port" "$((etcd_port + 1))" "$controller_port" "$scheduler_port" "$kubelet_port"; do
    if port_open "$p"; then log "port $p is taken by another process"; exit 1; fi
  done
  local bin
  bin=$("$root/scripts/build_k8s.sh")
  make_pki
  mkdir -p "$run"
  write_kubeconfig "$admin_kubeconfig" admin
  write_kubeconfig "$state/controller-manager.kubeconfig" controller-manager
  write_kubeconfig "$state/scheduler.kubeconfig" scheduler

  rm -rf "$state/etcd"  # a fresh cluster every time: nothing of an earlier run leaks into this one
  start etcd "$bin/etcd" --name kiln --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-cluster "kiln=http://127.0.0.1:$((etcd_port + 1))" --listen-metrics-urls "" \
    --quota-backend-bytes 1073741824
  wait_for etcd 30 curl -fs "http://127.0.0.1:$etcd_port/health"

  # PodSecurity, NamespaceLifecycle, ServiceAccount, LimitRanger, ResourceQuota... are on by default.
  start kube-apiserver "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" --service-cluster-ip-range 198.19.0.0/24 \
    --endpoint-reconciler-type none --allow-privileged=false \
    --kubelet-client-certificate "$pki/kubelet-client.crt" --kubelet-client-key "$pki/kubelet-client.key" \
    --kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types InternalIP
  wait_for kube-apiserver 90 kubectl_admin get --raw /readyz

  start kube-controller-manager "$bin/kube-controller-manager" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port "$controller_port" \
    --kubeconfig "$state/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
    --use-service-account-credentials=true --service-account-private-key-file "$pki/sa.key" \
    --root-ca-file "$pki/ca.crt" --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key"
  start kube-scheduler "$bin/kube-scheduler" --leader-elect=false --bind-address 127.0.0.1 \
    --secure-port "$scheduler_port" --kubeconfig "$state/scheduler.kubeconfig" \
    --authentication-kubeconfig "$state/scheduler.kubeconfig" --authorization-kubeconfig "$state/scheduler.kubeconfig"
  # Every pod needs its namespace's ServiceAccount, which the controller manager creates.
  wait_for "the controller manager" 60 kubectl_admin -n default get serviceaccount default
  if [ "$node_kind" = real ]; then
    "$root/scripts/k8s_node.sh" up || { down > /dev/null; exit 1; }
    log "up: kube-apiserver on https://127.0.0.1:$api_port, one real node; logs in $run"
    log "use it: export KUBECONFIG=$admin_kubeconfig"
    echo "$admin_kubeconfig"
    return 0
  fi
  # kwok runs no container and keeps no log: its kubelet API answers a log request at once with "log
  # target not found" (a served log file would be followed forever: kwok never ends a log stream).
  start kwok "$bin/kwok" --kubeconfig "$admin_kubeconfig" --config "$root/k8s/kwok/stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr 198.18.128.1/24 --node-ip 127.0.0.1 --node-port "$kubelet_port" \
    --server-address "127.0.0.1:$kubelet_port" \
    --tls-cert-file "$pki/kwok-serving.crt" --tls-private-key-file "$pki/kwok-serving.key"

  # One fake node with room for every preset (no GPU: a gpu-preset pod stays Pending, as on a CPU cluster).
  kubectl_admin apply -f - > /dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $node_name
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: $node_name
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "64", memory: 512Gi, pods: "250"}
  capacity: {cpu: "64", memory: 512Gi, pods: "250"}
EOF
  wait_for "the kwok node" 60 kubectl_admin wait --for=condition=Ready "node/$node_name" --timeout=1s
  log "up: kube-apiserver on https://127.0.0.1:$api_port, one kwok node; logs in $run"
  log "use it: export KUBECONFIG=$admin_kubeconfig"
  echo "$admin_kubeconfig"
}

down() {
  local stopped=()
  # The real node first, while the API server still answers (its pods are deleted through it).
  # Only a node this state folder brought up (its record of the machine's settings is the mark).
  if [ -f "$state/node/sysctls.before" ]; then "$root/scripts/k8s_node.sh" down || log "the node's down failed"; fi
  stop_components
  rm -rf "$state/etcd"
  if [ ${#stopped[@]} -eq 0 ]; then log "not running"; else log "stopped ${stopped[*]}"; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if running kube-apiserver; then log "running"; echo "$admin_kubeconfig"; else log "not running"; exit 1; fi ;;
  kubeconfig) echo "$admin_kubeconfig" ;;
  *) echo "usage: $0 up|down|status|kubeconfig" >&2; exit 2 ;;
esac
