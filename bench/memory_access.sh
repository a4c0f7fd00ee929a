#!/bin/bash
# bench/memory_access_bench.cc through libffverbs and a soft-fabric router,
# so that its RegisterMr case runs too.
#   bench/memory_access.sh [benchmark flags]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh Release >/dev/null
export FF_BUILD=$PWD/build
source tests/e2e/lib.sh
ff_start_router
FFV_SOCKET=$FF_RUN/tenants/default/ffrouter.sock LD_PRELOAD=$LIBFFVERBS \
  "$FF_BUILD/bin/memory_access_bench" --benchmark_min_time=0.3 "$@"
