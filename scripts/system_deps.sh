#!/usr/bin/env bash
# The Debian packages Kiln uses, by group, installed when missing: `system_deps.sh GROUP...` (none: every group).
#   core      Java 17 (Spark: the demo's Spark Connect server and stages), curl (the demo's prediction requests)
#   services  + Maven (Ignite's and Kafka's jars from Maven Central: ignite-up, kafka-up, the demo's streaming part)
#   postgres  PostgreSQL 15 and openssl (airflow-up: its metadata DB and secrets; bench_postgres)
#   k8s       kubectl, openssl, curl (the loopback control plane) + containers (k8s-up's real node)
#   containers podman, buildah, runc, mmdebstrap (make images), containerd, the CNI plugins, iptables,
#             conntrack (the real node), podman-compose and CNI's dnsname plugin (the compose stack: its services
#             find each other by name)
#   bench     core + Maven, the JDK's javac (bench/java) and wrk (the serving load)
#   test      all of the above + Chromium and ChromeDriver (the browser test), strace (the fsync and argv tests)
# Silent when nothing is missing. As root it installs; otherwise it lists what is missing. Go 1.24+ (building the
# control plane) is not a Debian package of that version: scripts/build_k8s.sh asks for it.
set -euo pipefail
declare -A package=(
  [java]=openjdk-17-jre-headless [curl]=curl [mvn]=maven [/usr/lib/postgresql/15/bin/initdb]=postgresql-15
  [openssl]=openssl [kubectl]=kubernetes-client [javac]=openjdk-17-jdk-headless [wrk]=wrk
  [chromium]=chromium [chromedriver]=chromium-driver [strace]=strace
  [podman]=podman [buildah]=buildah [runc]=runc [mmdebstrap]=mmdebstrap [containerd]=containerd
  [/usr/lib/cni/bridge]=containernetworking-plugins [iptables]=iptables [conntrack]=conntrack
  [podman-compose]=podman-compose [/usr/lib/cni/dnsname]=golang-github-containernetworking-plugin-dnsname
)
declare -A group=(
  [core]="java curl"
  [services]="java curl mvn"
  [postgres]="/usr/lib/postgresql/15/bin/initdb openssl"
  [k8s]="kubectl openssl curl podman buildah runc mmdebstrap containerd /usr/lib/cni/bridge iptables conntrack"
  [containers]="podman buildah runc mmdebstrap containerd /usr/lib/cni/bridge iptables conntrack podman-compose /usr/lib/cni/dnsname"
  [bench]="java curl mvn javac wrk"
  [test]="${!package[*]}"
)
[ $# -gt 0 ] || set -- test
commands=()
for g in "$@"; do
  [ -n "${group[$g]:-}" ] || { echo "system_deps: no group '$g' (groups: ${!group[*]})" >&2; exit 2; }
  read -ra cmds <<< "${group[$g]}"
  commands+=("${cmds[@]}")
done
missing=()
for cmd in "${commands[@]}"; do
  if [[ "$cmd" == /* ]]; then [ -x "$cmd" ] && continue; else command -v "$cmd" > /dev/null && continue; fi
  [[ " ${missing[*]} " == *" ${package[$cmd]} "* ]] || missing+=("${package[$cmd]}")
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
