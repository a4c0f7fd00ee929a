#!/bin/bash
# Connection setup rate and latency: rdma_cm through the router against a
# plain TCP connect, in the same container namespace, one run
# (bench/cm_connect_bench.cc).
#   bench/cm_connect.sh [benchmark flags]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh Release >/dev/null
export FF_BUILD=$PWD/build
source tests/e2e/lib.sh
ff_start_router
ff_container c1 10.37.0.2
ff_in_container c1 default env FF_CM_ADDR=10.37.0.2 "$FF_BUILD/bin/cm_connect_bench" "$@"
