#!/bin/bash
# End-to-end numbers: unmodified perftest between two containers through
# ffrouter (soft fabric), with the machine's floors measured in the same run.
# Prints a markdown table. Needs root; builds Release first.
#
#   bench/perftest_table.sh [iterations-for-latency (default 10000)]
# Bandwidth rows run for BW_SECONDS (default 2) each (perftest -D): a fixed
# 5000 iterations of 64 bytes were under a millisecond, too short to mean
# anything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh Release >/dev/null
export FF_BUILD=$PWD/build
source tests/e2e/lib.sh
LAT_ITERS=${1:-10000}

eval "$("$FF_BUILD/bin/floors")"
ff_start_router
ff_container_pair a 10.36.0.1 b 10.36.0.2

rows=()
lat() {  # lat TEST SIZE
  ff_pair a b 10.36.0.1 18515 default "$1" -s "$2" -n "$LAT_ITERS"
  # columns: bytes iters t_min t_max t_typical t_avg t_stdev p99 p99.9
  read -r _ _ _ _ typ _ _ p99 _ < <(grep -E '^ +[0-9]+ +[0-9]+' "$FF_WORK/client.log" | tail -1)
  rows+=("| $1 | $2 B | 1 | p50 ${typ} µs, p99 ${p99} µs | | |")
}
bw() {  # bw TEST SIZE QPS
  ff_pair a b 10.36.0.1 18515 default "$1" -s "$2" -q "$3" -D "${BW_SECONDS:-2}"
  read -r _ _ _ avg rate < <(grep -E '^ +[0-9]+ +[0-9]+' "$FF_WORK/client.log" | tail -1)
  gbps=$(awk -v m="$avg" 'BEGIN { printf "%.1f", m * 8 / 1000 }')
  rows+=("| $1 | $2 B | $3 | | ${gbps} Gb/s | $(awk -v r="$rate" 'BEGIN{printf "%.2f", r}') Mmsg/s |")
}

lat ib_write_lat 2
lat ib_send_lat 2
lat ib_send_lat 4096
for q in 1 4; do
  for size in 64 4096 65536; do
    bw ib_write_bw "$size" "$q"
    bw ib_send_bw "$size" "$q"
  done
done

echo "Floors measured in this run: memcpy 4 KiB ${memcpy_4KiB_GBps} GB/s ($(awk -v g="$memcpy_4KiB_GBps" 'BEGIN{printf "%.0f", g*8}') Gb/s), memcpy 64 KiB ${memcpy_64KiB_GBps} GB/s ($(awk -v g="$memcpy_64KiB_GBps" 'BEGIN{printf "%.0f", g*8}') Gb/s), cross-core cache-line round trip ${cacheline_rtt_ns} ns."
echo
echo "| test | size | QPs | latency | bandwidth | message rate |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
