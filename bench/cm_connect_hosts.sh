#!/bin/bash
# rdma_cm connection setup (rdma_create_id to ESTABLISHED) against a TCP
# connect, between two containers, in one run: on one host (both served by
# alpha's router) and across two hosts (alpha and beta, the handshake going
# between the routers on their link). Soft fabric.
#   bench/cm_connect_hosts.sh [connections per pair (default 300)]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-300}
scripts/build.sh Release >/dev/null
export FF_BUILD=$PWD/build
source tests/e2e/multihost_lib.sh
mh_two_hosts
mh_container c 10.50.1.2
bin=$FF_BUILD/bin/cm_connect_rate
pair() {  # pair CLIENT_HOST CLIENT_CONTAINER
  mh_in alpha a default "$bin" -s 10.50.1.1 7900 "$n" >"$FF_WORK/server.log" 2>&1 &
  local srv=$!
  for _ in $(seq 200); do grep -q listening "$FF_WORK/server.log" && break; sleep 0.05; done
  mh_in "$1" "$2" default "$bin" 10.50.1.1 7900 "$n"
  wait "$srv"
}
echo "## one host (a -> c, alpha's router)"
pair alpha c
echo "## two hosts (b on beta -> a on alpha)"
pair beta b
