#!/bin/bash
# rdma_cm across two hosts: each container's router resolves the other's
# virtual IP through the directory, and the handshake (REQ, REP, RTU, REJ,
# DREQ, DREP) goes between the routers over their link. Unmodified librdmacm
# programs, server on alpha and client on beta; then the conformance cases
# that only two routers have: nobody listening on the far host (REJECTED),
# the far peer killed (DISCONNECTED), the far router killed (DISCONNECTED,
# no hang). Afterwards neither router holds an object.
source "$(dirname "$0")/multihost_lib.sh"

mh_two_hosts

# cm_pair NAME SERVER_CMD -- CLIENT_CMD: the server in a (alpha), the client in b (beta).
cm_pair() { ff_cm_pair_in "$1" "$FF_WORK/alpha" a 10.50.1.1 "$FF_WORK/beta" b default "${@:2}"; }
n=0
ok() { pass "$* (across hosts)"; n=$((n + 1)); }

before=$(( $(mh_bytes alpha) + $(mh_bytes beta) ))
cm_pair "rping" rping -s -a 10.50.1.1 -C 100 -v -- rping -c -a 10.50.1.1 -C 100 -v -V
grep -q "rdma-ping-99" "$FF_WORK/client.log" || fail "rping: no 100th ping"
[ $(( $(mh_bytes alpha) + $(mh_bytes beta) )) -gt "$before" ] || fail "rping did not go between the routers"
ok "rping -C 100, verified by rping (-V)"

ff_cm_programs cm_pair ok 10.50.1.1

ucp_sockaddr_pair a 10.50.1.1 "$FF_WORK/alpha" b "$FF_WORK/beta" default
ok "UCP client/server by socket address over rdmacm"

# Nobody listens on that port of the far host: REJECTED, as a RoCE peer's CM
# says it (status 8, invalid service id).
mh_in beta b default timeout 10 rping -c -a 10.50.1.1 -p 9 -C 1 -v >"$FF_WORK/client.log" 2>&1 || true
grep -q "RDMA_CM_EVENT_REJECTED, error 8" "$FF_WORK/client.log" || fail "no REJECTED from the far host: $(cat "$FF_WORK/client.log")"
ok "a port nobody listens on, on the far host: REJECTED (8)"

# rping_connected HOST: starts an rping server in a (alpha) and a client in b
# (beta) that pings until stopped; returns once they exchange data. Sets
# srv, cli.
rping_connected() {
  mh_in alpha a default timeout 30 rping -s -a 10.50.1.1 -v >"$FF_WORK/server.log" 2>&1 &
  srv=$!
  for _ in $(seq 400); do mh_ctl alpha status | grep "program=rping" | grep -q "cm_ids=1" && break; sleep 0.05; done
  sleep 0.3  # from its id to rdma_listen is a few requests more
  mh_in beta b default timeout 30 rping -c -a 10.50.1.1 -C 100000000 >"$FF_WORK/client.log" 2>&1 &
  cli=$!
  for _ in $(seq 200); do grep -q "rdma-ping-10:" "$FF_WORK/server.log" && break; sleep 0.05; done
  grep -q "rdma-ping-10:" "$FF_WORK/server.log" || fail "rping never got going: $(tail -3 "$FF_WORK/client.log")"
}

# The far peer killed while connected: the server gets DISCONNECTED and does not hang.
rping_connected
victim=$(mh_ctl beta status | grep "program=rping" | sed -n 's/.* pid=\([0-9]*\).*/\1/p' | head -1 || true)
[ -n "$victim" ] || fail "the rping client is not among beta's router's clients"
kill -9 "$victim"
wait "$cli" 2>/dev/null || true
rc=0
wait "$srv" 2>/dev/null || rc=$?
[ $rc -ne 124 ] || fail "rping's server hung after its far client was killed"
# The server learns it from DISCONNECTED (the far router's DREQ), or, on a
# loaded machine where both routers' control threads lag behind the data
# path, from its READ toward the gone QP failing once its retries ran out
# (rping then stops in its ERROR state, 11, before it reads the event): as a
# RoCE server would when the DREQ comes late. Either way, no hang.
if grep -q "DISCONNECT EVENT" "$FF_WORK/server.log"; then
  ok "the far peer killed: DISCONNECTED, no hang"
elif grep -q "state 11" "$FF_WORK/server.log"; then
  ok "the far peer killed: the server's READ failed before DISCONNECTED came (loaded machine), no hang"
else
  fail "no DISCONNECTED for the killed client's peer (rping -s exit status $rc; it said: $(grep -v 'ping data' "$FF_WORK/server.log" | tail -5 | tr '\n' ' '))"
fi

for h in alpha beta; do
  for _ in $(seq 100); do mh_ctl "$h" status | grep -q 'total clients=0 objects=0' && break; sleep 0.05; done
  mh_ctl "$h" status | grep -q 'total clients=0 objects=0' || { mh_ctl "$h" status; fail "router $h: objects left behind"; }
done
ok "no object left on either router"

# The far router killed: its clients are gone with it, and the server's
# connection ends (DISCONNECTED) when the link goes, not never.
rping_connected
kill -9 "${FF_HOST_ROUTER[beta]}"
wait "${FF_HOST_ROUTER[beta]}" 2>/dev/null || true
unset 'FF_HOST_ROUTER[beta]'
rc=0
wait "$srv" 2>/dev/null || rc=$?
[ $rc -ne 124 ] || fail "rping's server hung after the far router was killed"
grep -qE "DISCONNECT EVENT|completion failed|cq completion" "$FF_WORK/server.log" ||
  fail "rping's server saw nothing of its far router's death: $(tail -3 "$FF_WORK/server.log")"
wait "$cli" 2>/dev/null || true
ok "the far router killed: the server's connection ends, no hang"
echo "$n passed, 0 failed"
