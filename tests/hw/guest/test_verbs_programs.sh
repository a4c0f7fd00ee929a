#!/bin/bash
# In the guest (tests/hw/vm.sh): unmodified verbs programs, two processes in
# two containers, through the router on the verbs fabric over rxe0.
source "$(dirname "$0")/../../e2e/lib.sh"
# A device that is not there, or a GID index that is not usable: a clear
# startup error (exit 2) naming what exists.
for bad in "--device nosuch0" "--device $FF_RXE_DEV --gid-index 200"; do
  rc=0
  # shellcheck disable=SC2086
  "$FFROUTER" --run-dir "$FF_WORK/bad" --fabric verbs $bad >"$FF_WORK/out" 2>&1 || rc=$?
  [ $rc -eq 2 ] || { cat "$FF_WORK/out"; fail "ffrouter --fabric verbs $bad: exit $rc, want 2"; }
  grep -E "found: $FF_RXE_DEV|no usable GID" "$FF_WORK/out" || fail "no clear error for $bad"
done
pass "a missing device or GID index is a clear startup error"
ff_start_router --fabric auto
ff_status | grep -q "fabric: verbs" || fail "--fabric auto did not pick $FF_RXE_DEV"
kill "$FF_ROUTER_PID"; wait "$FF_ROUTER_PID" || true
pass "--fabric auto picks the device"
ff_start_router --fabric verbs --device "$FF_RXE_DEV"
ff_container_pair a 10.50.0.1 b 10.50.0.2
n=0
run() {
  local port=$1
  shift
  ff_pair a b 10.50.0.1 "$port" default "$@"
  pass "$*"
  n=$((n + 1))
}
before=$(ff_bytes)
run 18515 ibv_rc_pingpong -g 0 -n 200
run 18515 ibv_rc_pingpong -g 0 -n 200 -e
run 18515 ibv_rc_pingpong -g 0 -n 50 -s 65536
run 18515 ibv_ud_pingpong -g 0 -n 200 -s 1024
run 18515 ibv_srq_pingpong -g 0 -n 200
run 18515 ibv_srq_pingpong -g 0 -n 100 -e
run 18515 ibv_uc_pingpong -g 0 -n 200
run 18515 ib_write_bw -n 500 -s 65536
run 18515 ib_read_bw -n 500 -s 65536
run 18515 ib_send_lat -n 500 -s 2
run 18515 ib_atomic_bw -n 500
run 18515 ib_send_bw -n 500 -q 4
after=$(ff_bytes)
[ "$after" -gt "$before" ] || fail "the router's byte counter did not move ($before -> $after)"
st=$(ff_status)
echo "$st" | grep counters
grep -q "fabric: verbs" <<<"$st" || fail "the router is not on the verbs fabric"
echo "$n passed, 0 failed"
