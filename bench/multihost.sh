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
ip netns exec "ffc-a-$$" "$PROBE" server 18600 >/dev/null 2>&1 &
probe=$!
ff_wait_listen a 18600

# Rounds alternate the routers and TCP: on a virtual machine whose vCPUs
# move between physical cores, one measurement of each taken minutes apart
# can give any ratio. Each row is the median round's ratio, with the range.
rounds=${MH_ROUNDS:-5}
bw=() lat=() zc=() uring=()
for _ in $(seq "$rounds"); do
  mh_pair alpha a beta b 10.50.1.1 18515 default ib_write_bw -s 65536 -n "$iters"
  write_bw=$(result | awk '{print $4}')   # BW average, MB/s
  stream=$(ip netns exec "ffc-b-$$" "$PROBE" stream 10.50.1.1 18600 65536 2 | awk '{print $5}')
  bw+=("$write_bw $stream")
  mh_pair alpha a beta b 10.50.1.1 18515 default ib_send_lat -s 2 -n "$iters"
  send_lat=$(result | awk '{print $5}')   # t_typical, us (one way: half a round trip)
  rtt=$(ip netns exec "ffc-b-$$" "$PROBE" rr 10.50.1.1 18600 2 "$iters" | awk '{print $4}')
  lat+=("$send_lat $rtt")
  # MSG_ZEROCOPY (issue 19 asked whether it wins here): the same stream
  # with zero-copy sends, and how many the kernel copied anyway.
  zc+=("$stream $(ip netns exec "ffc-b-$$" "$PROBE" stream-zc 10.50.1.1 18600 65536 2 | awk '{print $5, $12, $14}')")
  # io_uring (asked likewise): the stream as 4 sends in flight through a ring.
  uring+=("$stream $(ip netns exec "ffc-b-$$" "$PROBE" stream-uring 10.50.1.1 18600 65536 2 4 | awk '{print $8}')")
done
kill "$probe"; wait "$probe" 2>/dev/null || true

# median_row "a b ..." lines: the line whose a/b is the median, and the
# lowest and highest a/b, as "a b ... lo hi".
median_row() {
  printf '%s\n' "$@" | awk '{print $1 / $2, $0}' | sort -g |
    awk '{r[NR] = $1; l[NR] = $0} END {m = int((NR + 1) / 2); sub(/^[^ ]+ /, "", l[m]); print l[m], r[1], r[NR]}'
}

echo
echo "| measure (same two namespaces, $rounds alternating rounds, median round) | through the routers | plain TCP | ratio |"
echo "| --- | --- | --- | --- |"
median_row "${bw[@]}" | awk '{printf "| 64 KiB: ib_write_bw vs TCP stream | %.0f MB/s | %.0f MB/s | %.2f of TCP (%.2f–%.2f) |\n", $1, $2, $1 / $2, $3, $4}'
# Latency: one way through the routers against half the TCP round trip.
median_row "${lat[@]/%/ 0.5}" | awk '{h = $2 * $3; printf "| 2 B: ib_send_lat (one way) vs TCP request/response (RTT %.1f us, half) | %.2f us | %.2f us | %.2fx (%.2f–%.2fx) |\n", $2, $1, h, $1 / h, $4 / 0.5, $5 / 0.5}'
median_row "${zc[@]}" | awk '{printf "| 64 KiB TCP stream: MSG_ZEROCOPY sends vs plain (%d of %d sends copied by the kernel) | %.0f MB/s | %.0f MB/s | %.2f |\n", $3, $4, $2, $1, $2 / $1}'
median_row "${uring[@]}" | awk '{printf "| 64 KiB TCP stream: io_uring sends (4 in flight) vs plain | %.0f MB/s | %.0f MB/s | %.2f |\n", $2, $1, $2 / $1}'
echo
echo "($(nproc) cores, $iters iterations, $(date -u +%Y-%m-%d))"
