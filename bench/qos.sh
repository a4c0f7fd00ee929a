#!/bin/bash
# Per-tenant QoS on the soft fabric, with unmodified perftest (docs/PERFORMANCE.md):
#   1. caps: a tenant capped at 1, 2 and 4 Gb/s, ib_write_bw's own average;
#   2. weights: two tenants saturated (1 MiB WRITEs), 1:1 and 1:3, their
#      rates over 3 s (ffctl stats -w) and Jain's index;
#   3. isolation (the Husky method): a victim ib_write_bw (64 KiB) in tenant
#      blue at its allocation (a cap), alone, then beside an attacker in
#      tenant red, victim's throughput with / alone per attacker: a 1 MiB
#      WRITE stream, 64-byte WRITE storm with post lists, RNR storm, QP
#      create/destroy storm (without and with a control rate), reg/dereg
#      storm; a victim that saturates the poller alone beside the stream;
#      and a latency victim's p99 alone and beside a 1 MiB stream (event
#      mode and busy polling);
#   4. the poller's cost of scheduling: 64-byte ib_write_bw message rate with
#      no QoS spec and with caps that never bind.
# Prints markdown tables. Needs root; builds Release first.
#
#   bench/qos.sh [SECONDS per run (default 4)]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh Release >/dev/null
export FF_BUILD=$PWD/build
source tests/e2e/lib.sh
source bench/qos_lib.sh
T=${1:-4}
config=$FF_WORK/config.yaml
qos() { printf 'tenants:\n  - name: blue\n    qos: %s\n  - name: red\n    qos: %s\n' "$1" "$2" >"$config"; }
qos "{}" "{}"
ff_start_router --config "$config"
ff_container_pair a 10.62.0.1 b 10.62.0.2
ffctl() { "$FFCTL" --run-dir "$FF_RUN" "$@"; }

# bw NAME TENANT PORT SIZE [perftest args...]: ib_write_bw for $T seconds, in the background.
bw() {
  local name=$1 tenant=$2 port=$3 size=$4
  shift 4
  ff_bg_pair "$name" a b 10.62.0.1 "$port" "$tenant" ib_write_bw -F -p "$port" -s "$size" -D "$T" --report_gbits "$@"
}
# field N: column N of the last result line (after ff_bg_wait, which must
# run in this shell: the programs are its children). ib_write_bw: #bytes
# #iterations BW-peak BW-average MsgRate; ib_write_lat: ... p99 is column 8.
field() { awk -v n="$1" '{ print $n }' <<<"$ff_result"; }

echo "## Caps (blue alone, ib_write_bw 64 KiB, $T s)"
echo "| cap | ib_write_bw average |"
echo "| --- | --- |"
for cap in 1 2 4; do
  qos "{max_gbps: $cap}" "{}"
  ff_hup
  bw cap blue 18700 65536
  ff_bg_wait cap
  echo "| $cap Gb/s | $(field 4) Gb/s |"
done

echo
echo "## Weights (both saturated: 1 MiB WRITEs, 1024 in flight; rates over 3 s)"
echo "| weights blue:red | blue | red | red / blue | Jain's index |"
echo "| --- | --- | --- | --- | --- |"
for w in "1 1" "1 3"; do
  read -r wb wr <<<"$w"
  qos "{weight: $wb}" "{weight: $wr}"
  ff_hup
  weights_row "$wb" "$wr" 18701 ffctl
done

