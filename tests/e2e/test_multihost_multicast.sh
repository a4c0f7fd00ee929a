#!/bin/bash
# UD multicast across hosts: a sender and three receivers in four
# containers, two receivers beside the sender on host alpha and one on host
# beta. Every receiver attached to the group gets every datagram (each byte,
# the GRH's destination the group), through its own router; the sender's
# router copies each datagram once to beta's router, which delivers it to
# its members. Then the same with rdma_cm's mckey (rdma_join_multicast):
# receivers on both hosts, the sender beside one of them.
source "$(dirname "$0")/multihost_lib.sh"
TOOL=$FF_BUILD/bin/ffv_mcast
GROUP=239.5.5.5
N=5

mh_host alpha 10.99.0.1
mh_host beta 10.99.0.2
mh_container a 10.50.1.1
mh_container c 10.50.1.2
mh_container d 10.50.1.3
mh_container b 10.50.2.1
dir=$(mh_static_directory alpha:default:10.50.1.0/24 beta:default:10.50.2.0/24)
mh_router alpha "$dir"
mh_router beta "$dir"
mh_wait_peers alpha 1
mh_wait_peers beta 1

# await FILE WORD WHAT: waits (10 s at most) for WORD in FILE, or fails saying WHAT.
await() {
  for _ in $(seq 200); do
    grep -q "$2" "$1" && return 0
    sleep 0.05
  done
  cat "$1"
  fail "$3"
}

declare -A pid
for r in alpha:c alpha:d beta:b; do
  host=${r%%:*} ctr=${r##*:}
  mh_in "$host" "$ctr" default timeout 60 "$TOOL" recv "$GROUP" "$N" >"$FF_WORK/recv-$ctr.log" 2>&1 &
  pid[$ctr]=$!
done
for ctr in c d b; do await "$FF_WORK/recv-$ctr.log" ready "receiver $ctr did not attach"; done
mh_in alpha a default timeout 60 "$TOOL" send "$GROUP" "$N" >"$FF_WORK/send.log" 2>&1 ||
  { cat "$FF_WORK/send.log"; fail "the sender failed"; }
for ctr in c d b; do
  wait "${pid[$ctr]}" || { cat "$FF_WORK/recv-$ctr.log"; fail "receiver $ctr: $(tail -1 "$FF_WORK/recv-$ctr.log")"; }
done
pass "multicast to $GROUP: $(cat "$FF_WORK/send.log"); c: $(tail -1 "$FF_WORK/recv-c.log"); d: $(tail -1 "$FF_WORK/recv-d.log"); b on beta: $(tail -1 "$FF_WORK/recv-b.log")"
# mckey: each receiver joins (the event's UD parameters address the
# group), waits for 10 messages; the sender joins and sends them (its
# output line-buffered: "joined" is the sign to start the sender).
for r in alpha:c:10.50.1.2 beta:b:10.50.2.1; do
  IFS=: read -r host ctr ip <<<"$r"
  mh_in "$host" "$ctr" default timeout 60 stdbuf -oL mckey -m 239.6.6.6 -b "$ip" -C 10 >"$FF_WORK/mckey-$ctr.log" 2>&1 &
  pid[$ctr]=$!
done
for ctr in c b; do await "$FF_WORK/mckey-$ctr.log" joined "mckey in $ctr did not join"; done
mh_in alpha a default timeout 60 mckey -m 239.6.6.6 -b 10.50.1.1 -s -C 10 >"$FF_WORK/mckey-send.log" 2>&1 ||
  { cat "$FF_WORK/mckey-send.log"; fail "the mckey sender failed"; }
for ctr in c b; do
  wait "${pid[$ctr]}" && grep -q "data transfers complete" "$FF_WORK/mckey-$ctr.log" ||
    { cat "$FF_WORK/mckey-$ctr.log"; fail "mckey receiver $ctr did not get its 10 messages"; }
done
pass "mckey (rdma_join_multicast): 10 messages to 239.6.6.6 from a reached c on alpha and b on beta"
for h in alpha beta; do
  mh_ctl "$h" status | grep -q 'total clients=0 objects=0' || fail "router $h: objects left behind"
done
