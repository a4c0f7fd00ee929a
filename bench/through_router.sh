#!/bin/bash
# Runs a benchmark program as an app of a container served by a
# soft-fabric router (libffverbs preloaded), with FF_CM_ADDR set to the
# container's virtual IP:
#   bench/through_router.sh memory_access_bench   # docs/PERFORMANCE.md
#   bench/through_router.sh cm_connect_bench
# Further arguments go to the program (e.g. --benchmark_min_time=0.3).
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:?"which benchmark (memory_access_bench, cm_connect_bench)"}
shift
scripts/build.sh Release >/dev/null
export FF_BUILD=$PWD/build
source tests/e2e/lib.sh
ff_start_router
ff_container c1 10.37.0.2
ff_in_container c1 default env FF_CM_ADDR=10.37.0.2 "$FF_BUILD/bin/$bench" "$@"
