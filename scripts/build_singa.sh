#!/usr/bin/env bash
# Apache Singa (CPU) from source into Kiln's venv: PyPI has no usable wheel (only Python 3.6).
#
#   scripts/build_singa.sh [PYTHON]      PYTHON: the venv's interpreter (default .venv/bin/python)
#
# KILN_SINGA_SOURCE  the source archive: a path or an https URL of an Apache Singa source release
#                    (default: ../shared/third_party/apache-singa-4ddb5629.tar.gz beside the repo)
# KILN_CACHE_DIR     where built wheels are kept (default ~/.cache/kiln): the key is the archive's
#                    SHA-256, the interpreter's and numpy's versions and this script's, so a fresh clone
#                    on the same machine installs the cached wheel instead of compiling, and a run with
#                    that build already installed does nothing (another source archive: another build).
#
# The same script builds the image (docker/singa.Dockerfile), so pods run what the tests ran.
set -euo pipefail
SELF=$(realpath "$0")
SOURCE=${KILN_SINGA_SOURCE:-$(dirname "$SELF")/../../shared/third_party/apache-singa-4ddb5629.tar.gz}
[[ "$SOURCE" == https://* ]] || SOURCE=$(realpath -m "$SOURCE")  # relative to where it was asked for
PY=${1:-}  # absolute before the cd below, without resolving the venv's symlink to its base interpreter
[[ "$PY" == */* ]] && PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
cd "$(dirname "$SELF")/.."
PY=${PY:-.venv/bin/python}
CACHE=${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}/singa
BUILD_PACKAGES=(cmake g++ make swig protobuf-compiler libprotobuf-dev libgoogle-glog-dev libopenblas-dev)
JOBS=${KILN_BUILD_JOBS:-$(nproc)}

log() { echo "build_singa: $*" >&2; }

ensure_packages() {  # Debian packages: installed as root, otherwise named for the user to install
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    log "please install: ${missing[*]} (e.g. sudo apt-get install ${missing[*]})"; exit 1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
}

mkdir -p "$CACHE/src"
if [[ "$SOURCE" == https://* ]]; then
  archive="$CACHE/src/$(basename "$SOURCE")"
  [ -s "$archive" ] || { log "downloading $SOURCE"; curl -fsSL "$SOURCE" -o "$archive.part" && mv "$archive.part" "$archive"; }
else
  archive=$SOURCE
  [ -f "$archive" ] || { log "no Singa source at $archive: set KILN_SINGA_SOURCE to an Apache Singa source archive"; exit 1; }
fi
# The wheel is bound to the interpreter's version and to numpy's C headers it compiled against.
pyver=$("$PY" -c 'import sys, numpy; print(f"cp{sys.version_info[0]}{sys.version_info[1]} numpy {numpy.__version__}")')
key=$( (sha256sum < "$archive"; echo "$pyver"; sha256sum < "$SELF") | sha256sum | cut -c1-16)
wheel_dir="$CACHE/$key"
installed_key="$("$PY" -c 'import sys; print(sys.prefix)')/.kiln-singa-key"
if [ "$(cat "$installed_key" 2>/dev/null)" = "$key" ] && "$PY" -c "import singa.singa_wrap" 2>/dev/null; then
  exit 0  # this very build is installed: nothing to do
fi

if ! ls "$wheel_dir"/singa-*.whl >/dev/null 2>&1; then
  ensure_packages "${BUILD_PACKAGES[@]}"
  work=$(mktemp -d "$CACHE/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  log "building from $archive in $work ($JOBS jobs; about 2 minutes on 2 cores)"
  tar -xzf "$archive" -C "$work" --strip-components=1
  # Singa 5.1.0 still imports Iterable from collections (moved to collections.abc in Python 3.10).
  sed -i 's/^from collections import Iterable$/from collections.abc import Iterable/' "$work/python/singa/model.py"
  # CMake would find the system Python: point it at the venv (its numpy headers) and the interpreter it was made from.
  mapfile -t pyconf < <("$PY" -c 'import sys, sysconfig as s
print(sys.executable); print(s.get_paths()["include"])
print(s.get_config_var("LIBDIR") + "/" + s.get_config_var("LDLIBRARY"))')
  cmake -S "$work" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    -DUSE_PYTHON3=ON -DUSE_CUDA=OFF -DUSE_CUDNN=OFF -DUSE_DNNL=OFF -DUSE_OPENCV=OFF -DENABLE_TEST=OFF \
    -DPYTHON_EXECUTABLE="${pyconf[0]}" -DPYTHON_INCLUDE_DIR="${pyconf[1]}" -DPYTHON_LIBRARY="${pyconf[2]}" \
    > "$work/configure.log" 2>&1 || { tail -30 "$work/configure.log"; exit 1; }
  make -C "$work/build" -j"$JOBS" > "$work/make.log" 2>&1 || { grep -m20 -B2 -A5 "error" "$work/make.log"; exit 1; }
  strip --strip-debug "$work/build/python/singa/_singa_wrap.so"  # -g is hard-coded upstream: 48 MB -> 4 MB
  "$PY" -m pip wheel --quiet --no-deps -w "$work/wheel" "$work/build/python"
  mkdir -p "$wheel_dir.part" && mv "$work"/wheel/singa-*.whl "$wheel_dir.part/" && mv "$wheel_dir.part" "$wheel_dir"
fi
ensure_packages libprotobuf32 libgoogle-glog0v6 libopenblas0
"$PY" -m pip install --quiet --no-deps --force-reinstall "$wheel_dir"/singa-*.whl
"$PY" -c "from singa import device, layer, model, opt, tensor" || { log "the installed Singa does not import"; exit 1; }
echo "$key" > "$installed_key"
log "Singa $("$PY" -c 'import importlib.metadata as m; print(m.version("singa"))') installed from $wheel_dir"
