#!/bin/bash
# Per-tenant QoS across two hosts on the soft fabric (docs/PERFORMANCE.md):
# hosts alpha and beta (network namespaces, one router each, linked over
# TCP), tenants blue and red with a container on each host. Every WRITE
# goes from beta's container through both routers to alpha's: the requester
# is beta's router, which schedules the tenants' chunks on the link.
#   1. a cap: blue at 1 and 2 Gb/s, ib_write_bw's own average;
#   2. weights: both saturated (1 MiB WRITEs, 1024 in flight), 1:1 and 1:3,
#      their rates over 3 s (ffctl stats -w on beta) and Jain's index;
#   3. isolation (the Husky method, as bench/qos.sh): victim blue
#      (ib_write_bw 64 KiB, -t 1024) at its allocation, a quarter of its
#      saturated rate, alone and beside red's 1 MiB WRITE stream.
# Prints markdown tables. Needs root; builds Release first.
#
#   bench/qos_hosts.sh [SECONDS per run (default 4)]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh Release >/dev/null
export FF_BUILD=$PWD/build
source tests/e2e/multihost_lib.sh
source bench/qos_lib.sh
T=${1:-4}

mh_host alpha 10.99.0.1
mh_host beta 10.99.0.2
mh_container ba 10.50.1.1
mh_container bb 10.50.2.1
mh_container ra 10.51.1.1
mh_container rb 10.51.2.1
dir=$(mh_static_directory alpha:blue:10.50.1.0/24 beta:blue:10.50.2.0/24 alpha:red:10.51.1.0/24 \
  beta:red:10.51.2.0/24)
printf 'tenants:\n  - name: blue\n  - name: red\n' >"$FF_WORK/tenants.yaml"
mh_router alpha "$dir" --config "$FF_WORK/tenants.yaml"
mh_router beta "$dir" --config "$FF_WORK/tenants.yaml"
mh_wait_peers alpha 1
mh_wait_peers beta 1
# qos TENANT KEY VALUE...: on both routers (the requester, beta, enforces).
qos() { mh_ctl alpha qos "$@" && mh_ctl beta qos "$@"; }

# bw NAME TENANT PORT SIZE [perftest args...]: ib_write_bw for $T seconds in
# the background, server on alpha, client on beta.
bw() {
  local name=$1 tenant=$2 port=$3 size=$4 server=ba client=bb ip=10.50.1.1
  shift 4
  [ "$tenant" = blue ] || { server=ra client=rb ip=10.51.1.1; }
  FF_BG_SRUN=$FF_WORK/alpha FF_BG_CRUN=$FF_WORK/beta ff_bg_pair "$name" "$server" "$client" "$ip" "$port" \
    "$tenant" ib_write_bw -F -p "$port" -s "$size" -D "${D:-$T}" --report_gbits "$@"
}
field() { awk -v n="$1" '{ print $n }' <<<"$ff_result"; }

echo "## Caps across two hosts (blue alone, ib_write_bw 64 KiB, $T s)"
echo "| cap | ib_write_bw average |"
echo "| --- | --- |"
for cap in 1 2; do
  qos blue max_gbps "$cap" burst_kib 4096
  bw cap blue 18710 65536
  ff_bg_wait cap
  echo "| $cap Gb/s | $(field 4) Gb/s |"
done
qos blue max_gbps 0

echo
echo "## Weights across two hosts (both saturated: 1 MiB WRITEs, 1024 in flight; rates over 3 s)"
echo "| weights blue:red | blue | red | red / blue | Jain's index |"
echo "| --- | --- | --- | --- | --- |"
for w in "1 1" "1 3"; do
  read -r wb wr <<<"$w"
  qos blue weight "$wb"
  qos red weight "$wr"
  weights_row "$wb" "$wr" 18711 mh_ctl beta
done
qos blue weight 1
qos red weight 1

echo
echo "## Isolation across two hosts: victim blue (ib_write_bw 64 KiB, -t 1024) at a quarter of its saturated rate, attacker red's 1 MiB WRITE stream"
bw saturated blue 18713 65536 -t 1024
ff_bg_wait saturated
saturated=$(field 4)
allocation=$(awk -v s="$saturated" 'BEGIN { printf "%.2f", s / 4 }')
qos blue max_gbps "$allocation" burst_kib 4096
bw alone blue 18714 65536 -t 1024
ff_bg_wait alone
alone=$(field 4)
D=$((T + 2)) bw stream red 18715 1048576
sleep 0.5
bw victim blue 18716 65536 -t 1024
ff_bg_wait victim
with=$(field 4)
ff_bg_wait stream
echo "| victim saturated alone | allocation | victim alone | beside the stream | ratio | stream |"
echo "| --- | --- | --- | --- | --- | --- |"
awk -v s="$saturated" -v c="$allocation" -v a="$alone" -v w="$with" -v r="$(field 4)" \
  'BEGIN { printf "| %.2f Gb/s | %s Gb/s | %.2f Gb/s | %.2f Gb/s | %.2f | %.2f Gb/s |\n", s, c, a, w, w / a, r }'
echo
echo "($(nproc) cores, $T s per run, $(date -u +%Y-%m-%d))"
