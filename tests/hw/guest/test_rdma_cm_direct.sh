#!/bin/bash
# In the guest (tests/hw/vm.sh): the rdma_cm conformance cases on the
# kernel's own rdma_cm over rxe0 with plain librdmacm: the reference that
# tests/e2e/test_rdma_cm.sh holds the router to (event order, private data
# lengths, reject statuses, bind errors, the disconnect exchange).
source "$(dirname "$0")/../../e2e/lib.sh"
FF_CM_ADDR=10.77.0.1 FF_CM_CYCLES=20 timeout 600 "$FF_BUILD/bin/rdma_cm_test" ||
  fail "rdma_cm conformance on the kernel's rdma_cm (rxe0)"
echo "1 passed, 0 failed"
