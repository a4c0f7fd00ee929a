#!/bin/bash
# A hostile tenant (blue) abuses the protocol and its shared rings while an
# honest tenant (red) moves checked data through the same router between two
# containers. The router answers every abuse as documented, keeps serving,
# and the honest tenant's data arrives intact.
source "$(dirname "$0")/lib.sh"
ff_start_router --config "$(ff_tenants_config blue red)" --max-handles-per-tenant 2000
ff_container_pair a 10.39.0.1 b 10.39.0.2
ff_watch_status

# The honest tenant: rc_pingpong with --chk validates every received buffer.
# Long enough to overlap everything below; its timeout only catches a hang
# (under ASan on a busy 2-core machine 200000 round trips once took over 120 s).
ff_in_container a red timeout 270 ibv_rc_pingpong -g 0 -c -n 200000 -s 4096 >"$FF_WORK/server.log" 2>&1 &
honest=$!
ff_wait_listen a 18515 || fail "honest server did not start"
ff_in_container b red timeout 270 ibv_rc_pingpong -g 0 -c -n 200000 -s 4096 10.39.0.1 >"$FF_WORK/client.log" 2>&1 &
honest_client=$!

FF_HOSTILE_SOCKET=$FF_RUN/tenants/blue/ffrouter.sock FF_OTHER_SOCKET=$FF_RUN/tenants/red/ffrouter.sock \
  FF_ADMIN_SOCKET=$FF_RUN/admin.sock FF_ROUTER_PID=$FF_ROUTER_PID timeout 120 "$FF_BUILD/bin/ffv_hostile" || fail "hostile cases"

# Item 14 (registration moves the app's pages), through libffverbs in a blue
# container while red's traffic runs: a writer thread loses no store across
# registrations, MAP_SHARED memory is shared in place or refused (never
# decoupled). (A thousand regions holding few of the app's descriptors:
# test_verbs_device.sh; here blue's --max-handles-per-tenant would refuse them.)
ff_container c 10.39.0.3
ff_in_container c blue timeout 120 "$FF_BUILD/bin/verbs_device_test" \
  --gtest_filter='*WritesByOtherThreadsDuringRegistrationAreNeverLost*:*SharedMappingsAndHugePagesAreRefusedNotDecoupled*' \
  >"$FF_WORK/registration.log" 2>&1 || { tail -n 20 "$FF_WORK/registration.log"; fail "registration cases"; }
pass "registration: no write lost, MAP_SHARED shared or refused ($(grep -m1 'registrations,' "$FF_WORK/registration.log"))"

rc=0
wait "$honest_client" || rc=$?
wait "$honest" || rc=$?
[ $rc -eq 0 ] || { tail -n 5 "$FF_WORK/client.log" "$FF_WORK/server.log"; fail "the honest tenant failed (rc $rc)"; }
grep -q "200000 iters" "$FF_WORK/client.log" || fail "the honest tenant did not finish"
pass "the honest tenant moved 200000 x 4 KiB with every buffer checked ($(grep 'iters in' "$FF_WORK/client.log"))"
st=$(ff_status)
echo "$st" | grep -E "tenant|counters"
grep -q "tenant blue .*limit_refusals=[1-9]" <<<"$st" || fail "no limit refusals counted for the hostile tenant"
kill -0 "$FF_ROUTER_PID" || fail "the router died"
pass "the router survived and counted the hostile tenant's refusals"
ff_check_status_watch 1000
pass "ffctl status answered within 1 s throughout"
ff_router_report 256 64
pass "the router's memory, descriptors and CPU stayed bounded"
echo "5 passed, 0 failed"
