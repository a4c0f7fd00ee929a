#!/bin/bash
# The verbs conformance suite through libffverbs and the router, in a
# container; afterwards the router holds no object of it.
source "$(dirname "$0")/lib.sh"
ff_start_router
ff_container c1 10.44.0.2
ff_in_container c1 default env FF_EXPECT_SHIM=1 timeout 300 "$FF_BUILD/bin/verbs_conformance_test" ||
  { grep -m1 -A30 "WARNING: ThreadSanitizer\|Assertion\|ERROR: AddressSanitizer\|runtime error" "$FF_WORK/router.log" || tail -n 30 "$FF_WORK/router.log"; fail "verbs conformance suite"; }
for _ in $(seq 100); do ff_status | grep -q 'total clients=0 objects=0' && break; sleep 0.05; done
ff_status | grep -q 'total clients=0 objects=0' || { ff_status; fail "objects left behind"; }
echo "1 passed, 0 failed"
