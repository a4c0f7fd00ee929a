#!/bin/bash
# With no router, ibv_get_device_list returns an empty list (no crash, no
# hang) and FFV_DEBUG says which path was tried and why it failed.
source "$(dirname "$0")/lib.sh"

rc=0
out=$(FFV_SOCKET=$FF_WORK/nothing.sock FFV_DEBUG=1 LD_PRELOAD=$LIBFFVERBS timeout 10 ibv_devices 2>&1) || rc=$?
echo "$out"
[ $rc -ne 124 ] || fail "ibv_devices hung"
{ [ $rc -le 128 ] || [ $rc -gt 192 ]; } || fail "ibv_devices crashed (rc $rc)"
grep -q "cannot connect to the router at $FF_WORK/nothing.sock: No such file or directory" <<<"$out" ||
  fail "FFV_DEBUG did not explain the failure"
grep -q ffvirt0 <<<"$out" && fail "a device was listed without a router"
pass "no router: empty device list and a clear reason"

rc=0
out=$(FFV_SOCKET=$FF_WORK/nothing.sock LD_PRELOAD=$LIBFFVERBS timeout 10 ibv_devinfo 2>&1) || rc=$?
[ $rc -ne 124 ] && { [ $rc -le 128 ] || [ $rc -gt 192 ]; } || fail "ibv_devinfo hung or crashed (rc $rc)"
grep -q "No IB devices found" <<<"$out" || { echo "$out"; fail "ibv_devinfo did not report no devices"; }
grep -q libffverbs <<<"$out" && fail "debug output printed without FFV_DEBUG"
pass "no router: ibv_devinfo reports no devices, quietly"
echo "2 passed, 0 failed"
