#!/bin/bash
# The shared heap (libffverbs/shared_heap.cc): with the shim, page-aligned
# allocations of 64 KiB and up come from the shared arenas, malloc and
# calloc from glibc; FFV_SHARED_HEAP=all adds malloc, =off leaves all to
# glibc, FFV_SHARED_HEAP_MIN raises the threshold; without the shim nothing
# changes. realloc, free and malloc_usable_size work on both kinds. No
# router is needed: the arenas are the app's until it registers them.
source "$(dirname "$0")/lib.sh"
PROBE=$FF_BUILD/bin/shared_heap_probe
shim=${LIBFFVERBS##* }  # the sanitized run preloads the sanitizer runtimes first
probe() {
  local out
  out=$(env "$@" "$PROBE") || { echo "$out"; fail "shared_heap_probe $*: bytes lost or an allocation failed"; }
  echo "$out" | awk '$1 != "bytes" {printf "%s=%s ", $1, $2}'
}
expect() {
  local want=$1
  shift
  local got
  got=$(probe "$@")
  [ "$got" = "$want" ] || fail "$*: expected '$want', got '$got'"
}
private="malloc=private posix_memalign=private small=private aligned_alloc=private calloc=private "
expect "$private"
pass "without the shim: every allocation is glibc's, and realloc and free keep the bytes"
symbols=$(readelf --dyn-syms -W "$shim")
if ! grep -q ' malloc@@GLIBC' <<<"$symbols"; then
  expect "$private" LD_PRELOAD="$LIBFFVERBS"
  pass "a sanitized shim leaves the allocator to the sanitizer"
  echo "2 passed, 0 failed"
  exit 0
fi
expect "malloc=private posix_memalign=arena small=private aligned_alloc=arena calloc=private " LD_PRELOAD="$LIBFFVERBS"
pass "with the shim: page-aligned allocations of 64 KiB and up come from the arenas, the rest from glibc"
expect "malloc=arena posix_memalign=arena small=private aligned_alloc=arena calloc=private " \
  LD_PRELOAD="$LIBFFVERBS" FFV_SHARED_HEAP=all
pass "FFV_SHARED_HEAP=all: malloc too"
expect "$private" LD_PRELOAD="$LIBFFVERBS" FFV_SHARED_HEAP=off
expect "$private" LD_PRELOAD="$LIBFFVERBS" FFV_SHARED_HEAP_MIN=2097152
pass "FFV_SHARED_HEAP=off, or a threshold above the allocations: all glibc's"
echo "4 passed, 0 failed"
