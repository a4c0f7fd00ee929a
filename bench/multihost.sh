#!/bin/bash
# Cross-host cost of the routers: two hosts (network namespaces), one router
# each, a container on each, joined like tests/e2e/test_multihost_*.sh. In
# one run, between the same two containers:
#   * ib_write_bw 64 KiB and ib_send_lat 2 B through both routers;
#   * a plain TCP stream (64 KiB writes) and a TCP request/response (2 B)
#     with tcp_probe, straight over the containers' own network.
# Prints a markdown table with the ratios. FF_LINK_SECURITY=psk (or cert):
# the routers' links over TLS 1.3 (tests/e2e/multihost_lib.sh).
#   bench/multihost.sh [iterations (default 5000)]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh Release >/dev/null
export FF_BUILD=$PWD/build
iters=${1:-5000}
source tests/e2e/multihost_lib.sh
PROBE=$FF_BUILD/bin/tcp_probe

mh_two_hosts

result() { grep -E '^ +[0-9]+ +[0-9]+' "$FF_WORK/client.log" | tail -1; }
mh_pair alpha a beta b 10.50.1.1 18515 default ib_write_bw -s 65536 -n "$iters"
write_bw=$(result | awk '{print $4}')   # BW average, MB/s
mh_pair alpha a beta b 10.50.1.1 18515 default ib_send_lat -s 2 -n "$iters"
send_lat=$(result | awk '{print $5}')   # t_typical, us (one way: half a round trip)

ip netns exec "ffc-a-$$" "$PROBE" server 18600 >/dev/null 2>&1 &
probe=$!
ff_wait_listen a 18600
stream=$(ip netns exec "ffc-b-$$" "$PROBE" stream 10.50.1.1 18600 65536 3 | awk '{print $5}')
rtt=$(ip netns exec "ffc-b-$$" "$PROBE" rr 10.50.1.1 18600 2 "$iters" | awk '{print $4}')
kill "$probe"; wait "$probe" 2>/dev/null || true
half=$(awk -v r="$rtt" 'BEGIN {printf "%.2f", r / 2}')

echo
echo "| measure (same two namespaces, one run) | through the routers | plain TCP | ratio |"
echo "| --- | --- | --- | --- |"
awk -v a="$write_bw" -v b="$stream" 'BEGIN {printf "| 64 KiB: ib_write_bw vs TCP stream | %.0f MB/s | %.0f MB/s | %.2f of TCP |\n", a, b, a / b}'
awk -v a="$send_lat" -v b="$half" -v r="$rtt" 'BEGIN {printf "| 2 B: ib_send_lat (one way) vs TCP request/response (RTT %.1f us, half) | %.2f us | %.2f us | %.2fx |\n", r, a, b, a / b}'
echo
echo "($(nproc) cores, $iters iterations, $(date -u +%Y-%m-%d))"
