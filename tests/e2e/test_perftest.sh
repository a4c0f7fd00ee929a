#!/bin/bash
# Unmodified perftest between two containers through the router, bytes
# counted by the router. Run once with the default (unknown) vendor_part_id,
# which takes perftest's ibv_post_send path, and once with a ConnectX id,
# which takes its ibv_wr_* path with inline data.
source "$(dirname "$0")/lib.sh"

ff_container_pair a 10.34.0.1 b 10.34.0.2
n=0
run() {
  local expect_bytes=$1
  shift
  local before after
  before=$(ff_bytes)
  ff_pair a b 10.34.0.1 18515 default "$@"
  after=$(ff_bytes)
  [ $((after - before)) -ge "$expect_bytes" ] ||
    fail "$*: the router moved $((after - before)) bytes, expected >= $expect_bytes"
  echo "PASS: $* ($(grep -E '^ +[0-9]+ +[0-9]+' "$FF_WORK/client.log" | tail -1 | tr -s ' ')) moved $((after - before)) B"
  n=$((n + 1))
}

for part in 65281 4123; do
  ff_start_router --vendor-part-id $part
  echo "== vendor_part_id $part: $(ff_in_container a default ibv_devinfo | grep vendor_part_id | tr -d '\t')"
  run $((200 * 65536)) ib_write_bw -n 200
  run $((200 * 65536)) ib_send_bw -n 200
  run $((200 * 65536)) ib_read_bw -n 200
  run $((200 * 8)) ib_atomic_bw -n 200
  run $((200 * 8)) ib_atomic_bw -n 200 -A CMP_AND_SWAP
  run $((2 * 1000 * 2)) ib_send_lat
  run $((2 * 1000 * 2)) ib_write_lat
  run $((1000 * 2)) ib_read_lat
  run $((4 * 200 * 65536)) ib_write_bw -n 200 -q 4
  run $((4 * 200 * 65536)) ib_send_bw -n 200 -q 4
  run $((200 * 65536)) ib_send_bw -n 200 -e
  run $((200 * 65536)) ib_read_bw -n 200 -e
  run $((200 * 8)) ib_atomic_bw -n 200 -e
  run $((100 * 8388608)) ib_write_bw -a -n 100
  run $((100 * 8388608)) ib_send_bw -a -n 100
  kill "$FF_ROUTER_PID"; wait "$FF_ROUTER_PID" || true; FF_ROUTER_PID=
done
echo "$n passed, 0 failed"
