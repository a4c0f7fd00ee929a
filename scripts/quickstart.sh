#!/bin/bash
# The main job: installs what is missing, builds, starts a router with the
# default configuration, and runs unmodified verbs programs through it
# between two "containers" (network namespaces of their own, with private
# mount and pid namespaces, that share only the tenant's socket directory
# with the router). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh Release

export FF_BUILD=$PWD/build
source tests/e2e/lib.sh

echo "== starting ffrouter (soft fabric, default tenant) in $FF_RUN"
ff_start_router
ff_container_pair app1 10.42.0.1 app2 10.42.0.2
echo "== containers app1 (10.42.0.1) and app2 (10.42.0.2) see only $FF_RUN/tenants/default at /run/ffrouter"
echo
echo "\$ [app1] LD_PRELOAD=libffverbs.so ibv_devinfo"
ff_in_container app1 default ibv_devinfo
echo "\$ [app1] ibv_rc_pingpong -g 0   /   [app2] ibv_rc_pingpong -g 0 10.42.0.1"
ff_pair app1 app2 10.42.0.1 18515 default ibv_rc_pingpong -g 0
sed 's/^/    /' "$FF_WORK/client.log"
echo
echo "\$ [app1] ib_write_bw   /   [app2] ib_write_bw 10.42.0.1"
ff_pair app1 app2 10.42.0.1 18515 default ib_write_bw -n 2000
sed 's/^/    /' "$FF_WORK/client.log"
echo
echo "\$ [app1] ib_send_lat   /   [app2] ib_send_lat 10.42.0.1"
ff_pair app1 app2 10.42.0.1 18515 default ib_send_lat
grep -A2 '#bytes' "$FF_WORK/client.log" | sed 's/^/    /'
echo
echo "\$ ffctl status"
ff_status
echo
echo "== done: unmodified ibv_rc_pingpong and perftest ran through ffrouter between two containers"
