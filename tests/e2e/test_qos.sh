#!/bin/bash
# Per-tenant QoS with unmodified perftest: a tenant's cap holds to its rate
# (perftest's own figure within ±5%), changes live with `ffctl qos` and on
# SIGHUP (applied to traffic already running), two saturated tenants share
# by their weights (equal: Jain's index ≥ 0.97; 1:3 within ±5%), an uncapped
# tenant takes what a capped one leaves, and the throttled time is counted.
# FF_ROUTER_ARGS selects the fabric; on a slow device (rxe in a qemu guest)
# FF_QOS_SCALE scales the caps (0.1: 100, 200 and 400 Mb/s) and
# FF_QOS_PARTS=caps runs the caps and SIGHUP cases only (weights order the
# verbs fabric's hand-off to the device, which shares its own bandwidth;
# the cases after them are the soft fabric's).
source "$(dirname "$0")/lib.sh"
scale=${FF_QOS_SCALE:-1}
cap() { awk -v g="$1" -v s="$scale" 'BEGIN { print g * s }'; }  # cap GBPS: in this run's scale
cap_bytes() { awk -v g="$1" -v s="$scale" 'BEGIN { printf "%d", g * s * 1e9 / 8 }'; }
ffctl() { "$FFCTL" --run-dir "$FF_RUN" "$@"; }
config=$FF_WORK/config.yaml
write_config() {  # write_config BLUE_QOS RED_QOS (YAML flow mappings)
  printf 'tenants:\n  - name: blue\n    qos: %s\n  - name: red\n    qos: %s\n' "$1" "$2" >"$config"
}
# A burst of 32 ms at the cap (4 MiB at 1 Gb/s), at least 256 KiB: on a
# loaded CI machine (a sanitized router beside another test) the poller may
# wake late, and what the bucket saves meanwhile beyond its burst is lost;
# it adds under 1% to a 4-second run (at least 256 KiB: 2% at 25 Mb/s,
# where 4 MiB would be 1.3 s of the cap and perftest's figure 5% high).
burst=$(awk -v s="$scale" 'BEGIN { b = int(4096 * s); print (b < 256 ? 256 : b) }')
write_config "{max_gbps: $(cap 1), burst_kib: $burst}" "{}"
# One poller whatever FFR_POLLERS says: weights divide a poller among the
# tenants it serves (docs/ARCHITECTURE.md, Threads), and blue and red hash
# to different pollers of two.
# shellcheck disable=SC2086
ff_start_router --config "$config" --pollers 1 ${FF_ROUTER_ARGS:-}
ff_container_pair a 10.61.0.1 b 10.61.0.2

# bw NAME TENANT PORT SECONDS [SIZE [DEPTH]]: ib_write_bw of 64 KiB (or
# SIZE) WRITEs, DEPTH (default perftest's 128) in flight, for SECONDS in the
# background (server in a, client in b); `bw_wait NAME` waits for it and
# sets $gbps_avg to perftest's average in Gb/s.
bw() {
  local name=$1 tenant=$2 port=$3 seconds=$4 size=${5:-65536} depth=${6:-128}
  ff_bg_pair "$name" a b 10.61.0.1 "$port" "$tenant" \
    ib_write_bw -F -p "$port" -s "$size" -t "$depth" -D "$seconds" --report_gbits "${@:7}"
}
bw_wait() {
  ff_bg_wait "$1"
  # #bytes #iterations BW-peak BW-average MsgRate
  gbps_avg=$(awk '{ print $4 }' <<<"$ff_result")
}
# within VALUE TARGET PERCENT: |VALUE - TARGET| <= PERCENT% of TARGET.
within() { awk -v v="$1" -v t="$2" -v p="$3" 'BEGIN { d = v - t; if (d < 0) d = -d; exit !(d <= t * p / 100) }'; }
# rate TENANT: bytes per second its WRITEs moved over the next 2 seconds
# (ffctl is no child of interest: a subshell is fine).
rate() { ffctl -j stats -w 2 -c 1 | jq -r ".\"$1\".sent.write.bytes // 0"; }
# moving TENANT...: waits (at most 10 s) until each tenant's WRITEs move,
# so that a measured window holds no program's start.
moving() {
  local t
  for t in "$@"; do
    for _ in $(seq 50); do
      [ "$(ffctl -j stats -w 0.2 -c 1 | jq -r ".\"$t\".sent.write.bytes // 0")" != 0 ] && continue 2
    done
    fail "tenant $t's ib_write_bw never moved a byte"
  done
}

