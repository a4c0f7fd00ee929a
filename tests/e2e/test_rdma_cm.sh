#!/bin/bash
# rdma_cm on virtual IPs, one router: the conformance cases
# (tests/integration/rdma_cm_test.cc, 1000 connect/disconnect cycles among
# them), then unmodified librdmacm programs between two containers (rping
# with its own data check, ucmatose with several connections, udaddy,
# rdma_server/rdma_client, perftest -R incl. UD, libfabric's fi_pingpong),
# then two tenants that share an
# address and a port: neither reaches the other's listener. Afterwards the
# router holds no object; killed, its listeners get DEVICE_REMOVAL.
source "$(dirname "$0")/lib.sh"
# FF_ROUTER_ARGS selects the fabric (tests/hw runs this on the verbs fabric).
# shellcheck disable=SC2086
ff_start_router --config "$(ff_tenants_config blue red)" ${FF_ROUTER_ARGS:-}
ff_container_pair a 10.36.0.1 b 10.36.0.2

ff_in_container a blue env FF_CM_ADDR=10.36.0.1 FF_CM_CYCLES="${FF_CM_CYCLES:-1000}" timeout 600 "$FF_BUILD/bin/rdma_cm_test" ||
  fail "rdma_cm conformance"
pass "rdma_cm conformance (${FF_CM_CYCLES:-1000} connect/disconnect cycles)"

# cm_pair NAME SERVER_CMD -- CLIENT_CMD: the server in a, the client in b.
cm_pair() { ff_cm_pair_in "$1" "" a 10.36.0.1 "" b blue "${@:2}"; }

before=$(ff_bytes)
cm_pair "rping" rping -s -a 10.36.0.1 -C 100 -v -- rping -c -a 10.36.0.1 -C 100 -v -V
grep -q "rdma-ping-99" "$FF_WORK/client.log" || fail "rping: no 100th ping"
[ "$(ff_bytes)" -gt "$before" ] || fail "rping did not go through the router"
pass "rping -C 100, verified by rping (-V)"

ff_cm_programs cm_pair pass 10.36.0.1

# rsockets are not served: rstream says so and exits, it does not crash.
rc=0
ff_in_container b blue timeout 10 rstream -s 10.36.0.1 -C 1 >"$FF_WORK/client.log" 2>&1 || rc=$?
# (not 0, not timeout's 124, not 128+signal)
[ $rc -ne 0 ] && [ $rc -ne 124 ] && { [ $rc -lt 129 ] || [ $rc -gt 159 ]; } ||
  fail "rstream: exit status $rc (expected a clean failure): $(tail -3 "$FF_WORK/client.log")"
grep -q "rsocket is not served through the router" "$FF_WORK/client.log" || fail "rstream: no reason given: $(tail -3 "$FF_WORK/client.log")"
pass "rstream (rsockets) fails cleanly with ENOSYS and says why"

