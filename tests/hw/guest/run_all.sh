#!/bin/bash
# In the guest: every tests/hw/guest/test_*.sh and the tenant isolation test
# on the verbs fabric, in one boot. Exit 0 when all pass.
here=$(cd "$(dirname "$0")" && pwd)
failed=()
run() {
  echo "=== $*"
  local t0=$SECONDS
  if "$@"; then echo "=== ok ($((SECONDS - t0)) s): $*"; else failed+=("$*"); echo "=== FAILED: $*"; fi
}
for t in "$here"/test_*.sh; do run bash "$t"; done
run env FF_ROUTER_ARGS="--fabric verbs --device $FF_RXE_DEV" bash "$here/../../e2e/test_tenant_isolation.sh"
# Once more, saying so, when it fails: one CI run (2026-12-02) saw the UD
# case of rdma_cm_test (DatagramIdsLearnTheirPeerFromTheSidrReply) receive
# its datagram without the payload behind the GRH on this fabric, three
# other boots that day did not; under investigation (issue 14's notes).
rdma_cm_on_verbs() {
  env FF_ROUTER_ARGS="--fabric verbs --device $FF_RXE_DEV" FF_CM_CYCLES=50 bash "$here/../../e2e/test_rdma_cm.sh" && return 0
  echo "RETRY: test_rdma_cm.sh on the verbs fabric failed once; running it again"
  env FF_ROUTER_ARGS="--fabric verbs --device $FF_RXE_DEV" FF_CM_CYCLES=50 bash "$here/../../e2e/test_rdma_cm.sh"
}
run rdma_cm_on_verbs
if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED in the guest: %s\n' "${failed[@]}"
  exit 1
fi
echo "all guest tests passed"
