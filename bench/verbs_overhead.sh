#!/bin/bash
# The verbs fabric's overhead on a real kernel RDMA device: in one boot of
# Debian's kernel with SoftRoCE under qemu (tests/hw/vm.sh), the same
# perftest runs directly on rxe0 and through the router on the verbs fabric
# (two processes each time), and the ratio is printed as a markdown table.
# Emulation (TCG) makes absolute numbers meaningless; the ratio is the point.
#
#   bench/verbs_overhead.sh [iterations (default 2000)]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${FF_RXE_DEV:-}" ]; then
  scripts/build.sh Release >/dev/null
  exec tests/hw/vm.sh --timeout 1200 -e "FF_ITERS=${1:-2000}" -- bash bench/verbs_overhead.sh
fi
# --- in the guest ---------------------------------------------------------------
export FF_BUILD=$PWD/build
source tests/e2e/lib.sh
gid=$FF_RXE_GID_INDEX
iters=${FF_ITERS:-2000}

# direct NAME CMD...: server and client on rxe0 in the guest's own namespace.
direct() {
  "$@" -d "$FF_RXE_DEV" -x "$gid" >"$FF_WORK/server.log" 2>&1 &
  local s=$!
  for _ in $(seq 200); do ss -Hltn "sport = :18515" | grep -q . && break; sleep 0.05; done
  "$@" -d "$FF_RXE_DEV" -x "$gid" 10.77.0.1 >"$FF_WORK/client.log" 2>&1 || { cat "$FF_WORK/client.log"; fail "direct $*"; }
  wait "$s"
}
# last result line of the client: columns of perftest's table
result() { grep -E '^ +[0-9]+ +[0-9]+' "$FF_WORK/client.log" | tail -1; }

direct ib_write_bw -s 65536 -n "$iters"
read -r _ _ _ bw_direct _ < <(result)
direct ib_send_lat -s 2 -n "$iters"
read -r _ _ _ _ lat_direct _ < <(result)
direct ib_send_lat -s 2 -n "$iters" -e
read -r _ _ _ _ elat_direct _ < <(result)

ff_start_router --fabric verbs --device "$FF_RXE_DEV"
ff_container_pair a 10.51.0.1 b 10.51.0.2
ff_pair a b 10.51.0.1 18515 default ib_write_bw -s 65536 -n "$iters"
read -r _ _ _ bw_router _ < <(result)
ff_pair a b 10.51.0.1 18515 default ib_send_lat -s 2 -n "$iters"
read -r _ _ _ _ lat_router _ < <(result)
ff_pair a b 10.51.0.1 18515 default ib_send_lat -s 2 -n "$iters" -e
read -r _ _ _ _ elat_router _ < <(result)

echo
echo "| test (rxe0 under qemu TCG, $iters iterations) | direct on rxe0 | through ffrouter (verbs fabric) | ratio |"
echo "| --- | --- | --- | --- |"
awk -v d="$bw_direct" -v r="$bw_router" 'BEGIN { printf "| ib_write_bw 64 KiB, BW average | %.1f MB/s | %.1f MB/s | %.2f of direct |\n", d, r, r / d }'
awk -v d="$lat_direct" -v r="$lat_router" 'BEGIN { printf "| ib_send_lat 2 B, t_typical (busy polling) | %.2f us | %.2f us | %.2fx direct |\n", d, r, r / d }'
awk -v d="$elat_direct" -v r="$elat_router" 'BEGIN { printf "| ib_send_lat 2 B -e, t_typical (completion events) | %.2f us | %.2f us | %.2fx direct |\n", d, r, r / d }'
