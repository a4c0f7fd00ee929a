#!/bin/bash
# Unmodified ibv_rc_pingpong between two containers (two network namespaces
# that share only the tenant's socket directory with the router).
source "$(dirname "$0")/lib.sh"
ff_start_router
ff_container_pair a 10.33.0.1 b 10.33.0.2

n=0
for args in "-g 0" "-g 0 -e" "-g 0 -s 16" "-g 0 -s 65536" "-g 0 -n 5000" "-g 0 -N" "-g 0 -e -s 4096"; do
  before=$(ff_bytes)
  # shellcheck disable=SC2086
  ff_pair a b 10.33.0.1 18515 default ibv_rc_pingpong $args
  grep -q "iters in" "$FF_WORK/client.log" || fail "ibv_rc_pingpong $args printed no result"
  size=$(sed -n 's/^\([0-9]*\) bytes in.*/\1/p' "$FF_WORK/client.log")
  moved=$(( $(ff_bytes) - before ))
  # ibv_rc_pingpong counts both directions in its byte total.
  [ "$moved" -ge "$size" ] || fail "ibv_rc_pingpong $args: router moved $moved bytes, expected >= $size"
  echo "PASS: ibv_rc_pingpong $args ($(grep 'iters in' "$FF_WORK/client.log")), router moved $moved bytes"
  n=$((n + 1))
done
ff_status | grep -q 'total clients=0 objects=0' || fail "objects left behind"
echo "$n passed, 0 failed"