# Caps of 1, 2 and 4 Gb/s: perftest's own average within ±5%. The first
# from the config, the next two changed live with ffctl.
for gbps in $(cap 1) $(cap 2) $(cap 4); do
  [ "$gbps" = "$(cap 1)" ] || ffctl qos blue max_gbps "$gbps" || fail "ffctl qos blue max_gbps $gbps"
  # perftest's clock calibration can fail on a loaded machine (then it
  # reports 0 Gb/s, which says nothing about the cap): measure again once.
  for attempt in 1 2; do
    bw cap blue 18600 4
    bw_wait cap
    grep -q "Correlation coefficient r^2" "$FF_WORK/cap.client" "$FF_WORK/cap.server" || break
    echo "note: perftest could not calibrate its clock (machine busy, attempt $attempt); measuring again"
  done
  got=$gbps_avg
  within "$got" "$gbps" 5 || { cat "$FF_WORK/cap.client"; fail "blue capped at $gbps Gb/s: ib_write_bw reports $got Gb/s"; }
  echo "blue capped at $gbps Gb/s: ib_write_bw reports $got Gb/s"
done
ffctl -j qos | jq -e --argjson c "$(cap 4)" '.blue.max_gbps == $c and .blue.throttled_seconds > 0 and .red.max_gbps == 0' \
  >/dev/null ||
  { ffctl -j qos; fail "ffctl qos shows blue's cap and throttled time"; }
pass "caps of $(cap 1), $(cap 2) and $(cap 4) Gb/s hold within ±5% of ib_write_bw's figure (from the config, then ffctl qos); throttled time counted"

# SIGHUP applies a changed cap to traffic already running.
write_config "{max_gbps: $(cap 1), burst_kib: $burst}" "{}"
ff_hup
bw live blue 18601 12
moving blue
before=$(rate blue)
within "$before" "$(cap_bytes 1)" 10 || fail "blue at $(cap 1) Gb/s moves $before B/s"
# Its work waits in its ring, never in the router: ffctl shows the depth.
ffctl -j resource show qp tenant blue |
  jq -e 'any(.[]; .send_queued > 0 and .send_queued <= 128 and .recv_queued == 0)' >/dev/null ||
  { ffctl -j resource show qp tenant blue; fail "a capped QP's send ring holds its waiting work (send_queued)"; }
write_config "{max_gbps: $(cap 2), burst_kib: $burst}" "{}"
ff_hup
after=$(rate blue)
bw_wait live
within "$after" "$(cap_bytes 2)" 10 ||
  fail "blue's running ib_write_bw after SIGHUP raised its cap to $(cap 2) Gb/s: $after B/s"
pass "SIGHUP raised blue's cap under a running ib_write_bw: $before B/s, then $after B/s"
[ "${FF_QOS_PARTS:-all}" = caps ] && exit 0

