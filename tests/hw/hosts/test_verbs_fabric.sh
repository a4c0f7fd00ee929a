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

routed crosshost "$FF_BUILD/bin/ffv_crosshost" -r  # rxe's statuses for a SEND longer than its receive
pass "ffv_crosshost: every RC operation and error status, every byte checked: $(tail -1 "$FF_WORK/crosshost.log")"
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
# Datagrams: each router asks the other for the destination QP before the
# first goes, the receiving router rewrites the GRH to virtual addresses.
routed ud_pingpong ibv_ud_pingpong -g 0 -n 200 -s 1024
pass "ibv_ud_pingpong -g 0"
for t in "ib_write_bw -s 65536 -n 200" "ib_read_bw -s 65536 -n 200" "ib_atomic_bw -n 200" \
  "ib_send_lat -s 2 -n 200" "ib_send_bw -q 4 -s 4096 -n 200" "ib_write_lat -s 2 -n 200" \
  "ib_send_bw -c UD -s 1024 -n 200" "ib_send_lat -c UD -s 2 -n 200"; do
  name=$(echo "$t" | tr ' ' _)
  # shellcheck disable=SC2086
  routed "$name" $t -x 0 -F
  pass "$t"
done

# rdma_cm across the hosts: the routers' CM messages travel on the links,
# the QPs' moves are asked of the far router as above.
ip=10.78.1.1
host_cm_pair rping rping -s -a $ip -C 50 -v -- rping -c -a $ip -C 50 -v -V
pass "rping -V across the hosts (rdma_cm)"
host_cm_pair ucmatose ucmatose -c 4 -C 20 -- ucmatose -s $ip -c 4 -C 20
pass "ucmatose: 4 connections across the hosts"
host_cm_pair rdma_server rdma_server -s $ip -- rdma_client -s $ip
pass "rdma_server / rdma_client across the hosts"
host_cm_pair udaddy udaddy -c 4 -C 50 -- udaddy -s $ip -c 4 -C 50
pass "udaddy: rdma_cm's UD ids across the hosts"
for t in "ib_send_bw" "ib_write_bw" "ib_read_bw"; do
  # -F: report even when perftest cannot calibrate its cycle counter (the
  # emulated CPUs' clocks are too noisy for its fit at times)
  # shellcheck disable=SC2086
  host_cm_pair "$t -R" $t -R -F -n 200 -- $t -R -F -n 200 $ip
  pass "$t -R across the hosts"
done
fi_msg=(fi_pingpong -p verbs -e msg -I 100 -S 4096)
host_cm_pair fi_pingpong "${fi_msg[@]}" -- "${fi_msg[@]}" $ip
pass "fi_pingpong -p verbs -e msg across the hosts (libfabric over rdma_cm)"

# Tenant red on host 2 learns blue's QP number, buffer and rkey on host 1
# and connects to that QP, at blue's address and at its own on host 1: its
# router must not give the device that connection (the device cannot tell
# tenants apart), so red's SEND and WRITE fail as toward no QP and blue's
# QP and memory see nothing; red's datagrams to blue's UD QP complete (as
# toward nobody) and never arrive.
host_container intruder 10.79.$FF_VM_HOST.1
if [ "$FF_VM_HOST" = 1 ]; then
  mkfifo "$FF_WORK/hold"
  ff_in_container app blue "$FF_BUILD/bin/ffv_isolation" target "$FF_WORK/target" <"$FF_WORK/hold" \
    >"$FF_WORK/target.log" 2>&1 &
  target=$!
  exec 7>"$FF_WORK/hold"
  for _ in $(seq 200); do [ -s "$FF_WORK/target" ] && break; sleep 0.05; done
  cp "$FF_WORK/target" /run/shared/target
  meet target
  meet intruded
  exec 7>&-
  wait $target || { cat "$FF_WORK/target.log"; fail "blue's QP or memory saw the other tenant"; }
  cat "$FF_WORK/target.log"
else
  meet target
  read -r qpn addr rkey ud_qpn </run/shared/target
  for vip in 10.78.1.1 10.79.1.1; do
    ff_in_container intruder red "$FF_BUILD/bin/ffv_isolation" intrude "$qpn" "$addr" "$rkey" $vip "$ud_qpn" ||
      { tail -5 "$FF_WORK/router.log"; fail "red reached blue's QP through $vip"; }
  done
  meet intruded
fi
pass "a tenant connecting to another's QP on the other host (its number, address and rkey known) reaches nothing"

# Host 1's router killed mid-transfer: its device QPs go with it, so host
# 2's program fails with an error completion (retries exhausted) instead of
# hanging; restarted, it links again and new connections work.
if [ "$FF_VM_HOST" = 1 ]; then
  ff_in_container app blue timeout 120 ibv_rc_pingpong -g 0 -n 100000000 >"$FF_WORK/long.log" 2>&1 &
  long=$!
  wait_tcp_listener 18515 "ffc-app-$$" $long || { cat "$FF_WORK/long.log"; fail "long pingpong (server)"; }
  meet long
  meet running
  kill -9 "$FF_ROUTER_PID"
  wait "$FF_ROUTER_PID" 2>/dev/null || true
  meet killed
  wait $long 2>/dev/null || true
  meet failed
  host_router_again
  meet restarted
else
  meet long
  ff_in_container app blue timeout 120 ibv_rc_pingpong -g 0 -n 100000000 10.78.1.1 >"$FF_WORK/long.log" 2>&1 &
  long=$!
  for _ in $(seq 100); do grep -q "remote address" "$FF_WORK/long.log" && break; sleep 0.1; done
  sleep 1
  meet running
  meet killed
  killed_at=$SECONDS
  rc=0
  wait $long || rc=$?
  cat "$FF_WORK/long.log"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "the pingpong with the killed router's host did not fail (rc $rc)"
  grep -q "Failed status" "$FF_WORK/long.log" || fail "no error completion: $(tail -3 "$FF_WORK/long.log")"
  echo "failed $((SECONDS - killed_at)) s after the router was killed"
  meet failed
  meet restarted
fi
pass "a router killed on one host: the program on the other fails with an error completion"
routed after_restart ibv_rc_pingpong -g 0 -n 100
pass "its restart: new connections across the hosts work"
meet done
