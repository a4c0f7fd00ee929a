#!/bin/bash
# What the operator sees: per-tenant and per-QP counters equal to what the
# programs did (ibv_rc_pingpong's messages, ib_write_bw's writes), in
# `ffctl -j` JSON and in /metrics (checked by promtool), /healthz and
# /readyz, `ffctl resource show`, `ffctl version`, and ffctl's exit codes.
# FF_ROUTER_ARGS selects the fabric (tests/hw runs this on the verbs fabric,
# with fewer iterations: FF_OV_PINGS, FF_OV_WRITES).
source "$(dirname "$0")/lib.sh"
command -v promtool >/dev/null || fail "promtool is missing (Debian package prometheus; scripts/install-deps.sh)"
pings=${FF_OV_PINGS:-1000}
writes=${FF_OV_WRITES:-5000}
port=$((20000 + $$ % 20000))
# shellcheck disable=SC2086
ff_start_router --config "$(ff_tenants_config blue red)" --metrics-listen "127.0.0.1:$port" ${FF_ROUTER_ARGS:-}
metrics() { curl -sf "http://127.0.0.1:$port/metrics"; }
ffctl() { "$FFCTL" --run-dir "$FF_RUN" "$@"; }

# Exact counts: the pingpong's N round trips of 4096 bytes are 2N SENDs,
# each signaled, and 2N receives, all in tenant blue.
ff_container_pair a 10.44.0.1 b 10.44.0.2
ff_pair a b 10.44.0.1 18515 blue ibv_rc_pingpong -g 0 -n "$pings" -s 4096
ffctl -j stats >"$FF_WORK/stats.json" || fail "ffctl -j stats"
blue() { jq -r ".blue$1" "$FF_WORK/stats.json"; }
[ "$(blue .sent.send.ops)" = $((2 * pings)) ] ||
  { cat "$FF_WORK/stats.json"; fail "blue's SENDs: $(blue .sent.send.ops), not $((2 * pings))"; }
[ "$(blue .sent.send.bytes)" = $((2 * pings * 4096)) ] || fail "blue's SEND bytes: $(blue .sent.send.bytes)"
[ "$(blue .received.ops)" = $((2 * pings)) ] || fail "blue's receives: $(blue .received.ops)"
[ "$(blue .received.bytes)" = $((2 * pings * 4096)) ] || fail "blue's received bytes: $(blue .received.bytes)"
[ "$(blue .completions.success)" = $((4 * pings)) ] || fail "blue's successful completions: $(blue .completions.success)"
[ "$(jq -r '.red.sent | length' "$FF_WORK/stats.json")" = 0 ] || fail "red did nothing, yet has counts"
pass "ffctl -j stats: blue's counters equal ibv_rc_pingpong's $((2 * pings)) SENDs of 4096 bytes and receives"

# perftest's own figure: ib_write_bw -n N posts N WRITEs of 65536 bytes
# (-F: it reports even when its clock calibration fails, so that it never
# runs twice).
ff_pair a b 10.44.0.1 18516 red ib_write_bw -F -p 18516 -n "$writes" -s 65536
ffctl -j stats >"$FF_WORK/stats.json"
[ "$(jq -r .red.sent.write.ops "$FF_WORK/stats.json")" = "$writes" ] || { cat "$FF_WORK/stats.json"; fail "red's WRITEs"; }
[ "$(jq -r .red.sent.write.bytes "$FF_WORK/stats.json")" = $((writes * 65536)) ] || fail "red's WRITE bytes"
metrics >"$FF_WORK/metrics.txt" || fail "GET /metrics"
grep -qx "ffrouter_tenant_work_requests_total{tenant=\"red\",opcode=\"write\"} $writes" "$FF_WORK/metrics.txt" ||
  { grep red "$FF_WORK/metrics.txt"; fail "/metrics disagrees with ib_write_bw"; }
grep -qx "ffrouter_tenant_bytes_total{tenant=\"blue\",direction=\"sent\",opcode=\"send\"} $((2 * pings * 4096))" \
  "$FF_WORK/metrics.txt" || fail "/metrics disagrees with ibv_rc_pingpong"
promtool check metrics <"$FF_WORK/metrics.txt" || fail "promtool check metrics"
# The pollers moved all that: some of their time was busy.
awk '$1 == "ffrouter_poller_busy_seconds_total" && $2 > 0 { found = 1 } END { exit !found }' "$FF_WORK/metrics.txt" ||
  { grep poller "$FF_WORK/metrics.txt"; fail "no busy poller time after the transfers"; }
pass "/metrics agrees with perftest's count ($writes x 64 KiB WRITEs) and passes promtool check metrics"

[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")" = 200 ] || fail "/healthz"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] || fail "/readyz"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/nothing")" = 404 ] || fail "an unknown path"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/metrics")" = 405 ] || fail "POST"
# A request that never ends, and a flood of idle connections: bounded, and
# the router still answers.
head -c 20000 /dev/zero | tr '\0' 'a' | timeout 5 bash -c "cat >/dev/tcp/127.0.0.1/$port" 2>/dev/null || true
for _ in $(seq 40); do exec {fd}<>"/dev/tcp/127.0.0.1/$port" && FF_IDLE+=("$fd"); done
for fd in "${FF_IDLE[@]}"; do exec {fd}>&-; done
metrics >/dev/null || fail "/metrics after garbage and idle connections"
ffctl status >/dev/null || fail "the router stopped answering its admin socket"
pass "/healthz, /readyz, 404, 405; oversized requests and idle connections leave the router serving"

# Per QP: a pingpong server waits for its peer with its QP made.
ff_in_container a blue ibv_rc_pingpong -g 0 -p 18517 >/dev/null 2>&1 &
FF_PIDS+=($!)
for _ in $(seq 200); do
  [ "$(ffctl -j resource show qp tenant blue | jq length)" = 1 ] && break
  sleep 0.05
done
ffctl -j resource show qp tenant blue >"$FF_WORK/qps.json"
[ "$(jq -r '.[0].type' "$FF_WORK/qps.json")" = RC ] || { cat "$FF_WORK/qps.json"; fail "resource show qp"; }
[ "$(jq -r '.[0].program' "$FF_WORK/qps.json")" = ibv_rc_pingpong ] || fail "resource show qp: program"
[ "$(ffctl -j resource show qp tenant red | jq length)" = 0 ] || fail "resource show qp tenant red lists blue's QP"
ffctl resource show cq tenant blue | grep -q "cq count 1" || fail "resource show cq"
ffctl -j status | jq -e '.tenants[] | select(.name == "blue") | .clients | length == 1' >/dev/null ||
  fail "ffctl -j status"
ffctl -j peers | jq -e '.peers | length == 0' >/dev/null || fail "ffctl -j peers"
ffctl version | grep -q "^router: ffrouter " || fail "ffctl version"
pass "ffctl resource show qp|cq, -j status/peers/version"

rc=0
ffctl bogus >/dev/null 2>&1 || rc=$?
[ $rc = 2 ] || fail "an unknown command exits $rc, not 2"
rc=0
ffctl resource show widgets >/dev/null 2>&1 || rc=$?
[ $rc = 2 ] || fail "an unknown kind exits $rc, not 2"
rc=0
"$FFCTL" --run-dir "$FF_WORK/nowhere" status >/dev/null 2>&1 || rc=$?
[ $rc = 1 ] || fail "an unreachable router exits $rc, not 1"
ffctl --help >/dev/null || fail "--help exits non-zero"
pass "ffctl exit codes: 0 done, 1 router unreachable, 2 usage"
echo "5 passed, 0 failed"
