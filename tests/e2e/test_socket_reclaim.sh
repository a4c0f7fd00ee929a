#!/bin/bash
# The tenant socket cannot be taken over: the recommended read-only mount
# keeps a container from replacing it, and a router restarted after someone
# did (a read-write mount, a stale file) reclaims its socket instead of
# refusing to start; one router per run directory is enforced by a lock in
# the run directory itself, which no container sees.
source "$(dirname "$0")/lib.sh"
ff_start_router
sock=$FF_RUN/tenants/default/ffrouter.sock
ff_container c1 10.47.0.2
ff_in_container c1 default sh -c 'rm -f /run/ffrouter/ffrouter.sock' 2>/dev/null &&
  fail "the container removed the router's socket"
[ -S "$sock" ] || fail "the socket is gone"
ff_in_container c1 default ibv_devinfo | grep -q ffvirt0 || fail "the container cannot reach the router"
pass "read-only mount: the container reaches the socket and cannot replace it"

# A second router on the same run directory is refused while this one runs.
"$FFROUTER" --run-dir "$FF_RUN" >"$FF_WORK/second.log" 2>&1 && fail "a second router started on the same run dir"
grep -q "another ffrouter is already serving" "$FF_WORK/second.log" || { cat "$FF_WORK/second.log"; fail "no clear error"; }
pass "a second router on the run directory is refused"

# Someone replaces the socket with a listener of their own, and the router
# dies without cleaning up: the next router reclaims the socket.
python3 - "$sock" >"$FF_WORK/impostor.log" 2>&1 <<'PY' &
import os, socket, sys, time
os.unlink(sys.argv[1])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(1)
print("listening", flush=True)
time.sleep(30)
PY
impostor=$!
FF_PIDS+=("$impostor")
for _ in $(seq 50); do grep -q listening "$FF_WORK/impostor.log" && break; sleep 0.1; done
kill -9 "$FF_ROUTER_PID"
wait "$FF_ROUTER_PID" 2>/dev/null || true
ff_start_router
ff_in_container c1 default ibv_devinfo | grep -q ffvirt0 || { cat "$FF_WORK/router.log"; fail "the restarted router does not serve"; }
pass "a restarted router reclaims a socket someone else took"
echo "3 passed, 0 failed"