# Two tenants saturated at once, by weight (caps off). 1 MiB WRITEs: the
# poller's copying is the bottleneck, not the programs' posting (with small
# cache-resident messages two cores run out before the poller does, and
# there is nothing to share); 1024 in flight, so that a program the kernel
# descheduled for a time slice still has work queued.
share() {  # share BLUE_WEIGHT RED_WEIGHT: prints blue's and red's rates
  write_config "{weight: $1}" "{weight: $2}"
  ff_hup
  bw sb blue 18602 10 1048576 1024
  bw sr red 18603 10 1048576 1024
  moving blue red
  ffctl -j stats -w 3 -c 1 >"$FF_WORK/share.json"
  bw_wait sb
  bw_wait sr
  read -r b r < <(jq -r '"\(.blue.sent.write.bytes // 0) \(.red.sent.write.bytes // 0)"' "$FF_WORK/share.json")
}
share 1 1
jain=$(awk -v a="$b" -v b="$r" 'BEGIN { print (a + b) * (a + b) / (2 * (a * a + b * b)) }')
awk -v j="$jain" 'BEGIN { exit !(j >= 0.97) }' || fail "equal weights: blue $b B/s, red $r B/s, Jain's index $jain < 0.97"
echo "equal weights: blue $b B/s, red $r B/s, Jain's index $jain"
share 1 3
ratio=$(awk -v a="$b" -v b="$r" 'BEGIN { print b / a }')
within "$ratio" 3 5 || fail "weights 1:3: blue $b B/s, red $r B/s, ratio $ratio not 3 ±5%"
pass "saturated tenants share by weight: equal Jain's index $jain, 1:3 split $ratio"

# A tenant's QPs share its turn: none starves behind another while the
# other tenant is saturated.
write_config "{}" "{}"
ff_hup
bw mq blue 18607 8 65536 128 -q 4
bw mr red 18608 8 1048576 1024
moving blue red
sleep 2
ffctl -j resource show qp tenant blue >"$FF_WORK/qps.json"
bw_wait mq
bw_wait mr
read -r n lo hi < <(jq -r '[.[] | .traffic.sent.write.bytes // 0 | select(. > 0)] | "\(length) \(min) \(max)"' \
  "$FF_WORK/qps.json")
[ "$n" = 4 ] && awk -v l="$lo" -v h="$hi" 'BEGIN { exit !(l >= 0.5 * h) }' ||
  { cat "$FF_WORK/qps.json"; fail "blue's 4 QPs beside a saturated red: $n moved, from $lo to $hi bytes"; }
pass "a tenant's 4 QPs beside a saturated tenant all move: from $lo to $hi bytes each"

# A capped tenant leaves the rest to an uncapped one: with equal weights,
# red is not held to blue's rate (what blue's share does not use is red's).
# At least 8 times blue's, whatever the machine's load (the programs' own
# CPU, not the share, bounds red here).
write_config "{max_gbps: 1, burst_kib: 4096}" "{}"
ff_hup
bw lb blue 18605 8
bw lr red 18606 8
moving blue red
ffctl -j stats -w 3 -c 1 >"$FF_WORK/left.json"
bw_wait lb
bw_wait lr
read -r b r < <(jq -r '"\(.blue.sent.write.bytes // 0) \(.red.sent.write.bytes // 0)"' "$FF_WORK/left.json")
within "$b" 125000000 10 || fail "blue capped at 1 Gb/s beside red: $b B/s"
awk -v r="$r" -v b="$b" 'BEGIN { exit !(r >= 8 * b) }' ||
  fail "red uncapped beside blue capped at 1 Gb/s: $r B/s, not 8 times blue's $b B/s"
pass "an uncapped tenant takes what a capped one leaves: red $r B/s beside blue's $b B/s (capped at 1 Gb/s)"

# exit_of CMD...: CMD's exit status (set -e stays on).
exit_of() { "$@" >/dev/null 2>&1 && echo 0 || echo $?; }
[ "$(exit_of ffctl qos nobody max_gbps 1)" = 1 ] || fail "ffctl qos for no such tenant: the router refuses (1)"
[ "$(exit_of ffctl qos blue max_gbps -1)" = 2 ] || fail "ffctl qos with a negative cap is a usage error"
[ "$(exit_of ffctl qos blue weight 0)" = 2 ] || fail "ffctl qos with weight 0 is a usage error"
[ "$(exit_of ffctl qos blue weight 2.5)" = 2 ] || fail "ffctl qos with a weight not whole is a usage error"
[ "$(exit_of ffctl qos blue max_gbps)" = 2 ] || fail "ffctl qos with a key and no value is a usage error"
[ "$(exit_of ffctl qos blue speed 3)" = 2 ] || fail "ffctl qos with an unknown key is a usage error"
ffctl -j qos | jq -e '.blue.max_gbps == 1' >/dev/null || fail "a refused ffctl qos changed nothing"
pass "ffctl qos refuses unknown tenants and values outside the config's ranges"

