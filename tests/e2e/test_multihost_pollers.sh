#!/bin/bash
# Two hosts whose routers run two pollers each (--pollers 2): tenant red is
# served by poller 0 and blue by poller 1 (router/fabric/fabric.h,
# poller_of), on every router alike, and each pair of routers is joined by a
# pair of links per poller. Both tenants run programs between the hosts at
# once, each on its own poller's links (a frame on the wrong poller's link
# would find no QP there). A third router running one poller is refused by
# both, with why, and they go on serving.
source "$(dirname "$0")/multihost_lib.sh"

mh_host alpha 10.99.0.1
mh_host beta 10.99.0.2
mh_host gamma 10.99.0.3
mh_container ra 10.50.1.1
mh_container rb 10.50.2.1
mh_container ba 10.51.1.1
mh_container bb 10.51.2.1
dir=$(mh_static_directory alpha:red:10.50.1.0/24 beta:red:10.50.2.0/24 alpha:blue:10.51.1.0/24 \
  beta:blue:10.51.2.0/24 gamma:green:10.52.3.0/24)
config=$FF_WORK/tenants.yaml
printf 'tenants:\n  - name: red\n    network: 10.50.0.0/16\n  - name: blue\n    network: 10.51.0.0/16\n' >"$config"
mh_router alpha "$dir" --config "$config" --pollers 2
mh_router beta "$dir" --config "$config" --pollers 2
mh_wait_peers alpha 1
mh_wait_peers beta 1
for p in 0 1; do
  grep -q "peer beta: outbound connection of poller $p up" "$FF_WORK/router-alpha.log" ||
    { cat "$FF_WORK/router-alpha.log"; fail "alpha has no outbound link of poller $p to beta"; }
done
for h in alpha beta; do
  mh_ctl "$h" status | grep -q "^tenant red  poller 0 " && mh_ctl "$h" status | grep -q "^tenant blue  poller 1 " &&
    [ "$(mh_ctl "$h" -j status | jq '[.tenants[] | {(.name): .poller}] | add | .red + 10 * .blue')" = 10 ] ||
    { mh_ctl "$h" status; fail "router $h does not show red on poller 0 and blue on poller 1"; }
done
pass "two routers of two pollers each: a pair of links per poller"

# pair_bg NAME TENANT SRV CLI SRV_IP PORT cmd...: server in SRV (alpha's),
# client in CLI (beta's), in the background; `pair_wait NAME` checks both.
pair_bg() {
  local name=$1 tenant=$2 srv=$3 cli=$4 ip=$5 port=$6
  shift 6
  FF_RUN=$FF_WORK/alpha ff_in_container "$srv" "$tenant" timeout 120 "$@" >"$FF_WORK/$name-server.log" 2>&1 &
  eval "${name}_server=$!"
  ff_wait_listen "$srv" "$port" || { cat "$FF_WORK/$name-server.log"; fail "$name: $* server did not start"; }
  FF_RUN=$FF_WORK/beta ff_in_container "$cli" "$tenant" timeout 120 "$@" "$ip" >"$FF_WORK/$name-client.log" 2>&1 &
  eval "${name}_client=$!"
}
pair_wait() {
  local s c
  s=${1}_server c=${1}_client
  wait "${!s}" && wait "${!c}" ||
    { tail -5 "$FF_WORK/$1-server.log" "$FF_WORK/$1-client.log"; fail "$1 failed"; }
}
pair_bg red red ra rb 10.50.1.1 18515 ib_write_bw -n 3000 -p 18515
pair_bg blue blue ba bb 10.51.1.1 18516 ib_send_bw -n 3000 -p 18516
pair_wait red
pair_wait blue
pair_bg redping red ra rb 10.50.1.1 18517 ibv_rc_pingpong -g 0 -n 2000 -p 18517
pair_bg blueping blue ba bb 10.51.1.1 18518 ibv_ud_pingpong -g 0 -n 2000 -p 18518
pair_wait redping
pair_wait blueping
read -r red blue < <(mh_ctl beta -j stats | jq -r '"\(.red.sent.write.bytes // 0) \(.blue.sent.send.bytes // 0)"')
[ "$red" -ge $((3000 * 65536)) ] && [ "$blue" -ge $((3000 * 65536)) ] ||
  fail "beta's counters: red wrote $red bytes, blue sent $blue (expected 3000 x 64 KiB each)"
pass "red (poller 0) and blue (poller 1) ran ib_write_bw, ib_send_bw and pingpongs between the hosts at once"

# gamma runs one poller (said outright: FFR_POLLERS may say otherwise):
# alpha and beta refuse it, by name, saying why.
mh_router gamma "$dir" --pollers 1
for h in alpha gamma; do
  for _ in $(seq 100); do
    grep -q "every router of a cluster runs the same --pollers" "$FF_WORK/router-$h.log" && break
    sleep 0.1
  done
  grep "every router of a cluster runs the same --pollers" "$FF_WORK/router-$h.log" | head -1 ||
    { cat "$FF_WORK/router-$h.log"; fail "$h did not say why it refused a router of another --pollers"; }
done
mh_ctl alpha peers | grep -q "peer gamma .*outbound=up" && fail "alpha linked to gamma, which runs one poller"
pair_bg again blue ba bb 10.51.1.1 18519 ibv_rc_pingpong -g 0 -n 500 -p 18519
pair_wait again
pass "a router of another --pollers is refused with why; the cluster goes on serving"

for h in alpha beta; do
  mh_ctl "$h" status | grep -q 'total clients=0 objects=0' || fail "router $h: objects left behind"
done
