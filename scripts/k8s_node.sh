#!/usr/bin/env bash
# A real Kubernetes node beside the loopback control plane: `k8s_node.sh up|down` (scripts/k8s.sh calls it).
#
# containerd (runc, cgroupfs) + kubelet + a bridge CNI + kube-proxy (iptables, for Services) + CoreDNS
# (cluster.local names), and Kiln's images imported into containerd. Pods really run.
# Addresses stay in 198.18.0.0/15 (RFC 2544, never routed): the node is 198.18.0.1 on an interface of its own
# (CoreDNS answers there too), pods get 198.18.64.0/24 on the bridge and only a route to 198.18.0.0/15
# (no default route: a pod can send nothing beyond it), Services 198.19.0.0/24 (the API server's range).
# `down` undoes all of it: pods, processes, mounts, network namespaces, the bridge and the node's interface,
# the KUBE-* iptables chains, the pods' cgroups, and the kernel settings the kubelet and
# kube-proxy change. containerd's image store stays in KILN_CACHE_DIR (a cache, like the binaries).
#
# Env (set by k8s.sh): KILN_K8S_DIR, KILN_K8S_API_PORT, KILN_K8S_NODE_KUBELET_PORT (10250),
#      KILN_K8S_NODE_PROXY_PORT (10256, kube-proxy's health, on loopback), KILN_K8S_NODE_PROXY_METRICS_PORT (10249).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="${KILN_K8S_DIR:-$root/.k8s}"
state="$(mkdir -p "$state" && cd "$state" && pwd)"
pki="$state/pki"
node="$state/node"
run="$state/run"
cache="${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"
api_port="${KILN_K8S_API_PORT:-6443}"
kubelet_port="${KILN_K8S_NODE_KUBELET_PORT:-10250}"
proxy_port="${KILN_K8S_NODE_PROXY_PORT:-10256}"
proxy_metrics_port="${KILN_K8S_NODE_PROXY_METRICS_PORT:-10249}"
admin_kubeconfig="$state/admin.kubeconfig"
NODE_NAME=kiln-node-0
NODE_IP=198.18.0.1
NODE_LINK=kiln-node0
BRIDGE=kiln-cni0
POD_CIDR=198.18.64.0/24
POD_GATEWAY=198.18.64.1
SERVICE_CIDR=198.19.0.0/24  # must match k8s.sh's --service-cluster-ip-range
VOLUMES=4                   # hostPath volumes offered to claims (the artifact claim, Ignite's persistence)
CGROUP_ROOT=/kiln-node      # every pod's cgroup lives under it, in each controller
CONTAINERD_ROOT="$cache/containerd"
CONTAINERD_STATE=/run/kiln-containerd
SOCKET="$CONTAINERD_STATE/containerd.sock"
# What the kubelet and kube-proxy may write: kept in $node/sysctls.before, written back by down.
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward
         net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables net.netfilter.nf_conntrack_max
         net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_tcp_timeout_close_wait)
components=(containerd kubelet kube-proxy coredns)

log() { echo "k8s-node: $*" >&2; }
kubectl_admin() { kubectl --kubeconfig "$admin_kubeconfig" "$@"; }
ctr_k8s() { ctr --address "$SOCKET" -n k8s.io "$@"; }
# shellcheck source=scripts/k8s_common.sh
. "$root/scripts/k8s_common.sh"

certificate() { sign_certificate "$pki" "$@"; }  # name, subject, x509 extensions: signed by the cluster's CA

