#!/bin/bash
# Out of descriptors: a tenant that opens connections until the router's
# accept() fails with EMFILE does not make the router spin (it retries with a
# backoff), the router keeps its state, and once the connections go it
# serves again. The router runs with a small descriptor limit.
source "$(dirname "$0")/lib.sh"
command -v prlimit >/dev/null || fail "prlimit (util-linux) is missing"
prlimit --nofile=96:96 "$FFROUTER" --run-dir "$FF_RUN" >"$FF_WORK/router.log" 2>&1 &
FF_ROUTER_PID=$!
"$FFCTL" --run-dir "$FF_RUN" --wait 10 status >/dev/null || { cat "$FF_WORK/router.log"; fail "router did not start"; }

cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$FF_ROUTER_PID/stat" 2>/dev/null || { tail -n 30 "$FF_WORK/router.log"; fail "the router died"; }
}
# 200 connections held open for 3 s: more than the router has descriptors.
python3 - "$FF_RUN/tenants/default/ffrouter.sock" >"$FF_WORK/flood.log" 2>&1 <<'PY' &
import socket, sys, time
held = []
for _ in range(200):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(sys.argv[1])
        held.append(s)
    except OSError:
        s.close()
print(f"connected {len(held)}", flush=True)
time.sleep(3)
PY
flood=$!
sleep 0.5
before=$(cpu_ticks)
sleep 2
after=$(cpu_ticks)
used=$((after - before))
echo "router CPU while out of descriptors: $used ticks in 2 s ($(getconf CLK_TCK) per s)"
grep -q "accept on .* failed" "$FF_WORK/router.log" || fail "the router never ran out of descriptors (the test did not test anything)"
[ "$used" -lt 60 ] || fail "the router spun while out of descriptors ($used ticks in 2 s)"
pass "out of descriptors, the router waits instead of spinning"
wait "$flood"
for _ in $(seq 50); do ff_status | grep -q "total clients=0" && break; sleep 0.1; done
ff_status | grep -q "total clients=0" || { ff_status; fail "the flood's sessions were not closed"; }
ff_container c1 10.46.0.2
ff_in_container c1 default ibv_devinfo | grep -q ffvirt0 || fail "a new client is not served after the flood"
pass "the connections gone, the router serves a new client"
echo "2 passed, 0 failed"
