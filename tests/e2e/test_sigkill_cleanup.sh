#!/bin/bash
# A client killed with SIGKILL leaves no object behind in the router, as
# ffctl status shows; the router keeps serving.
source "$(dirname "$0")/lib.sh"
HOLD=$FF_BUILD/bin/ffv_hold

ff_start_router
ff_container c1 10.66.1.2
ff_in_container c1 default "$HOLD" 3 >"$FF_WORK/hold.out" 2>&1 &
FF_PIDS+=($!)
for _ in $(seq 100); do grep -q ready "$FF_WORK/hold.out" && break; sleep 0.05; done
grep -q ready "$FF_WORK/hold.out" || { cat "$FF_WORK/hold.out"; fail "holder did not start"; }

st=$(ff_status)
echo "$st"
grep -q 'program=ffv_hold vip=10.66.1.2 contexts=1 pds=3' <<<"$st" || fail "router does not show the client's objects"
pid=$(sed -n 's/.*client session=[0-9]* pid=\([0-9]*\) program=ffv_hold.*/\1/p' <<<"$st")
[ -n "$pid" ] || fail "no pid in ffctl status"
pass "ffctl shows the client (pid $pid, the router's view) with 1 context and 3 PDs"

kill -9 "$pid"
for _ in $(seq 100); do ff_status | grep -q 'total clients=0 objects=0' && break; sleep 0.05; done
st=$(ff_status)
echo "$st"
grep -q 'total clients=0 objects=0' <<<"$st" || fail "objects left behind after SIGKILL"
grep -q 'destroyed 4 objects' "$FF_WORK/router.log" || fail "router log does not record the teardown"
pass "after SIGKILL the router holds no object of the dead client"

out=$(ff_in_container c1 default ibv_devices)
grep -q ffvirt0 <<<"$out" || fail "router stopped serving after the kill"
pass "the router still serves new clients"
echo "3 passed, 0 failed"