echo
# Isolation, the Husky method: the victim keeps its allocation beside an
# attacker (with / alone >= 0.85). The victim alone saturates the poller
# here, so beside an attacker of equal weight its fair share is half of
# that: its allocation is a quarter of its saturated rate (a cap), with 1024
# WRITEs in flight (64 MiB: its client, sharing a core with the attacker's,
# may sleep for a scheduler slice without its queue running dry).
echo "## Isolation: victim blue (ib_write_bw 64 KiB, -t 1024, capped at a quarter of its saturated rate), attacker red"
qos "{}" "{}"
ff_hup
bw saturated blue 18703 65536 -t 1024
ff_bg_wait saturated
saturated=$(field 4)
allocation=$(awk -v s="$saturated" 'BEGIN { printf "%d", s / 4 }')
qos "{max_gbps: $allocation}" "{}"
ff_hup
bw alone blue 18703 65536 -t 1024
ff_bg_wait alone
alone=$(field 4)
echo "victim saturated alone: $saturated Gb/s; allocation $allocation Gb/s"
echo
echo "| attacker | victim alone | victim beside it | ratio | attacker's own result |"
echo "| --- | --- | --- | --- | --- |"
attack() {  # attack NAME CMD...: the victim beside an attacker running CMD in red
  local name=$1
  shift
  "$@" >"$FF_WORK/attacker.log" 2>&1 &
  local apid=$!
  sleep 0.5
  bw victim blue 18704 65536 -t 1024
  ff_bg_wait victim
  local with
  with=$(field 4)
  wait "$apid" || { cat "$FF_WORK/attacker.log"; fail "attacker $name failed"; }
  awk -v a="$alone" -v w="$with" -v n="$name" -v r="$(tail -1 "$FF_WORK/attacker.log")" \
    'BEGIN { printf "| %s | %.2f Gb/s | %.2f Gb/s | %.2f | %s |\n", n, a, w, w / a, r }'
}
storm() { ff_in_container a red "$FF_BUILD/bin/ffv_storm" "$1" $((T + 2)); }
stream() {
  ff_bg_pair stream a b 10.62.0.1 18705 red ib_write_bw -F -p 18705 -s 1048576 -D $((T + 2)) --report_gbits
  ff_bg_wait stream
  echo "$(awk '{ print $4 }' <<<"$ff_result") Gb/s"
}
# An rdma_cm connect storm: bench/cm_connect_rate connecting (address and
# route resolution, a QP, connect, accept, disconnect) again and again.
cmstorm() {
  local bin=$FF_BUILD/bin/cm_connect_rate before
  before=$(ffctl -j status | jq '.counters.cm_requests')
  ff_in_container a red timeout $((T + 2)) "$bin" -s 10.62.0.1 18720 100000000 >/dev/null 2>&1 &
  local server=$!
  ff_wait_listen a 18721 || fail "cm_connect_rate's server did not start"  # its TCP port: PORT + 1
  ff_in_container b red timeout $((T + 1)) "$bin" 10.62.0.1 18720 100000000 >/dev/null 2>&1 || true
  wait "$server" || true
  echo "$(($(ffctl -j status | jq '.counters.cm_requests') - before)) rdma_cm requests"
}
attack "1 MiB WRITE stream" stream
attack "64 B WRITE storm, post lists of 32" storm ops
attack "RNR storm" storm rnr
attack "QP create/destroy storm" storm qp
attack "reg/dereg storm (4 MiB)" storm mr
attack "rdma_cm connect storm" cmstorm
# Control-plane storms cost the router's control thread and the kernel
# (mappings, memfds) CPU that the data path shares on two cores: red's
# control rate is what bounds them.
for rate in 1000 250; do
  qos "{max_gbps: $allocation}" "{max_control_per_s: $rate}"
  ff_hup
  attack "QP create/destroy storm, red's max_control_per_s $rate" storm qp
  attack "reg/dereg storm (4 MiB), red's max_control_per_s $rate" storm mr
  attack "rdma_cm connect storm, red's max_control_per_s $rate" cmstorm
done

echo
echo "## A victim that saturates the poller alone, beside the 1 MiB stream (equal weights: half is its fair share)"
qos "{}" "{}"
ff_hup
stream >"$FF_WORK/stream.out" &
spid=$!
sleep 0.5
bw shared blue 18704 65536 -t 1024
ff_bg_wait shared
wait "$spid"
echo "| victim alone | victim beside the stream | ratio | stream |"
echo "| --- | --- | --- | --- |"
awk -v a="$saturated" -v w="$(field 4)" -v r="$(cat "$FF_WORK/stream.out")" \
  'BEGIN { printf "| %.2f Gb/s | %.2f Gb/s | %.2f | %s |\n", a, w, w / a, r }'

echo
echo "## Victim latency: blue's p99 (2 B, 20000 iterations) alone and beside red's 1 MiB stream"
# Two ways. Event mode (ib_send_lat -e beside ib_send_bw -e: perftest's
# WRITE tests have no event mode): the poller is the only spinning thread,
# so the difference is what the router adds. Busy polling (ib_write_lat
# beside ib_write_bw, Justitia's pair): four spinning threads on two CPUs,
# where the kernel's scheduling decides the tail (runs differ 30-fold).
lat() {  # lat NAME TOOL [ARGS]: sets $p99 (µs)
  ff_bg_pair "$1" a b 10.62.0.1 18706 blue "$2" -F -p 18706 -s 2 -n 20000 "${@:3}"
  ff_bg_wait "$1"
  p99=$(field 8)
}
echo "| victim | antagonist | victim p99 alone | beside it | ratio |"
echo "| --- | --- | --- | --- | --- |"
latency_pair() {  # latency_pair VICTIM_TOOL ANTAGONIST_TOOL ANTAGONIST_ARGS VICTIM_ARGS...
  local victim=$1 antagonist=$2 aargs=$3
  shift 3
  lat solo "$victim" "$@"
  local solo=$p99
  # shellcheck disable=SC2086
  ff_bg_pair anta a b 10.62.0.1 18707 red "$antagonist" -F -p 18707 -s 1048576 $aargs
  sleep 0.5
  lat under "$victim" "$@"
  kill "${FF_BG_CLIENT[anta]}" "${FF_BG_SERVER[anta]}" 2>/dev/null || true
  wait "${FF_BG_CLIENT[anta]}" "${FF_BG_SERVER[anta]}" 2>/dev/null || true
  awk -v v="$victim $*" -v a="$antagonist $aargs" -v s="$solo" -v u="$p99" \
    'BEGIN { printf "| %s | %s | %.2f µs | %.2f µs | %.2f |\n", v, a, s, u, u / s }'
}
latency_pair ib_send_lat ib_send_bw "-e -n 1000000" -e
latency_pair ib_write_lat ib_write_bw "-D 30"

echo
echo "## The poller's cost of scheduling: 64 B ib_write_bw message rate, blue alone"
echo "| QoS | message rate |"
echo "| --- | --- |"
qos "{}" "{}"
ff_hup
bw off blue 18708 64
ff_bg_wait off
echo "| none (weight 1, no caps) | $(field 5) Mmsg/s |"
qos "{max_gbps: 10000, max_mops: 10000}" "{}"
ff_hup
bw on blue 18709 64
ff_bg_wait on
echo "| caps that never bind | $(field 5) Mmsg/s |"
