#!/usr/bin/env bash
# Kubernetes for loopback, built from the Go module proxy. Prints the bin directory.
#
#   scripts/build_k8s.sh          the control plane: etcd, kube-apiserver, kube-controller-manager,
#                                 kube-scheduler and kwok (which plays fake nodes)
#   scripts/build_k8s.sh node     a real node's kubelet and kube-proxy, and CoreDNS (the cluster's DNS)
#
# The versions are pinned by the wrapper modules in tools/ (kube, etcd, kwok; kubenode, coredns): their
# go.sum fixes every dependency. KILN_CACHE_DIR (default ~/.cache/kiln) keeps the binaries, keyed by
# those modules, the build flags and the Go version: a second setup, or a fresh clone on the same
# machine, builds nothing. First build on 2 cores: control plane 8 to 12 minutes and 1.1 GB of modules;
# node about 8 minutes more.
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$SELF")/.."
CACHE=${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}/k8s
KUBE_VERSION=v1.34.4  # must match tools/kube/go.mod and tools/kubenode/go.mod
case "${1:-control-plane}" in
  control-plane) SET=control-plane; MODULES=(kube etcd kwok)
                 COMMANDS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok) ;;
  node) SET=node; MODULES=(kubenode coredns); COMMANDS=(kubelet kube-proxy coredns) ;;
  *) echo "usage: $0 [control-plane|node]" >&2; exit 2 ;;
esac

log() { echo "build_k8s: $*" >&2; }

command -v go > /dev/null || { log "Go 1.24 or later is needed (https://go.dev/dl/)"; exit 1; }
# Without these the binaries report v0.0.0-master and kubectl warns about the skew.
minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
version_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
done
BUILD_FLAGS=(-mod=readonly -trimpath)
LDFLAGS="-s -w"
key=$( (for m in "${MODULES[@]}"; do cat "tools/$m"/go.*; done; go version; echo "${BUILD_FLAGS[*]} $LDFLAGS $version_flags") \
  | sha256sum | cut -c1-16)
# The control plane keeps the folder it always had, so that a machine's earlier build is found again.
if [ "$SET" = node ]; then bin="$CACHE/node-$key/bin"; else bin="$CACHE/$key/bin"; fi
missing=()
for c in "${COMMANDS[@]}"; do [ -x "$bin/$c" ] || missing+=("$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  mkdir -p "$(dirname "$bin")"
  work=$(mktemp -d "$(dirname "$bin")/bin.XXXXXX")  # two setups at once each build into their own folder
  trap 'rm -rf "$work"' EXIT
  build() {  # module folder, output name, package, extra linker flags
    local started=$SECONDS
    (cd "tools/$1" && go build "${BUILD_FLAGS[@]}" -ldflags "$LDFLAGS ${4:-}" -o "$work/$2" "$3")
    log "built $2 in $((SECONDS - started)) s"
  }
  log "building the $SET into $bin (first time only: about 8 minutes or more on 2 cores)"
  if [ "$SET" = node ]; then
    for c in kubelet kube-proxy; do build kubenode "$c" "k8s.io/kubernetes/cmd/$c" "$version_flags"; done
    build coredns coredns github.com/coredns/coredns
  else
    build etcd etcd go.etcd.io/etcd/server/v3
    build kwok kwok sigs.k8s.io/kwok/cmd/kwok
    for c in kube-scheduler kube-controller-manager kube-apiserver; do
      build kube "$c" "k8s.io/kubernetes/cmd/$c" "$version_flags"
    done
  fi
  complete() { for c in "${COMMANDS[@]}"; do [ -x "$bin/$c" ] || return 1; done; }
  if complete; then log "another build finished first; keeping it"; else rm -rf "$bin" && mv -T "$work" "$bin"; fi
fi
echo "$bin"