write_configs() {
  mkdir -p "$node/cni/net.d" "$node/kubelet" "$CONTAINERD_ROOT"
  certificate node-kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
  certificate node-serving "/CN=$NODE_NAME" "subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
  certificate kube-proxy "/CN=system:kube-proxy"  # bound to system:node-proxier by default
  certificate coredns "/CN=kiln:coredns"          # its role: k8s.sh applies it below
  write_kubeconfig "$node/kubelet.kubeconfig" node-kubelet
  write_kubeconfig "$node/kube-proxy.kubeconfig" kube-proxy
  write_kubeconfig "$node/coredns.kubeconfig" coredns

  cat > "$node/containerd.toml" <<EOF
version = 2
root = "$CONTAINERD_ROOT/root"
state = "$CONTAINERD_STATE"
[grpc]
  address = "$SOCKET"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$("$root/scripts/images.sh" --print-tag pause)"
  # Root lacks CAP_SYS_RESOURCE here: a negative oom_score_adj is refused and every sandbox would fail.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node/cni/net.d"
EOF
  # Only a route to 198.18.0.0/15 (the node, the Services, the other pods): nothing leaves the test range.
  cat > "$node/cni/net.d/10-kiln.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "kiln", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
            "routes": [{"dst": "198.18.0.0/15"}], "dataDir": "$node/cni/ipam"}},
  {"type": "loopback"}
]}
EOF
  # An empty resolv.conf: a pod's lookups go to the cluster DNS only, never to the machine's resolvers.
  : > "$node/resolv.conf"
  cat > "$node/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
tlsCertFile: $pki/node-serving.crt
tlsPrivateKeyFile: $pki/node-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: AlwaysAllow}  # who holds a client certificate of this cluster's CA (the API server)
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
cgroupsPerQOS: true
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCKET
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
resolvConf: $node/resolv.conf
podCIDR: $POD_CIDR
maxPods: 110
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "200Mi", nodefs.available: "2%", imagefs.available: "2%"}
staticPodPath: ""
registerNode: true
localStorageCapacityIsolation: true
EOF
  cat > "$node/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $node/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:$proxy_port
metricsBindAddress: 127.0.0.1:$proxy_metrics_port
nodePortAddresses: ["$NODE_IP/32"]
iptables: {masqueradeAll: true, localhostNodePorts: false}
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  # The cluster's names only; anything else is answered NXDOMAIN, never forwarded off the machine.
  cat > "$node/Corefile" <<EOF
cluster.local:53 {
    bind $NODE_IP
    errors
    kubernetes cluster.local {
        kubeconfig $node/coredns.kubeconfig kiln
        pods insecure
        ttl 5
    }
}
.:53 {
    bind $NODE_IP
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF
}

import_images() {  # Kiln's images into containerd (podman's store is the source), once per image ID
  local image id name
  for which in pause kiln ignite; do
    image=$("$root/scripts/images.sh" --print-tag "$which")
    id=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null) || { log "image $image is missing: make images"; return 1; }
    # The local build stands in under the name the manifests and KILN_IMAGE use (kiln/kiln:<version>,
    # apache/ignite:2.17.0).
    name=$("$root/scripts/images.sh" --print-name "$which")
    if [ -f "$CONTAINERD_ROOT/imported/$id" ] && ctr_k8s images ls -q "name==$name" | grep -q .; then continue; fi
    local started=$SECONDS tar
    tar=$(mktemp "$CONTAINERD_ROOT/image.XXXXXX.tar")
    podman save --quiet --format docker-archive -o "$tar" "$image"
    ctr_k8s images import "$tar" > /dev/null
    rm -f "$tar"
    ctr_k8s images tag --force "$image" "$name" > /dev/null
    mkdir -p "$CONTAINERD_ROOT/imported" && touch "$CONTAINERD_ROOT/imported/$id"
    log "imported $image (as $name too) into containerd in $((SECONDS - started)) s"
  done
}

volumes() {  # what a storage provisioner would offer: folders of this node, for any claim without a class
  local i
  for i in $(seq 0 $((VOLUMES - 1))); do
    mkdir -p "$node/volumes/$i" && chmod 1777 "$node/volumes/$i"  # pods run as their own non-root users
    cat <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: kiln-node-volume-$i, labels: {kiln.io/node-volume: "true"}}
spec:
  capacity: {storage: 50Gi}
  accessModes: [ReadWriteOnce, ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  hostPath: {path: "$node/volumes/$i", type: Directory}
---
EOF
  done | kubectl_admin apply -f - > /dev/null
}

