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
counter() { ff_status | tr ' ' '\n' | sed -n "s/^$1=//p" | head -1; }
busy0=$(counter poller_busy_ns) wrs0=$(counter work_requests)
ff_in_container c1 default taskset -c 0 "$FF_BUILD/bin/verbs_micro" "$@"
# What the router's poller spent per work request over the whole run (its
# busy passes' time, ffrouter_poller_busy_seconds_total): steadier than the
# rates, which move with where the VM's vCPUs run.
busy1=$(counter poller_busy_ns) wrs1=$(counter work_requests)
awk -v b=$((busy1 - busy0)) -v w=$((wrs1 - wrs0)) \
  'BEGIN { if (w > 0) printf "\nrouter: %.1f ns of busy poller time per work request (%d work requests)\n", b / w, w }'
