#!/bin/bash
# Two hosts, directly on their rxe0 (plain libibverbs, no router): the
# reference the routed runs are compared with, and proof that the two
# guests' devices reach each other. Prints perftest's numbers.
source "$(dirname "$0")/lib.sh"
gid=$FF_RXE_GID_INDEX

host_pair write_bw ib_write_bw -d rxe0 -x "$gid" -s 65536 -n 500 -F
pass "ib_write_bw directly between the hosts' rxe0"
host_pair send_lat ib_send_lat -d rxe0 -x "$gid" -s 2 -n 500 -F
pass "ib_send_lat directly between the hosts' rxe0"
host_pair rc_pingpong ibv_rc_pingpong -d rxe0 -g "$gid" -n 200 -s 4096
pass "ibv_rc_pingpong directly between the hosts' rxe0"
