#!/bin/bash
# ffverbs.h as apps use it: one binary (tests/tools/ffv_zero_copy.c) gets the
# router's zero-copy arena from ffv_malloc when libffverbs is preloaded and
# ordinary memory when not; installed, the header and ffverbs.pc build it.
source "$(dirname "$0")/lib.sh"
ff_start_router
ff_container a 10.45.0.1
ff_in_container a default "$FF_BUILD/bin/ffv_zero_copy" >"$FF_WORK/with.log" 2>&1 ||
  { cat "$FF_WORK/with.log"; fail "ffv_zero_copy through the router"; }
grep -q "zero-copy: yes" "$FF_WORK/with.log" || { cat "$FF_WORK/with.log"; fail "ffv_malloc did not use the arena"; }
pass "with libffverbs: ffv_malloc buffers come from the arena and an RDMA WRITE between them checks out"

rc=0
"$FF_BUILD/bin/ffv_zero_copy" >"$FF_WORK/without.log" 2>&1 || rc=$?
grep -q "zero-copy: no" "$FF_WORK/without.log" || { cat "$FF_WORK/without.log"; fail "without the shim"; }
# 2: this host has no RDMA device (the usual case here); 0: it has one.
[ $rc = 2 ] || [ $rc = 0 ] || { cat "$FF_WORK/without.log"; fail "without the shim it exited $rc"; }
pass "without libffverbs: the same binary runs on ordinary memory (exit $rc)"

src=$(cd "$(dirname "$0")/../.." && pwd)
cmake --install "$FF_BUILD" --prefix "$FF_WORK/prefix" >"$FF_WORK/install.log" ||
  { cat "$FF_WORK/install.log"; fail "cmake --install"; }
for f in bin/ffrouter bin/ffctl include/ffverbs.h; do
  [ -e "$FF_WORK/prefix/$f" ] || fail "cmake --install left out $f"
done
pc=$(find "$FF_WORK/prefix" -name ffverbs.pc | head -1)
[ -n "$pc" ] || fail "cmake --install left out ffverbs.pc"
cflags=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --cflags ffverbs) || fail "pkg-config --cflags ffverbs"
# shellcheck disable=SC2086
cc -Wall -Werror -o "$FF_WORK/example" "$src/tests/tools/ffv_zero_copy.c" $cflags -libverbs ||
  fail "the example does not build from the installed header"
ff_in_container a default "$FF_WORK/example" | grep -q "zero-copy: yes" || fail "the example built from the installed header"
pass "installed: ffverbs.h and ffverbs.pc build the example, and it runs zero-copy through the router"
echo "3 passed, 0 failed"
