#!/bin/bash
# A router dies (SIGKILL) under a running program: the program on the other
# host sees error completions and exits, it does not hang; after the router
# is restarted, new connections work. Run with the static directory, or with
# etcd when FF_DIRECTORY=etcd (test_multihost_etcd.sh).
source "$(dirname "$0")/multihost_lib.sh"

mh_host alpha 10.99.0.1
mh_host beta 10.99.0.2
mh_container a 10.50.1.1
mh_container b 10.50.2.1
if [ "${FF_DIRECTORY:-file}" = etcd ]; then
  mh_etcd
  dir=$FF_ETCD
else
  dir=$(mh_static_directory alpha:default:10.50.1.0/24 beta:default:10.50.2.0/24)
fi
mh_router alpha "$dir"
mh_router beta "$dir"
mh_wait_peers alpha 1

mh_pair alpha a beta b 10.50.1.1 18515 default ibv_rc_pingpong -g 0
pass "ibv_rc_pingpong across hosts before the failure"

# A long run: server in a (alpha), client in b (beta); beta's router dies.
frames() { mh_ctl alpha peers | sed -n 's/.* frames_sent=\([0-9]*\).*/\1/p'; }
before=$(frames)
mh_in alpha a default timeout 60 ibv_rc_pingpong -g 0 -n 100000000 >"$FF_WORK/long-server.log" 2>&1 &
spid=$!
ff_wait_listen a 18515 || fail "server did not start"
mh_in beta b default timeout 60 ibv_rc_pingpong -g 0 -n 100000000 10.50.1.1 >"$FF_WORK/long-client.log" 2>&1 &
cpid=$!
for _ in $(seq 100); do
  [ "$(frames)" -gt $((before + 1000)) ] && break
  sleep 0.05
done
kill -9 "${FF_HOST_ROUTER[beta]}"
wait "${FF_HOST_ROUTER[beta]}" 2>/dev/null || true
unset "FF_HOST_ROUTER[beta]"
start=$SECONDS
src=0
wait "$spid" || src=$?
[ $src -ne 124 ] || fail "the server on alpha hung after its peer's router died (killed by timeout)"
[ $src -ne 0 ] || fail "the server on alpha finished 100000000 iterations?"
grep -q "Failed status" "$FF_WORK/long-server.log" ||
  { cat "$FF_WORK/long-server.log"; fail "the server did not report an error completion"; }
echo "PASS: the program on alpha saw \"$(grep -m1 "Failed status" "$FF_WORK/long-server.log")\" after $((SECONDS - start)) s"
wait "$cpid" 2>/dev/null || true
mh_ctl alpha peers | grep -q 'peer beta .*outbound=down' || { mh_ctl alpha peers; fail "alpha still shows beta up"; }
mh_ctl alpha peers | grep -Eq 'qps_failed=[1-9]' || fail "alpha counted no failed QP"

# Back: a new router on beta, new programs connect through it.
mh_router beta "$dir"
mh_wait_peers alpha 1
mh_pair alpha a beta b 10.50.1.1 18515 default ibv_rc_pingpong -g 0
pass "ibv_rc_pingpong across hosts after beta's router restarted"
mh_pair alpha a beta b 10.50.1.1 18515 default ib_write_bw -n 200
pass "ib_write_bw across hosts after the restart"
