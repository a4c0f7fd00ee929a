#!/bin/bash
# Programs that reach libibverbs through dlopen, as NCCL does (dlopen of
# libibverbs.so or libibverbs.so.1, then dlvsym(handle, name,
# "IBVERBS_1.1")), go through the router like any other: the shim's dlopen
# gives them the shim (tests/tools/ffv_dlopen.c never links libibverbs).
# Every other dlopen keeps glibc's behaviour, the caller's RUNPATH included.
source "$(dirname "$0")/lib.sh"
ff_start_router
ff_container a 10.46.0.1
before=$(ff_bytes)
ff_in_container a default "$FF_BUILD/bin/ffv_dlopen" >"$FF_WORK/dlopen.log" 2>&1 ||
  { cat "$FF_WORK/dlopen.log"; fail "ffv_dlopen through the router"; }
grep -q "dlopen ping-pong: 100 round trips" "$FF_WORK/dlopen.log" || { cat "$FF_WORK/dlopen.log"; fail "no ping-pong"; }
after=$(ff_bytes)
# 200 sends and one WRITE of 4 KiB went through the router's counters.
[ $((after - before)) -ge $((201 * 4096)) ] || fail "the router moved $((after - before)) B, not the program's 823296"
pass "dlopen(libibverbs.so) + dlvsym(IBVERBS_1.1): an RC ping-pong and a WRITE through the router ($((after - before)) B)"
grep -q "librdmacm.so.1: rdma_create_event_channel resolved" "$FF_WORK/dlopen.log" || fail "librdmacm through dlopen"
pass "dlopen(librdmacm.so.1) + dlvsym(RDMACM_1.0) resolves the shim's rdma_cm"
if [[ $LIBFFVERBS == *libasan* ]]; then
  # ASan's own dlopen interceptor calls glibc's from libasan, so under it
  # no preloaded dlopen can keep the caller's RUNPATH (the plain run below
  # checks the program itself; the Release run checks the shim).
  echo "SKIP: RUNPATH under the shim: ASan's dlopen interceptor loses it whatever the shim does"
else
  grep -q "RUNPATH plugin: loaded" "$FF_WORK/dlopen.log" || fail "the program's own plugin did not load under the shim"
  pass "a plugin found through the program's own RUNPATH still loads with the shim preloaded"
fi

# Without the shim the same program reaches the host's libibverbs (no
# device here: it fails at ibv_get_device_list, after its plugin loaded).
rc=0
"$FF_BUILD/bin/ffv_dlopen" >"$FF_WORK/plain.log" 2>&1 || rc=$?
grep -q "RUNPATH plugin: loaded" "$FF_WORK/plain.log" || { cat "$FF_WORK/plain.log"; fail "without the shim"; }
pass "without the shim: the same program loads its plugin and the host's library (exit $rc)"
echo "4 passed, 0 failed"
