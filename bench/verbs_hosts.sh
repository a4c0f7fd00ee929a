#!/bin/bash
# The verbs fabric across two hosts: in one boot of two guests (each with
# Debian's kernel and rxe0 on its own NIC, tests/hw/vm.sh --hosts 2), the
# same perftest runs directly between the two devices and between two
# containers through both routers (--fabric verbs, joined by a directory),
# and the ratios are printed as a markdown table. Emulation (TCG) makes
# absolute numbers meaningless; the ratio is what the routers add.
#
#   bench/verbs_hosts.sh [iterations (default 2000)] [ffrouter args...]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${FF_VM_HOST:-}" ]; then
  scripts/build.sh Release >/dev/null
  exec tests/hw/vm.sh --timeout 1500 --hosts 2 -e "FF_ITERS=${1:-2000}" -- bash bench/verbs_hosts.sh "${@:2}"
fi
# --- in both guests ----------------------------------------------------------------
export FF_BUILD=$PWD/build
source tests/hw/hosts/lib.sh
iters=${FF_ITERS:-2000}
bw=(ib_write_bw -s 65536 -n "$iters" -F)
lat=(ib_send_lat -s 2 -n "$iters" -F)
host_pair direct_bw "${bw[@]}" -d rxe0 -x "$FF_RXE_GID_INDEX"
host_pair direct_lat "${lat[@]}" -d rxe0 -x "$FF_RXE_GID_INDEX"
host_router "$@"
host_container app "10.78.$FF_VM_HOST.1"
routed() { PAIR_CONTAINER=app PAIR_TENANT=blue PAIR_SERVER=10.78.1.1 host_pair "$@"; }
routed routed_bw "${bw[@]}" -x 0
routed routed_lat "${lat[@]}" -x 0
meet done
[ "$FF_VM_HOST" = 2 ] || exit 0
# COLUMN of the client's last result line in NAME's log.
column() { grep -E '^ *[0-9]+ +[0-9]+ ' "$FF_WORK/$1.log" | tail -1 | awk -v c="$2" '{print $c}'; }
d_bw=$(column direct_bw 4) r_bw=$(column routed_bw 4) d_lat=$(column direct_lat 5) r_lat=$(column routed_lat 5)
echo
echo "| test ($iters iterations) | directly between the devices | through both routers | ratio |"
echo "| --- | --- | --- | --- |"
echo "| ib_write_bw 64 KiB, BW average | $d_bw MB/s | $r_bw MB/s | $(echo "scale=2; $r_bw / $d_bw" | bc) of direct |"
echo "| ib_send_lat 2 B, t_typical | $d_lat µs | $r_lat µs | $(echo "scale=2; $r_lat / $d_lat" | bc)x direct |"