# A control-request rate: red's QP create/destroy storm goes at 50 requests
# a second (4 per round, after a burst of 16), blue's beside it unhindered;
# the router delays red's requests (never refuses them) and counts the time.
write_config "{}" "{max_control_per_s: 50}"
ff_hup
storm() { ff_in_container a "$1" "$FF_BUILD/bin/ffv_storm" qp 3 >"$FF_WORK/storm-$1.out"; }
storm red &
red_storm=$!
storm blue &
blue_storm=$!
wait "$red_storm" || fail "red's QP storm failed under its control rate: $(cat "$FF_WORK/storm-red.out")"
wait "$blue_storm" || fail "blue's QP storm failed: $(cat "$FF_WORK/storm-blue.out")"
red=$(awk '{ print $3 }' "$FF_WORK/storm-red.out")
blue=$(awk '{ print $3 }' "$FF_WORK/storm-blue.out")
# At most (16 + 50 x 3) / 4 = 41 rounds (its start-up took tokens too),
# and not far under it: a delay is as long as the bucket needs, no longer.
[ "$red" -le 42 ] && [ "$red" -ge 20 ] || fail "red's QP storm at 50 requests/s: $red rounds in 3 s, not 20 to 42"
# Blue unhindered: well past what red's rate allows it (84: twice 42).
[ "$blue" -ge 84 ] || fail "blue's QP storm beside red's: $blue rounds, not 84 or more"
ffctl -j qos | jq -e '.red.max_control_per_s == 50 and .red.control_delayed_seconds > 1 and
  .blue.control_delayed_seconds == 0' >/dev/null || { ffctl -j qos; fail "ffctl qos shows red's control rate and delay"; }
pass "a control rate of 50/s holds red's QP storm to $red rounds in 3 s (blue beside it: $blue), delayed not refused"

# Two clients of red share red's rate, each taking its turns.
storm red &
first=$!
(ff_in_container a red "$FF_BUILD/bin/ffv_storm" qp 3 >"$FF_WORK/storm-red2.out") &
second=$!
wait "$first" || fail "red's first QP storm failed"
wait "$second" || fail "red's second QP storm failed"
one=$(awk '{ print $3 }' "$FF_WORK/storm-red.out")
two=$(awk '{ print $3 }' "$FF_WORK/storm-red2.out")
[ $((one + two)) -le 44 ] && [ "$one" -ge 5 ] && [ "$two" -ge 5 ] ||
  fail "two red QP storms at 50 requests/s together: $one and $two rounds in 3 s, not 44 or fewer, 5 or more each"
# A new rate applies to a request already waiting for its turn: red at one
# request a second is released by ffctl qos red max_control_per_s 0.
ffctl qos red max_control_per_s 1
storm red &
slow=$!
sleep 1
ffctl qos red max_control_per_s 0
wait "$slow" || fail "red's QP storm failed after its control rate was lifted"
lifted=$(awk '{ print $3 }' "$FF_WORK/storm-red.out")
[ "$lifted" -ge 84 ] || fail "red's QP storm after its rate of 1/s was lifted: $lifted rounds, not 84 or more"
pass "red's clients share its control rate ($one and $two rounds); lifting it frees a waiting request ($lifted rounds)"

# RNR waits are counted: red's sender posts where no receive waits.
ff_in_container a red "$FF_BUILD/bin/ffv_storm" rnr 1 >/dev/null || fail "red's RNR storm"
ffctl -j stats | jq -e '.red.rnr_waits > 0 and .blue.rnr_waits == 0' >/dev/null ||
  { ffctl -j stats; fail "ffctl stats counts red's RNR waits"; }
pass "RNR waits are counted per tenant: red $(ffctl -j stats | jq .red.rnr_waits), blue 0"
