#!/bin/bash
# Two hosts, each with a router on its rxe0 (the verbs fabric), joined by
# the directory: unmodified programs in containers on different hosts talk
# device to device, their routers having agreed on every connection.
source "$(dirname "$0")/lib.sh"
host_router
host_container app 10.78.$FF_VM_HOST.1

# routed NAME CMD...: CMD in container app (tenant blue) on both hosts,
# host 1's serving.
routed() { PAIR_CONTAINER=app PAIR_TENANT=blue PAIR_SERVER=10.78.1.1 host_pair "$@"; }

before=$(ff_bytes)
routed rc_pingpong ibv_rc_pingpong -g 0 -n 200 -s 4096
[ "$(ff_bytes)" -gt "$before" ] || fail "ibv_rc_pingpong did not go through the router"
pass "ibv_rc_pingpong across the hosts through both routers"
routed rc_pingpong_e ibv_rc_pingpong -g 0 -n 200 -e
pass "ibv_rc_pingpong -e (completion events)"
routed rc_pingpong_64k ibv_rc_pingpong -g 0 -n 50 -s 65536
pass "ibv_rc_pingpong -s 65536"
routed uc_pingpong ibv_uc_pingpong -g 0 -n 200
pass "ibv_uc_pingpong"
routed srq_pingpong ibv_srq_pingpong -g 0 -n 100
pass "ibv_srq_pingpong"
for t in "ib_write_bw -s 65536 -n 200" "ib_read_bw -s 65536 -n 200" "ib_atomic_bw -n 200" \
  "ib_send_lat -s 2 -n 200" "ib_send_bw -q 4 -s 4096 -n 200" "ib_write_lat -s 2 -n 200"; do
  name=$(echo "$t" | tr ' ' _)
  # shellcheck disable=SC2086
  routed "$name" $t -x 0 -F
  pass "$t"
done
meet done