up() {
  if running kubelet; then log "already running"; return 0; fi
  if [ ! -d /sys/fs/cgroup/memory ]; then
    log "this node setup is for cgroup v1 controllers (cgroupfs driver), which this machine does not mount"; exit 1
  fi
  if [ -n "$(chains)" ]; then
    log "KUBE-* iptables chains exist already (a node of a crashed run?); remove them first"; exit 1
  fi
  if ip link show "$NODE_LINK" > /dev/null 2>&1; then
    log "interface $NODE_LINK exists: another real node is up on this machine (its k8s.sh down removes it)"; exit 1
  fi
  local bin
  bin=$("$root/scripts/build_k8s.sh" node)
  mkdir -p "$node" "$run"
  for s in "${SYSCTLS[@]}"; do
    [ -e "/proc/sys/${s//.//}" ] && echo "$s=$(sysctl -n "$s")"
  done > "$node/sysctls.before"
  chains > "$node/chains.before"
  ip netns list 2>/dev/null | awk '{print $1}' | sort > "$node/netns.before"
  write_configs
  kubectl_admin apply -f - > /dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "kiln:coredns"}
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "kiln:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kiln:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "kiln:coredns"}]
EOF
  # A veth pair holds the node's address (the kernel here has no dummy module; a veth needs none).
  ip link add "$NODE_LINK" type veth peer name "$NODE_LINK-peer"
  ip addr add "$NODE_IP/32" dev "$NODE_LINK"
  ip link set "$NODE_LINK-peer" up
  ip link set "$NODE_LINK" up

  start containerd containerd --config "$node/containerd.toml"
  wait_for containerd 30 ctr --address "$SOCKET" version
  import_images
  # The kubelet wants its cgroup root to exist in every controller (cgroup v1 here, cgroupfs driver).
  local cg
  for cg in /sys/fs/cgroup/*/; do
    [ "$cg" = /sys/fs/cgroup/unified/ ] && continue
    mkdir -p "$cg${CGROUP_ROOT#/}"
  done
  if [ -f /sys/fs/cgroup/cpuset/cpuset.cpus ]; then  # a new v1 cpuset is empty: it takes its parent's
    cat /sys/fs/cgroup/cpuset/cpuset.cpus > "/sys/fs/cgroup/cpuset$CGROUP_ROOT/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems > "/sys/fs/cgroup/cpuset$CGROUP_ROOT/cpuset.mems"
  fi
  start kubelet "$bin/kubelet" --config "$node/kubelet.yaml" --kubeconfig "$node/kubelet.kubeconfig" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --root-dir "$node/kubelet" \
    --node-labels "kiln.io/node=real"
  wait_for "the node" 90 kubectl_admin wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
  volumes
  start kube-proxy "$bin/kube-proxy" --config "$node/kube-proxy.yaml"
  start coredns "$bin/coredns" -conf "$node/Corefile" -dns.port 53
  wait_for "kube-proxy" 60 curl -fs "http://127.0.0.1:$proxy_port/healthz"
  log "up: node $NODE_NAME ($NODE_IP) runs pods with containerd; Services by kube-proxy, DNS on $NODE_IP"
}

chains() {  # the KUBE-* chains (the kubelet's and kube-proxy's) of both IP families and all tables,
  local cmd table  # one "cmd table chain" a line. CNI-* chains are podman's: the node's bridge CNI makes none.
  for cmd in iptables ip6tables; do
    for table in filter nat mangle; do
      "$cmd-save" -t "$table" 2>/dev/null | grep -oE '^:KUBE-[^ ]+' | cut -c2- | sed "s/^/$cmd $table /" || true
    done
  done | sort -u
}

remove_chains() {  # KUBE-* chains made since up
  local cmd table chain
  chains | comm -13 "$node/chains.before" - > "$node/chains.ours"
  while read -r cmd table chain; do  # first the jumps into them from any chain, then their rules, then them
    { "$cmd-save" -t "$table" | grep -E "^-A [^ ]+ .*-j $chain( |\$)" || true; } | sed 's/^-A /-D /' \
      | while read -r rule; do eval "$cmd -t $table $rule" 2>/dev/null || true; done
  done < "$node/chains.ours"
  while read -r cmd table chain; do "$cmd" -t "$table" -F "$chain" 2>/dev/null || true; done < "$node/chains.ours"
  while read -r cmd table chain; do "$cmd" -t "$table" -X "$chain" 2>/dev/null || true; done < "$node/chains.ours"
  rm -f "$node/chains.ours"
}

down() {
  local stopped=()
  if running kubelet && [ -f "$admin_kubeconfig" ]; then
    # The kubelet stops the pods' containers and tears down their sandboxes (network, mounts) itself. Their
    # controllers go first, or they would make new pods as fast as these are deleted.
    kubectl_admin delete cronjobs,deployments,statefulsets,replicasets,replicationcontrollers,daemonsets,jobs --all --all-namespaces \
      --cascade=orphan --wait=false > /dev/null 2>&1 || true
    kubectl_admin delete pods --all --all-namespaces --grace-period=0 --force --wait=false > /dev/null 2>&1 || true
    for _ in $(seq 1 120); do
      [ -z "$(ctr_k8s tasks ls -q 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  if [ -S "$SOCKET" ]; then  # what the kubelet did not stop
    for t in $(ctr_k8s tasks ls -q 2>/dev/null); do ctr_k8s tasks kill -s SIGKILL "$t" > /dev/null 2>&1 || true; done
    sleep 0.5
    for t in $(ctr_k8s tasks ls -q 2>/dev/null); do ctr_k8s tasks rm -f "$t" > /dev/null 2>&1 || true; done
    for c in $(ctr_k8s containers ls -q 2>/dev/null); do ctr_k8s containers rm "$c" > /dev/null 2>&1 || true; done
  fi
  stop_components
  # containerd's shims outlive it; so may a pod's processes if the kubelet died first.
  pkill -9 -f "containerd-shim-runc-v2 .*-address $SOCKET" 2>/dev/null || true
  for _ in $(seq 1 40); do  # until the pods' cgroups hold no process (a big one takes a moment to exit)
    procs=$(find /sys/fs/cgroup/*"$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null || true)
    [ -z "$procs" ] && break
    echo "$procs" | xargs -r kill -9 2>/dev/null || true
    sleep 0.25
  done
  # Mounts under the node's folders and containerd's (volumes, root file systems, shm, netns bind mounts).
  awk -v a="$node" -v b="$CONTAINERD_STATE" -v c="$CONTAINERD_ROOT/root" \
      '{ for (i = 0; i < 3; i++) { p = (i == 0 ? a : i == 1 ? b : c); if ($2 == p || index($2, p "/") == 1) print $2 } }' \
      /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  # The pods' network namespaces: containerd's cni-* ones made since up (another tool's, older, are left alone).
  if [ -f "$node/netns.before" ]; then
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-' | sort | comm -13 "$node/netns.before" -); do
      umount -l "/run/netns/$ns" 2>/dev/null || true
      ip netns delete "$ns" 2>/dev/null || rm -f "/run/netns/$ns"
    done
  fi
  for cg in /sys/fs/cgroup/*"$CGROUP_ROOT"; do
    [ -d "$cg" ] && { find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || log "could not remove $cg"; }
  done
  ip link delete "$BRIDGE" 2>/dev/null || true
  ip link delete "$NODE_LINK" 2>/dev/null || true
  [ -f "$node/chains.before" ] && remove_chains
  if [ -f "$node/sysctls.before" ]; then
    while IFS== read -r key value; do sysctl -qw "$key=$value" 2>/dev/null || true; done < "$node/sysctls.before"
  fi
  rm -rf "$node/kubelet" "$node/cni/ipam" "$node/volumes" "$node/sysctls.before" "$node/chains.before" \
    "$node/netns.before" "$CONTAINERD_STATE"
  if [ ${#stopped[@]} -eq 0 ]; then log "not running"; else log "stopped ${stopped[*]}"; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
