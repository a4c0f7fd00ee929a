#!/bin/bash
# RC conformance across two routers (tests/tools/ffv_crosshost.c): SEND with
# immediate from several SGEs, 1 MiB SEND/WRITE/READ, atomics, zero-length
# messages, unsignaled ordering, and the error statuses (bad rkey then
# flush, RNR retries exceeded, a receive too short, remote read disabled),
# every byte checked on both sides. The same program runs first between two
# containers of one router, so the remote path is held to what the local one
# does.
source "$(dirname "$0")/multihost_lib.sh"
TOOL=$FF_BUILD/bin/ffv_crosshost

mh_host alpha 10.99.0.1
mh_host beta 10.99.0.2
mh_container a 10.50.1.1
mh_container b 10.50.2.1
mh_container c 10.50.1.2
dir=$(mh_static_directory alpha:default:10.50.1.0/24 beta:default:10.50.2.0/24)
mh_router alpha "$dir"
mh_router beta "$dir"
mh_wait_peers alpha 1

mh_pair alpha a alpha c 10.50.1.1 18515 default "$TOOL"
pass "one router: $(tail -1 "$FF_WORK/client.log")"
mh_pair alpha a beta b 10.50.1.1 18515 default "$TOOL"
pass "across hosts, server on alpha: $(tail -1 "$FF_WORK/client.log")"
mh_pair beta b alpha a 10.50.2.1 18515 default "$TOOL"
pass "across hosts, server on beta: $(tail -1 "$FF_WORK/client.log")"
