#!/bin/bash
# UCX (the transport under Open MPI's pml ucx and MPICH ch4:ucx) on the
# virtual device, between two containers: ucx_info lists rc_verbs and
# ud_verbs, and ucx_perftest completes tag_lat and put_bw over them; a UCP
# client/server connects by socket address through UCX's rdmacm connection
# manager (tests/tools/ucp_sockaddr.c: every byte checked).
source "$(dirname "$0")/lib.sh"
ff_start_router
ff_container_pair a 10.38.0.1 b 10.38.0.2
export UCX_TLS=rc_verbs,ud_verbs UCX_NET_DEVICES=ffvirt0:1

out=$(ff_in_container a default ucx_info -d)
grep -A2 "Transport: rc_verbs" <<<"$out" | grep -q "Device: ffvirt0:1" || { echo "$out"; fail "ucx_info lists no rc_verbs on ffvirt0:1"; }
grep -A2 "Transport: ud_verbs" <<<"$out" | grep -q "Device: ffvirt0:1" || fail "ucx_info lists no ud_verbs on ffvirt0:1"
pass "ucx_info -d lists rc_verbs and ud_verbs on ffvirt0:1"

n=1
ucx() {  # ucx "server args" "client args"
  local before
  before=$(ff_bytes)
  # shellcheck disable=SC2086
  ff_in_container a default timeout 60 ucx_perftest $1 >"$FF_WORK/server.log" 2>&1 &
  local spid=$!
  ff_wait_listen a 13337 || { cat "$FF_WORK/server.log"; fail "ucx_perftest server did not start"; }
  local rc=0
  # shellcheck disable=SC2086
  ff_in_container b default timeout 60 ucx_perftest 10.38.0.1 $2 >"$FF_WORK/client.log" 2>&1 || rc=$?
  wait "$spid" || true
  grep -q "^Final:" "$FF_WORK/client.log" && [ $rc -eq 0 ] || { tail -20 "$FF_WORK/client.log"; fail "ucx_perftest $2 (rc $rc)"; }
  [ "$(ff_bytes)" -gt "$before" ] || fail "ucx_perftest $2 did not go through the router"
  echo "PASS: ucx_perftest $2: $(grep '^Final:' "$FF_WORK/client.log" | tr -s ' ')"
  n=$((n + 1))
}
ucx "" "-t tag_lat -n 2000"
ucx "" "-t ucp_put_bw -s 65536 -n 2000"
ucx "-d ffvirt0:1 -x rc_verbs" "-d ffvirt0:1 -x rc_verbs -t put_bw -s 65536 -D zcopy -n 2000"
ucx "-d ffvirt0:1 -x ud_verbs" "-d ffvirt0:1 -x ud_verbs -t am_lat -n 2000"
grep -q "Connection manager: rdmacm" <<<"$out" || fail "ucx_info lists no rdmacm connection manager"
before=$(ff_status | sed -n 's/.* cm_requests=\([0-9]*\).*/\1/p')
ucp_sockaddr_pair a 10.38.0.1 "" b "" default
after=$(ff_status | sed -n 's/.* cm_requests=\([0-9]*\).*/\1/p')
[ "$after" -gt "$before" ] || fail "the UCP client/server did not connect through rdma_cm"
pass "UCP client/server by socket address over rdmacm (1000 x 4 KiB each way, bytes checked)"
n=$((n + 1))
echo "$n passed, 0 failed"
