#!/bin/bash
# Two hosts, one router each, a container on each: unmodified verbs programs
# between the containers through both routers and the TCP link between them.
# The bytes each router sent to the other are counted (ffctl peers).
source "$(dirname "$0")/multihost_lib.sh"

mh_two_hosts

# A container cannot reach the other host: only the routers can.
ip netns exec "ffc-a-$$" ping -c1 -W1 10.99.0.2 >/dev/null 2>&1 && fail "container a reaches host beta directly"

n=0
run() {
  local expect=$1
  shift
  local before after
  before=$(( $(mh_bytes alpha) + $(mh_bytes beta) ))
  mh_pair alpha a beta b 10.50.1.1 18515 default "$@"
  after=$(( $(mh_bytes alpha) + $(mh_bytes beta) ))
  [ $((after - before)) -ge "$expect" ] ||
    fail "$*: the routers sent each other $((after - before)) bytes, expected >= $expect"
  echo "PASS: $* across hosts ($(grep -E 'iters in|^ +[0-9]+ +[0-9]+' "$FF_WORK/client.log" | tail -1 | tr -s ' ')), $((after - before)) B between routers"
  n=$((n + 1))
}

run $((2 * 1000 * 4096)) ibv_rc_pingpong -g 0
run $((2 * 100 * 65536)) ibv_rc_pingpong -g 0 -s 65536 -n 100
run $((2 * 1000 * 1024)) ibv_rc_pingpong -g 0 -e -s 1024
run $((2 * 1000 * 1024)) ibv_ud_pingpong -g 0
run $((2 * 1000 * 2048)) ibv_ud_pingpong -g 0 -s 2048 -e
run $((2 * 1000 * 4096)) ibv_uc_pingpong -g 0
run $((2 * 1000 * 4096)) ibv_srq_pingpong -g 0 -q 4
run $((200 * 65536)) ib_write_bw -n 200
run $((1000 * 2)) ib_read_lat
run $((200 * 8)) ib_atomic_bw -n 200
run $((4 * 200 * 65536)) ib_send_bw -n 200 -q 4
run $((100 * 8388608)) ib_write_bw -s 8388608 -n 100
mh_ctl alpha peers
for h in alpha beta; do
  mh_ctl "$h" status | grep -q 'total clients=0 objects=0' || fail "router $h: objects left behind"
done
echo "$n passed, 0 failed"
