#!/bin/bash
# The main job: installs what is missing, builds, starts a router with the
# default configuration, and runs unmodified verbs programs through it from a
# "container" (a network namespace of its own that shares only the tenant's
# socket directory with the router). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh Release

export FF_BUILD=$PWD/build
source tests/e2e/lib.sh

echo "== starting ffrouter (soft fabric, default tenant) in $FF_RUN"
ff_start_router
ff_container app 10.42.0.2
echo "== container 'app' (netns, address 10.42.0.2) sees only $FF_RUN/tenants/default at /run/ffrouter"
echo
echo "\$ LD_PRELOAD=libffverbs.so ibv_devices"
ff_in_container app default ibv_devices
echo
echo "\$ LD_PRELOAD=libffverbs.so ibv_devinfo -v"
ff_in_container app default ibv_devinfo -v
echo
echo "\$ ffctl status   (while a client holds a context and 2 PDs)"
ff_in_container app default "$FF_BUILD/bin/ffv_hold" 2 >"$FF_WORK/hold.out" 2>&1 &
FF_PIDS+=($!)
for _ in $(seq 100); do grep -q ready "$FF_WORK/hold.out" && break; sleep 0.05; done
ff_status
echo
echo "== done: the router served the virtual device ffvirt0 with GID ::ffff:10.42.0.2"
