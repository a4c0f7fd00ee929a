#!/bin/bash
# Every ibv_* symbol that ibv_devinfo, ibv_rc_pingpong and ib_write_bw import
# binds to libffverbs, as the dynamic loader itself reports (LD_DEBUG), and no
# object in the process binds an interposed name to the real libibverbs: a
# shim object can never reach code that would dereference its private part.
source "$(dirname "$0")/lib.sh"

exported=$(nm -D --defined-only "$LIBFFVERBS" | awk '{print $3}' | sed 's/@.*//' | sort -u)
passed=0
for prog in ibv_devinfo ibv_rc_pingpong ib_write_bw; do
  path=$(command -v "$prog") || fail "$prog is not installed"
  imports=$(readelf --dyn-syms -W "$path" | awk '$7=="UND" {print $8}' | sed 's/@.*//' |
            grep -E '^(_?ibv_|mult_to_ibv_rate|mbps_to_ibv_rate)' | sort -u)
  [ -n "$imports" ] || fail "$prog imports no ibv_* symbol?"
  # BIND_NOW resolves every symbol at startup; -h (or no router) ends the program right after.
  FFV_SOCKET=$FF_WORK/none.sock LD_BIND_NOW=1 LD_DEBUG=bindings LD_DEBUG_OUTPUT=$FF_WORK/$prog \
    LD_PRELOAD=$LIBFFVERBS timeout 20 "$path" -h >/dev/null 2>&1 || true
  log=$(cat "$FF_WORK/$prog".*)
  for sym in $imports; do
    grep -Eq "binding file $path \[0\] to $LIBFFVERBS \[0\]: normal symbol \`$sym'" <<<"$log" ||
      fail "$prog: $sym does not bind to libffverbs"
  done
  for sym in $exported; do
    if grep -Eq "to [^ ]*libibverbs\.so\.1 \[0\]: normal symbol \`$sym'" <<<"$log"; then
      grep -E "to [^ ]*libibverbs\.so\.1 \[0\]: normal symbol \`$sym'" <<<"$log" | head -3
      fail "$prog: an object binds $sym to the real libibverbs"
    fi
  done
  echo "PASS: $prog: $(wc -w <<<"$imports") ibv_* imports all bind to libffverbs"
  passed=$((passed + 1))
done
echo "$passed passed, 0 failed"
