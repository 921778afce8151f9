#!/usr/bin/env bash
# System packages Kiln's tests and services use, installed from Debian when missing:
# Java 17 and Maven (Spark, Ignite), PostgreSQL (the running Airflow), Chromium + ChromeDriver
# (the browser test), kubectl, openssl and curl (k8s/ and the loopback control plane), strace (the fsync test). As root it
# installs; otherwise it lists what is missing. Go 1.24+ (building the control plane) is not a Debian
# package of that version: scripts/build_k8s.sh asks for it.
set -euo pipefail
declare -A need=(
  [java]=openjdk-17-jre-headless [mvn]=maven [chromium]=chromium [chromedriver]=chromium-driver
  [kubectl]=kubernetes-client [wrk]=wrk [/usr/lib/postgresql/15/bin/initdb]=postgresql-15 [openssl]=openssl [curl]=curl [strace]=strace
)
missing=()
for cmd in "${!need[@]}"; do
  if [[ "$cmd" == /* ]]; then [ -x "$cmd" ] || missing+=("${need[$cmd]}"); else command -v "$cmd" >/dev/null || missing+=("${need[$cmd]}"); fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "system_deps: please install: ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "system_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
