#!/bin/bash
# More than one poller (docs/PERFORMANCE.md): tenants blue and red (served
# by pollers 1 and 0 of two: router/fabric/fabric.h, poller_of) each
# saturate the router with 1 MiB SENDs (ib_send_bw, 512 in flight,
# completions by event so that the programs sleep and what is measured is
# the pollers' copying), with --pollers 1 and with --pollers 2 pinned one
# per CPU; their rates over 3 s once both move (ffctl stats -w) and the
# sum, and blue alone on one poller for the scale. Needs root; builds
# Release first.
#
#   bench/pollers.sh [T (default 8): each program sends 3000 x T MiB]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh Release >/dev/null
export FF_BUILD=$PWD/build
source tests/e2e/lib.sh
T=${1:-8}
ff_container_pair a 10.63.0.1 b 10.63.0.2
ffctl() { "$FFCTL" --run-dir "$FF_RUN" "$@"; }

bw() {  # bw NAME TENANT PORT: ib_send_bw, 3000 x $T SENDs of 1 MiB, in the background (events: no -D)
  ff_bg_pair "$1" a b 10.63.0.1 "$3" "$2" ib_send_bw -F -e -p "$3" -s 1048576 -t 512 -r 512 -n $((T * 3000)) --report_gbits
}
# row LABEL TENANT...: the tenants' rates over 3 s once all move, as a table row.
row() {
  local label=$1 t
  shift
  for t in "$@"; do
    for _ in $(seq 50); do
      [ "$(ffctl -j stats -w 0.2 -c 1 | jq -r ".$t.sent.send.bytes // 0")" != 0 ] && break
    done
  done
  ffctl -j stats -w 3 -c 1 >"$FF_WORK/rates.json"
  jq -r --arg what "$label" '[.blue.sent.send.bytes // 0, .red.sent.send.bytes // 0] as [$b, $r] |
    "| \($what) | \($b * 8 / 1e9 * 100 | round / 100) Gb/s | \($r * 8 / 1e9 * 100 | round / 100) Gb/s | \(($b + $r) * 8 / 1e9 * 100 | round / 100) Gb/s |"' \
    "$FF_WORK/rates.json"
}
config=$(ff_tenants_config blue red)
restart() {
  if [ -n "$FF_ROUTER_PID" ]; then kill "$FF_ROUTER_PID"; wait "$FF_ROUTER_PID" || true; fi
  ff_start_router --config "$config" "$@"
}

echo "## Two tenants saturating the router, one poller and two ($(nproc) CPUs; rates over 3 s)"
echo "| pollers | blue | red | both |"
echo "| --- | --- | --- | --- |"
restart --pollers 1
bw alone blue 18800
row "1, blue alone" blue
ff_bg_wait alone
bw b1 blue 18801
bw r1 red 18802
row "1" blue red
ff_bg_wait b1
ff_bg_wait r1
restart --pollers 2 --poller-cpus 0,1
bw b2 blue 18803
bw r2 red 18804
row "2 (pinned to CPUs 1 and 0)" blue red
ff_bg_wait b2
ff_bg_wait r2
restart --pollers 2
bw b3 blue 18805
bw r3 red 18806
row "2 (not pinned)" blue red
ff_bg_wait b3
ff_bg_wait r3
