#!/bin/bash
# Sourced by the tests that run on both guests of `tests/hw/vm.sh --hosts 2`
# at once (tests/hw/hosts/): every script runs on host 1 and on host 2,
# branching on FF_VM_HOST; they meet at rendezvous points.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../e2e/lib.sh"
peer_host=$((3 - FF_VM_HOST))
peer_addr=10.77.0.$peer_host

# meet NAME: returns once the other host has reached NAME too (60 s at most).
meet() {
  touch "/run/shared/$1.$FF_VM_HOST"
  for _ in $(seq 600); do
    [ -e "/run/shared/$1.$peer_host" ] && return 0
    sleep 0.1
  done
  fail "host $peer_host never reached '$1'"
}

# wait_tcp_listener PORT: returns once something listens on PORT here.
wait_tcp_listener() {
  for _ in $(seq 300); do
    ss -Htln "sport = :$1" | grep -q . && return 0
    sleep 0.1
  done
  fail "nothing listens on port $1"
}

# host_pair NAME CMD... : host 1 serves (CMD), host 2 runs CMD with host 1's
# address (and prints perftest's last result line); both must succeed;
# the logs are $FF_WORK/NAME.log.
host_pair() {
  local name=$1
  shift
  if [ "$FF_VM_HOST" = 1 ]; then
    timeout 120 "$@" >"$FF_WORK/$name.log" 2>&1 &
    local server=$!
    wait_tcp_listener 18515
    meet "$name"
    wait $server || { cat "$FF_WORK/$name.log"; fail "$name (server)"; }
  else
    meet "$name"
    timeout 120 "$@" "$peer_addr" >"$FF_WORK/$name.log" 2>&1 || { cat "$FF_WORK/$name.log"; fail "$name (client)"; }
    grep -E "^ *[0-9]+ +[0-9]+ " "$FF_WORK/$name.log" | tail -1 | sed "s/^/$name: /" || true
  fi
}

