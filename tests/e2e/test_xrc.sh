#!/bin/bash
# XRC with unmodified programs between two containers (soft fabric):
# ibv_xsrq_pingpong (XRC domains on a file, XRC SRQs, send and receive QPs)
# and perftest's XRC connection type.
source "$(dirname "$0")/lib.sh"
ff_start_router
ff_container_pair a 10.39.0.1 b 10.39.0.2

n=0
for args in "ibv_xsrq_pingpong -g 0" "ibv_xsrq_pingpong -g 0 -e -n 200"; do
  # shellcheck disable=SC2086
  ff_pair_moving a b 10.39.0.1 18515 default $args
  [ "$(grep -c '^success' "$FF_WORK/client.log" "$FF_WORK/server.log" | awk -F: '{s += $2} END {print s}')" -eq 2 ] ||
    { cat "$FF_WORK/server.log" "$FF_WORK/client.log"; fail "$args did not succeed on both sides"; }
  echo "PASS: $args, router moved $FF_MOVED bytes"
  n=$((n + 1))
done
# Two clients, one server: the server answers each client through the
# other's connection (its send QP reaches the other client's receive QP,
# which delivers to this client's SRQ: their processes share the XRC domain
# of /tmp/xrc_domain), so every message crosses processes inside a domain.
ff_in_container a default timeout 120 ibv_xsrq_pingpong -g 0 -c 2 -n 100 >"$FF_WORK/server.log" 2>&1 &
server=$!
ff_wait_listen a 18515 || fail "the two-client server did not start"
ff_in_container b default timeout 120 ibv_xsrq_pingpong -g 0 -n 100 10.39.0.1 >"$FF_WORK/client1.log" 2>&1 &
client1=$!
two_client_logs() { tail -n 5 "$FF_WORK/server.log" "$FF_WORK/client1.log" "$FF_WORK/client2.log"; }
ff_in_container b default timeout 120 ibv_xsrq_pingpong -g 0 -n 100 10.39.0.1 >"$FF_WORK/client2.log" 2>&1 ||
  { two_client_logs; fail "the second client failed"; }
wait "$client1" || { two_client_logs; fail "the first client failed"; }
wait "$server" || { two_client_logs; fail "the two-client server failed"; }
grep -q '^success' "$FF_WORK/server.log" || fail "the two-client server did not succeed"
echo "PASS: ibv_xsrq_pingpong -c 2 with two clients"
n=$((n + 1))

for args in "ib_send_bw -c XRC -n 500" "ib_send_bw -c XRC --use-srq -q 4 -n 500" "ib_write_bw -c XRC -n 500" \
            "ib_read_bw -c XRC -n 200" "ib_atomic_bw -c XRC -n 200" "ib_send_lat -c XRC -n 200"; do
  # shellcheck disable=SC2086
  ff_pair_moving a b 10.39.0.1 18515 default $args
  echo "PASS: $args ($(ff_perftest_result)), moved $FF_MOVED B"
  n=$((n + 1))
done
ff_status | grep -q 'total clients=0 objects=0' || fail "objects left behind"
echo "$n passed, 0 failed"
