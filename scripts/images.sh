#!/usr/bin/env bash
# Kiln's container images, built on this machine with podman (no Docker engine, no registry needed):
#
#   scripts/images.sh [IMAGE...]        IMAGE: base kiln pause postgres ignite kafka (default: all)
#   scripts/images.sh --print-tag kiln  the local tag an image gets
#   scripts/images.sh --print-name kiln the name Kiln's files use for it (kiln/kiln:<version>, apache/ignite:2.17.0)
#
#   base   localhost/kiln/python:3.11-bookworm, Debian bookworm's Python 3.11 from the Debian archive
#          (mmdebstrap): the stand-in for python:3.11.7-slim-bookworm, which cannot be pulled here.
#   kiln   localhost/kiln/kiln:<version>, from Dockerfile FROM base: Airflow, ml_tasks, Spark (Java 17),
#          MXNet, Singa (compiled from its source release in a build stage), serving and streaming.
#   pause  localhost/kiln/pause:3.10, the pod sandbox of the real node's containerd: a static Go program
#          that sleeps until it is stopped, in an image FROM scratch.
#   postgres, ignite, kafka   containers/<name>/Containerfile FROM base (Debian's PostgreSQL 15; Ignite's and
#          Kafka's jars from Maven Central), tagged localhost/kiln/<name>:<version> and also under the official
#          name the compose file and the manifests use (postgres:15-bookworm, apache/ignite:2.17.0,
#          apache/kafka:4.1.0): the local build stands in for the image that cannot be pulled here, with the
#          environment variables, paths and commands of the official one that Kiln's files use.
#
# Each image carries a label with the SHA-256 of its inputs (the files it copies, its build arguments and
# the base's ID): a second run with nothing changed builds nothing. Images live in podman's store.
# Env: KILN_SINGA_SOURCE (the source archive, as for make setup), CONTAINERS_CONF (default
# containers/containers.conf: runc, cgroupfs, the machine's rlimits).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/containers/containers.conf}"
VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml)
BASE=localhost/kiln/python:3.11-bookworm
# local tag and the official name it stands in for
declare -A SERVICE_TAG=([postgres]=localhost/kiln/postgres:15 [ignite]=localhost/kiln/ignite:2.17.0
                        [kafka]=localhost/kiln/kafka:4.1.0)
declare -A SERVICE_STANDS_IN_FOR=([postgres]=docker.io/library/postgres:15-bookworm
                                  [ignite]=docker.io/apache/ignite:2.17.0 [kafka]=docker.io/apache/kafka:4.1.0)
# build context, and the files the image is built from (what its inputs label hashes): Ignite's and Kafka's
# take the repo's pom.xml (their jars) and JVM/log configs, so they build from the repo root
declare -A SERVICE_CONTEXT=([postgres]=containers/postgres [ignite]=. [kafka]=.)
declare -A SERVICE_INPUTS=([postgres]="containers/postgres" [ignite]="containers/ignite ignite/pom.xml ignite/jvm.options"
                           [kafka]="containers/kafka kafka/pom.xml kafka/log4j2.yaml")
KILN=localhost/kiln/kiln:$VERSION
PAUSE=localhost/kiln/pause:3.10
SINGA_SOURCE=$(realpath -m "${KILN_SINGA_SOURCE:-$root/../shared/third_party/apache-singa-4ddb5629.tar.gz}")

log() { echo "images: $*" >&2; }

label_of() {  # image -> its kiln.inputs label, or nothing
  podman image inspect --format '{{ index .Labels "kiln.inputs" }}' "$1" 2>/dev/null || true
}

key_of() {  # files... -> SHA-256 of their names and contents, plus the extra words in $EXTRA
  { for f in "$@"; do echo "$f"; cat "$f"; done; echo "${EXTRA:-}"; } | sha256sum | cut -c1-32
}

# The base's recipe, and all its key holds: a new base (mmdebstrap's output differs every time) rebuilds every image.
BASE_PACKAGES=python3,python3-venv,ca-certificates
BASE_SUITE=bookworm

