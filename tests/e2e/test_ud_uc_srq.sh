#!/bin/bash
# UD, UC and SRQ with unmodified programs between two containers.
source "$(dirname "$0")/lib.sh"
ff_start_router
ff_container_pair a 10.37.0.1 b 10.37.0.2

n=0
for args in "ibv_ud_pingpong -g 0" "ibv_ud_pingpong -g 0 -e" "ibv_ud_pingpong -g 0 -s 1024" \
            "ibv_uc_pingpong -g 0" "ibv_uc_pingpong -g 0 -e" "ibv_srq_pingpong -g 0" "ibv_srq_pingpong -g 0 -e"; do
  # shellcheck disable=SC2086
  ff_pair_moving a b 10.37.0.1 18515 default $args
  grep -q "iters in" "$FF_WORK/client.log" || fail "$args printed no result"
  echo "PASS: $args ($(grep 'iters in' "$FF_WORK/client.log")), router moved $FF_MOVED bytes"
  n=$((n + 1))
done
for args in "ib_send_bw -c UD -n 500" "ib_send_lat -c UD -n 500" "ib_send_bw -c UC -n 500" \
            "ib_write_bw -c UC -n 500" "ib_send_bw --use-srq -n 500" "ib_send_bw -c UD -q 4 -n 500"; do
  # shellcheck disable=SC2086
  ff_pair_moving a b 10.37.0.1 18515 default $args
  echo "PASS: $args ($(ff_perftest_result)), moved $FF_MOVED B"
  n=$((n + 1))
done
ff_status | grep -q 'total clients=0 objects=0' || fail "objects left behind"
echo "$n passed, 0 failed"
