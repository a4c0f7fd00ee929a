#!/bin/bash
# In the guest: every tests/hw/guest/test_*.sh and the tenant isolation test
# on the verbs fabric, in one boot. Exit 0 when all pass.
here=$(cd "$(dirname "$0")" && pwd)
echo "=== routers run ${FFR_POLLERS:-1} poller(s) (FFR_POLLERS)"
failed=()
run() {
  echo "=== $*"
  local t0=$SECONDS
  if "$@"; then echo "=== ok ($((SECONDS - t0)) s): $*"; else failed+=("$*"); echo "=== FAILED: $*"; fi
}
for t in "$here"/test_*.sh; do run bash "$t"; done
run env FF_ROUTER_ARGS="--fabric verbs --device $FF_RXE_DEV" bash "$here/../../e2e/test_tenant_isolation.sh"
run env FF_ROUTER_ARGS="--fabric verbs --device $FF_RXE_DEV" FF_CM_CYCLES=50 bash "$here/../../e2e/test_rdma_cm.sh"
run env FF_ROUTER_ARGS="--fabric verbs --device $FF_RXE_DEV" FF_OV_PINGS=200 FF_OV_WRITES=500 \
  bash "$here/../../e2e/test_operator_view.sh"
# QoS caps on the device path: rxe under TCG moves about 30 MB/s, so caps
# of 25, 50 and 100 Mb/s.
run env FF_ROUTER_ARGS="--fabric verbs --device $FF_RXE_DEV" FF_QOS_SCALE=0.025 FF_QOS_PARTS=caps \
  bash "$here/../../e2e/test_qos.sh"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED in the guest: %s\n' "${failed[@]}"
  exit 1
fi
echo "all guest tests passed"
