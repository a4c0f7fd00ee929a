#!/bin/bash
# --fabric: on a machine without RDMA devices (this one; tests/hw covers the
# device), `verbs` is a clear startup error, `auto` falls back to the soft
# fabric, and bad values are refused.
source "$(dirname "$0")/lib.sh"
if [ -d /sys/class/infiniband ] && [ -n "$(ls /sys/class/infiniband 2>/dev/null)" ]; then
  echo "SKIP: this machine has RDMA devices"; exit 0
fi
rc=0
"$FFROUTER" --run-dir "$FF_RUN" --fabric verbs >"$FF_WORK/out" 2>&1 || rc=$?
[ $rc -eq 2 ] || { cat "$FF_WORK/out"; fail "--fabric verbs without a device: exit $rc, want 2"; }
grep -q "no RDMA device found.*--fabric soft" "$FF_WORK/out" || { cat "$FF_WORK/out"; fail "no clear error"; }
pass "--fabric verbs without a device exits 2 and says what to do"
rc=0
"$FFROUTER" --run-dir "$FF_RUN" --fabric verbs --device mlx5_7 >"$FF_WORK/out" 2>&1 || rc=$?
[ $rc -eq 2 ] || fail "--device of a missing device: exit $rc, want 2"
pass "--device naming a missing device exits 2"
ff_start_router --fabric auto
ff_status | grep -q "fabric: soft" || { ff_status; fail "--fabric auto did not fall back to soft"; }
grep -q "using the soft fabric" "$FF_WORK/router.log" || fail "auto did not log why"
pass "--fabric auto falls back to the soft fabric and logs why"
for bad in "--fabric hw" "--gid-index x" "--gid-index 256"; do
  rc=0
  # shellcheck disable=SC2086
  "$FFROUTER" --run-dir "$FF_WORK/r2" $bad >"$FF_WORK/out" 2>&1 || rc=$?
  [ $rc -ne 0 ] || fail "$bad accepted"
done
pass "bad --fabric and --gid-index values are refused"
echo "4 passed, 0 failed"
