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
meet done
