#!/bin/bash
# The etcd directory: routers register themselves and their clients' virtual
# IPs under leases; programs across hosts find each other through it; a
# router killed with SIGKILL vanishes from the directory when its lease
# expires; the failure and restart test then runs over etcd too.
source "$(dirname "$0")/multihost_lib.sh"

mh_host alpha 10.99.0.1
mh_host beta 10.99.0.2
mh_container a 10.50.1.1
mh_container b 10.50.2.1
mh_etcd
dir=$FF_ETCD
mh_router alpha "$dir"
mh_router beta "$dir"
mh_wait_peers alpha 1
mh_wait_peers beta 1

mh_pair alpha a beta b 10.50.1.1 18515 default ibv_rc_pingpong -g 0
pass "ibv_rc_pingpong across hosts, addresses from etcd"
mh_pair alpha a beta b 10.50.1.1 18515 default ibv_ud_pingpong -g 0
pass "ibv_ud_pingpong across hosts, addresses from etcd"
mh_pair alpha a beta b 10.50.1.1 18515 default ib_write_bw -n 200
pass "ib_write_bw across hosts, addresses from etcd"

# A client's address is in the directory while it is connected, and alpha
# sees it there.
mh_in beta b default "$FF_BUILD/bin/ffv_hold" 1 >"$FF_WORK/hold.log" 2>&1 &
hold=$!
for _ in $(seq 100); do grep -q ready "$FF_WORK/hold.log" && break; sleep 0.05; done
for _ in $(seq 100); do mh_ctl alpha peers | grep -q 'entry tenant=default addresses=10.50.2.1/32 router=beta' && break; sleep 0.05; done
mh_ctl alpha peers | grep -q 'entry tenant=default addresses=10.50.2.1/32 router=beta' ||
  { mh_ctl alpha peers; fail "alpha does not see beta's client in the directory"; }
pass "a client on beta is in alpha's view of the directory"

# etcd hangs (SIGSTOP: it still accepts connections, and answers nothing).
# A new client's Hello waits until its address is written or the write
# failed, but the router goes on answering everyone else meanwhile: it never
# waits on etcd itself.
kill -STOP "$FF_ETCD_PID"
FF_RUN=$FF_WORK/alpha ff_watch_status
start=$SECONDS
mh_in alpha a default ibv_devinfo >"$FF_WORK/devinfo.log" 2>&1 &
devinfo=$!
sleep 3
kill -CONT "$FF_ETCD_PID"
wait "$devinfo" || { cat "$FF_WORK/devinfo.log"; fail "a client's Hello failed while etcd hung"; }
echo "a client that said Hello while etcd hung was answered after $((SECONDS - start)) s"
ff_check_status_watch 1000
pass "with etcd hung, the router kept answering ffctl status within 1 s"

# beta's router dies: its lease runs out (TTL 5 s), and alpha's view loses
# beta and its addresses.
kill -9 "${FF_HOST_ROUTER[beta]}"
wait "${FF_HOST_ROUTER[beta]}" 2>/dev/null || true
unset "FF_HOST_ROUTER[beta]"
start=$SECONDS
while mh_ctl alpha peers | grep -q 'router=beta'; do
  [ $((SECONDS - start)) -lt 15 ] || { mh_ctl alpha peers; fail "beta's entries outlived its lease"; }
  sleep 0.2
done
mh_ctl alpha peers | grep -q 'peer beta .*(gone from the directory)' || { mh_ctl alpha peers; fail "beta still listed as a router"; }
pass "beta's router and addresses left the directory $((SECONDS - start)) s after SIGKILL"
# $hold is the subshell running mh_in; the holder is pid 1 of its own pid
# namespace in container b, and only SIGKILL ends that from outside.
ip netns pids "ffc-b-$$" | xargs -r kill -9 2>/dev/null || true
wait "$hold" 2>/dev/null || true

# The kill-and-restart test, over etcd.
FF_DIRECTORY=etcd bash "$(dirname "$0")/test_multihost_failover.sh"
