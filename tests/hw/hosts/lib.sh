#!/bin/bash
# Sourced by the tests that run on both guests of `tests/hw/vm.sh --hosts 2`
# at once (tests/hw/hosts/): every script runs on host 1 and on host 2,
# branching on FF_VM_HOST; they meet at rendezvous points.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../e2e/lib.sh"
peer_host=$((3 - FF_VM_HOST))
peer_addr=10.77.0.$peer_host

# meet NAME: returns once the other host has reached NAME too (60 s at most).
# Names are the test script's own (another test may use the same one).
meet() {
  local at=/run/shared/${0##*/}.$1
  touch "$at.$FF_VM_HOST"
  for _ in $(seq 600); do
    [ -e "$at.$peer_host" ] && return 0
    sleep 0.1
  done
  fail "host $peer_host never reached '$1'"
}

# wait_tcp_listener PORT [NETNS [PID]]: returns once something listens on
# PORT here (in network namespace NETNS); fails when PID exits first or
# nothing listens within 30 s.
wait_tcp_listener() {
  local in=()
  [ -z "${2:-}" ] || in=(ip netns exec "$2")
  for _ in $(seq 300); do
    "${in[@]}" ss -Htln "sport = :$1" | grep -q . && return 0
    [ -z "${3:-}" ] || kill -0 "$3" 2>/dev/null || { echo "process $3 exited before it listened on port $1" >&2; return 1; }
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# host_container NAME VIP: a container (tests/e2e/lib.sh) whose network
# reaches the other host's containers: VIP/24 with this host as its
# gateway (.254), and the other host's container /24s routed over the
# hosts' link. Containers of host N live in 10.7{8,9}.N.0/24.
host_container() {
  local ns="ffc-$1-$$" gw=${2%.*}.254
  ip netns add "$ns"
  FF_NETNS+=("$ns")
  ip -n "$ns" link set lo up
  ip link add "vh-$1" type veth peer name eth0 netns "$ns"
  ip addr add "$gw/24" dev "vh-$1"
  ip link set "vh-$1" up
  ip -n "$ns" addr add "$2/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$gw"
  sysctl -qw net.ipv4.ip_forward=1
  local net
  for net in 10.78 10.79; do
    ip route replace "$net.$peer_host.0/24" via "$peer_addr"
  done
}

# host_router [ffrouter args...]: this host's router (h1 or h2) on rxe0, on
# the verbs fabric, in a cluster with the other host's router (tenants blue
# in 10.78.N.0/24 and red in 10.79.N.0/24 on host N, directory file in
# /run/shared); returns once the two routers are linked both ways.
host_router() {
  local dir=/run/shared/directory.yaml
  if [ "$FF_VM_HOST" = 1 ]; then
    {
      echo "routers:"
      for n in 1 2; do
        echo "  - name: h$n"
        echo "    address: 10.77.0.$n:7471"
        echo "    tenants:"
        echo "      blue: [10.78.$n.0/24]"
        echo "      red: [10.79.$n.0/24]"
      done
    } >"$dir.tmp"
    mv "$dir.tmp" "$dir"
  fi
  meet directory
  HOST_ROUTER_ARGS=(--config "$(ff_tenants_config blue red)" --fabric verbs --device "$FF_RXE_DEV"
    --directory "file:$dir" --router-name "h$FF_VM_HOST" "$@")
  host_router_again
}

# host_router_again: starts this host's router as host_router did (after
# it was killed), and waits until it is linked with the other.
host_router_again() {
  ff_start_router "${HOST_ROUTER_ARGS[@]}"
  for _ in $(seq 300); do
    "$FFCTL" --run-dir "$FF_RUN" peers | grep -q 'outbound=up inbound=up' && return 0
    sleep 0.1
  done
  "$FFCTL" --run-dir "$FF_RUN" peers
  fail "the routers did not link"
}

# host_pair NAME CMD... : host 1 serves (CMD), host 2 runs CMD with host 1's
# address (and prints perftest's last result line); both must succeed;
# the logs are $FF_WORK/NAME.log. With PAIR_CONTAINER and PAIR_TENANT set,
# both run in that container (host_container) as that tenant, the server
# at PAIR_SERVER.
host_pair() {
  local name=$1 in=() netns="" at=$peer_addr
  shift
  if [ -n "${PAIR_CONTAINER:-}" ]; then
    in=(ff_in_container "$PAIR_CONTAINER" "$PAIR_TENANT")
    netns=ffc-$PAIR_CONTAINER-$$
    at=$PAIR_SERVER
  fi
  if [ "$FF_VM_HOST" = 1 ]; then
    "${in[@]}" timeout 120 "$@" >"$FF_WORK/$name.log" 2>&1 &
    local server=$!
    wait_tcp_listener 18515 "$netns" $server || { cat "$FF_WORK/$name.log"; fail "$name (server)"; }
    meet "$name"
    wait $server || { cat "$FF_WORK/$name.log"; fail "$name (server)"; }
  else
    meet "$name"
    "${in[@]}" timeout 120 "$@" "$at" >"$FF_WORK/$name.log" 2>&1 || { cat "$FF_WORK/$name.log"; fail "$name (client)"; }
    grep -E "^ *[0-9]+ +[0-9]+ " "$FF_WORK/$name.log" | tail -1 | sed "s/^/$name: /" || true
  fi
}

# host_cm_pair NAME SERVER_CMD... -- CLIENT_CMD...: an rdma_cm pair in
# container app as tenant blue: host 1 serves at 10.78.1.1 (once its router
# reports the listener, or the server listens on TCP), host 2 runs the
# client; both must succeed. Logs: $FF_WORK/NAME.server.log, .client.log.
host_cm_pair() {
  local name=$1 server=() client=()
  shift
  while [ "$1" != "--" ]; do server+=("$1"); shift; done
  shift
  client=("$@")
  local log=$FF_WORK/${name//[^A-Za-z0-9_.-]/_}
  if [ "$FF_VM_HOST" = 1 ]; then
    ff_in_container app blue timeout 120 "${server[@]}" >"$log.server.log" 2>&1 &
    local spid=$!
    for _ in $(seq 300); do
      ff_status | grep "vip=10.78.1.1 " | grep -q "cm_listeners=[1-9]" && break
      ip netns exec "ffc-app-$$" ss -Hltn | grep -q . && break
      kill -0 $spid 2>/dev/null || break
      sleep 0.1
    done
    meet "$name"
    wait $spid || { tail -20 "$log.server.log"; fail "$name (server)"; }
  else
    meet "$name"
    ff_in_container app blue timeout 120 "${client[@]}" >"$log.client.log" 2>&1 ||
      { tail -20 "$log.client.log"; fail "$name (client)"; }
  fi
}