build_base() {
  local key
  key=$(EXTRA="$BASE_SUITE minbase $BASE_PACKAGES" key_of /etc/apt/sources.list.d/debian.sources \
        /usr/local/share/ca-certificates/*.crt 2>/dev/null)
  [ "$(label_of "$BASE")" = "$key" ] && return 0
  local work started=$SECONDS
  work=$(mktemp -d)
  log "building $BASE from the Debian archive (about 80 s)"
  # The machine's CA certificates go in too: pip and apt inside image builds reach the registries through them.
  mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" --mode=root \
    --customize-hook='cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" 2>/dev/null || true' \
    --customize-hook='chroot "$1" update-ca-certificates > /dev/null' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$BASE_SUITE" "$work/base.tar" /etc/apt/sources.list.d/debian.sources
  podman import --quiet --change "LABEL kiln.inputs=$key" --change 'CMD ["python3"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$work/base.tar" "$BASE" > /dev/null
  rm -rf "$work"
  log "built $BASE in $((SECONDS - started)) s"
}

build_kiln() {
  build_base
  local key base_id
  base_id=$(podman image inspect --format '{{.Id}}' "$BASE")
  # What the Dockerfile copies: git's files (a checkout's own edits included), not caches or data.
  mapfile -t inputs < <(git ls-files -co --exclude-standard -- Dockerfile requirements.txt pyproject.toml ml_tasks \
    datasets dags plugins scripts/spark_stage.py scripts/build_singa.sh ignite spark | grep -v __pycache__ | sort)
  key=$(EXTRA="$base_id $(sha256sum "$SINGA_SOURCE" | cut -c1-64)" key_of "${inputs[@]}")
  [ "$(label_of "$KILN")" = "$key" ] && return 0
  local started=$SECONDS
  log "building $KILN (first time: about 8 minutes, Singa's compile included; then only what changed)"
  podman build --quiet --layers -f Dockerfile --build-arg "PYTHON_IMAGE=$BASE" \
    --build-context "singa_source=$(dirname "$SINGA_SOURCE")" --build-arg "SINGA_ARCHIVE=$(basename "$SINGA_SOURCE")" \
    --label "kiln.inputs=$key" -t "$KILN" . > /dev/null
  log "built $KILN in $((SECONDS - started)) s"
}

build_pause() {
  local key
  key=$(EXTRA="$(go version)" key_of containers/pause/pause.go containers/pause/Containerfile)
  [ "$(label_of "$PAUSE")" = "$key" ] && return 0
  local work
  work=$(mktemp -d)
  cp containers/pause/pause.go containers/pause/Containerfile "$work/"
  (cd "$work" && CGO_ENABLED=0 GO111MODULE=off go build -trimpath -ldflags "-s -w" -o pause pause.go)
  podman build --quiet -f "$work/Containerfile" --label "kiln.inputs=$key" -t "$PAUSE" "$work" > /dev/null
  rm -rf "$work"
  log "built $PAUSE"
}

build_service() {  # postgres | ignite | kafka: containers/<name>/Containerfile, context SERVICE_CONTEXT
  build_base
  local name=$1 key base_id
  base_id=$(podman image inspect --format '{{.Id}}' "$BASE")
  # shellcheck disable=SC2086  # SERVICE_INPUTS holds a list of paths
  mapfile -t inputs < <(git ls-files -co --exclude-standard -- ${SERVICE_INPUTS[$name]} | sort)
  key=$(EXTRA="$base_id" key_of "${inputs[@]}")
  if [ "$(label_of "${SERVICE_TAG[$name]}")" != "$key" ]; then
    local started=$SECONDS
    log "building ${SERVICE_TAG[$name]}"
    podman build --quiet --layers -f "containers/$name/Containerfile" --build-arg "BASE_IMAGE=$BASE" \
      --label "kiln.inputs=$key" -t "${SERVICE_TAG[$name]}" "${SERVICE_CONTEXT[$name]}" > /dev/null
    log "built ${SERVICE_TAG[$name]} in $((SECONDS - started)) s"
  fi
  podman tag "${SERVICE_TAG[$name]}" "${SERVICE_STANDS_IN_FOR[$name]}"
}

if [ "${1:-}" = --print-name ]; then  # the full name a manifest's image resolves to, which the local build stands in for
  case "${2:-}" in
    kiln|pause) tag=$("$0" --print-tag "$2"); echo "docker.io/${tag#localhost/}" ;;
    postgres|ignite|kafka) echo "${SERVICE_STANDS_IN_FOR[$2]}" ;; *) exit 2 ;;
  esac
  exit 0
fi
if [ "${1:-}" = --print-tag ]; then
  case "${2:-}" in
    base) echo "$BASE" ;; kiln) echo "$KILN" ;; pause) echo "$PAUSE" ;;
    postgres|ignite|kafka) echo "${SERVICE_TAG[$2]}" ;; *) exit 2 ;;
  esac
  exit 0
fi
[ $# -gt 0 ] || set -- base kiln pause postgres ignite kafka
for image in "$@"; do
  case "$image" in
    base) build_base ;; kiln) build_kiln ;; pause) build_pause ;;
    postgres|ignite|kafka) build_service "$image" ;;
    *) echo "usage: $0 [base|kiln|pause|postgres|ignite|kafka]... | --print-tag IMAGE" >&2; exit 2 ;;
  esac
done
