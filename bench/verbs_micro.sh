#!/bin/bash
# Verbs through the router on one host (build/bin/verbs_micro): the router
# pinned to CPU 1, the app to CPU 0, libffverbs preloaded, soft fabric; each
# row beside its floor measured in the same run (docs/PERFORMANCE.md).
#   bench/verbs_micro.sh [--quick | --data-path | --message-rate | --latency]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh Release >/dev/null
export FF_BUILD=$PWD/build
source tests/e2e/lib.sh
ff_start_router
taskset -a -p -c 1 "$(pgrep -f "ffrouter --run-dir $FF_RUN" | head -1)" >/dev/null
ff_container c1 10.37.0.2
ff_in_container c1 default taskset -c 0 "$FF_BUILD/bin/verbs_micro" "$@"