# A peer killed while connected: the other side gets DISCONNECTED (its QP
# flushed) and goes on, no hang.
ff_in_container a blue timeout 30 rping -s -a 10.36.0.1 -v >"$FF_WORK/server.log" 2>&1 &
srv=$!
for _ in $(seq 400); do ff_status | grep "program=rping" | grep -q "cm_ids=1" && break; sleep 0.05; done
ff_in_container b blue timeout 30 rping -c -a 10.36.0.1 -C 100000000 >"$FF_WORK/client.log" 2>&1 &
cli=$!
for _ in $(seq 200); do grep -q "rdma-ping-10:" "$FF_WORK/server.log" && break; sleep 0.05; done
grep -q "rdma-ping-10:" "$FF_WORK/server.log" || fail "rping never got going"
victim=$(ff_status | grep "program=rping vip=10.36.0.2" | sed -n 's/.* pid=\([0-9]*\).*/\1/p' | head -1 || true)
[ -n "$victim" ] || fail "the rping client is not among the router's clients"
kill -9 "$victim"
wait "$cli" 2>/dev/null || true
rc=0
wait "$srv" 2>/dev/null || rc=$?  # rping's server may say its client went wrong: only a hang fails
[ $rc -ne 124 ] || fail "rping's server hung after its client was killed"
# The server learns it from DISCONNECTED, or from the work it had posted
# toward the killed client's QP failing (the router fails it at once, where
# a device would retry for its timeouts first): rping stops on that error in
# its ERROR state, 11, and may exit before its CM thread reads the event
# (seen once in CI, under ASan on a loaded machine). DISCONNECTED itself is
# checked by rdma_cm_test (Cm.APeerThatGoesAwayIsDisconnected). Either way,
# no hang. (The whole log on failure: rping's stdout is buffered, and a line
# of its stderr can land inside a "ping data" line.)
grep -qE "DISCONNECT EVENT|state 11" "$FF_WORK/server.log" ||
  fail "the killed client's peer learnt nothing of it (rping -s exit status $rc; it said: $(tail -c 600 "$FF_WORK/server.log" | tr '\n' ' '))"
pass "a peer killed mid-transfer: the other side gets DISCONNECTED (or its work toward the peer fails) and does not hang"

# Red has a container with blue's address: dialing it reaches red's own
# (absent) listener, never blue's; and red cannot dial blue's other address.
ff_container c 10.36.0.1
ff_in_container a blue timeout 20 rping -s -a 10.36.0.1 -C 1 >"$FF_WORK/blue.log" 2>&1 &
blue=$!
for _ in $(seq 400); do ff_status | grep "program=rping" | grep -q "cm_ids=1" && break; sleep 0.05; done
out=$(ff_in_container c red timeout 10 rping -c -a 10.36.0.1 -C 1 2>&1) && fail "red connected to blue's listener: $out"
grep -q "REJECTED" <<<"$out" || fail "red's connect to its own address: expected REJECTED, got: $out"
out=$(ff_in_container c red timeout 10 rping -c -a 10.36.0.2 -C 1 2>&1) && fail "red reached blue's address: $out"
grep -qE "ADDR_ERROR|resolve|error" <<<"$out" || fail "red's connect to blue's address: expected an address error, got: $out"
# Blue's listener was there all along: blue's own client gets through.
ff_in_container b blue timeout 10 rping -c -a 10.36.0.1 -C 1 >"$FF_WORK/client.log" 2>&1 || fail "blue's own client: $(tail -3 "$FF_WORK/client.log")"
wait "$blue" || fail "blue's rping server: $(tail -3 "$FF_WORK/blue.log")"
pass "a tenant never reaches another tenant's listener, on the same address and port or another"

for _ in $(seq 100); do ff_status | grep -q 'total clients=0 objects=0' && break; sleep 0.05; done
ff_status | grep -q 'total clients=0 objects=0' || { ff_status; fail "objects left behind"; }

# The router goes away under a waiting server: DEVICE_REMOVAL, not a hang.
ff_in_container a blue timeout 20 rping -s -a 10.36.0.1 >"$FF_WORK/removal.log" 2>&1 &
waiting=$!
for _ in $(seq 400); do ff_status | grep "program=rping" | grep -q "cm_ids=1" && break; sleep 0.05; done
ff_status | grep "program=rping" | grep -q "cm_ids=1" || fail "rping -s never listened: $(cat "$FF_WORK/removal.log")"
sleep 0.5  # from its id to rdma_listen is a few requests more
kill -9 "$FF_ROUTER_PID"
FF_ROUTER_PID=
wait "$waiting" && fail "rping went on without its router"
grep -q "device removal" "$FF_WORK/removal.log" || fail "no DEVICE_REMOVAL: $(cat "$FF_WORK/removal.log")"
pass "a listener whose router goes away gets DEVICE_REMOVAL"
echo "20 passed, 0 failed"
