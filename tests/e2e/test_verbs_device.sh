#!/bin/bash
# Runs the verbs device suite (tests/integration/verbs_device_test.cc)
# through libffverbs in a container, then the router-loss case.
source "$(dirname "$0")/lib.sh"
TEST=$FF_BUILD/bin/verbs_device_test

ff_start_router
ff_container c1 10.55.1.2
ff_in_container c1 default env FF_EXPECT_VIP=10.55.1.2 "$TEST" --gtest_filter=-*RouterLoss* ||
  fail "verbs device suite"
FFV_SOCKET=$FF_RUN/tenants/default/ffrouter.sock LD_PRELOAD=$LIBFFVERBS FF_ROUTER_PID=$FF_ROUTER_PID \
  timeout 30 "$TEST" --gtest_filter=*RouterLoss* || fail "router loss case"
FF_ROUTER_PID=
echo "2 passed, 0 failed"
