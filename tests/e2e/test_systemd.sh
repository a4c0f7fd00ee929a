#!/bin/bash
# The router under systemd (containers/systemd/): both units pass
# `systemd-analyze verify`, and the router speaks the notify protocol a
# Type=notify unit relies on (READY=1 once serving, RELOADING=1/READY=1 around
# SIGHUP, STOPPING=1, watchdog pings at half WatchdogSec), checked on a
# notify socket of the test's own (PID 1 here is not systemd).
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")/../.." && pwd)

# The units name installed paths; verify them against this build.
for unit in ffrouter.service ffrouter-container.service; do
  sed "s|/usr/local/bin|$FF_BUILD/bin|g" "$here/containers/systemd/$unit" >"$FF_WORK/$unit"
done
systemd-analyze verify "$FF_WORK/ffrouter.service" "$FF_WORK/ffrouter-container.service" 2>"$FF_WORK/verify.log" ||
  { cat "$FF_WORK/verify.log"; fail "systemd-analyze verify"; }
[ ! -s "$FF_WORK/verify.log" ] || { cat "$FF_WORK/verify.log"; fail "systemd-analyze verify warned"; }
printf '[Service]\nType=notify\nExecStart=/nonexistent/ffrouter\n' >"$FF_WORK/broken.service"
! systemd-analyze verify "$FF_WORK/broken.service" 2>/dev/null || fail "systemd-analyze verify passes a unit whose program is missing"
pass "systemd-analyze verify: ffrouter.service and ffrouter-container.service"

# A notify socket: every datagram the router sends, one line each.
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as out:
    while True:
        out.write(s.recv(4096).decode().replace("\n", " ") + "\n")
' "$FF_WORK/notify.sock" "$FF_WORK/notify.log" &
FF_PIDS+=($!)
for _ in $(seq 100); do [ -S "$FF_WORK/notify.sock" ] && break; sleep 0.05; done
wait_for() {  # wait_for PATTERN [COUNT]: COUNT lines matching PATTERN arrived
  for _ in $(seq 200); do
    [ "$(grep -c -- "$1" "$FF_WORK/notify.log" 2>/dev/null)" -ge "${2:-1}" ] && return 0
    sleep 0.05
  done
  cat "$FF_WORK/notify.log"; fail "no '$1' (x${2:-1}) from the router"
}
NOTIFY_SOCKET=$FF_WORK/notify.sock WATCHDOG_USEC=400000 ff_start_router --config "$(ff_tenants_config blue)"
wait_for "READY=1 STATUS=serving 1 tenant(s) on the soft fabric"
pass "READY=1 once serving: $(grep -m1 READY "$FF_WORK/notify.log")"
wait_for "WATCHDOG=1" 3
pass "watchdog pings at half WatchdogSec (3 within a second of WATCHDOG_USEC=400000)"
ff_tenants_config blue red >/dev/null
kill -HUP "$FF_ROUTER_PID"
wait_for "RELOADING=1"
wait_for "READY=1 STATUS=serving 2 tenant(s)"
pass "SIGHUP: RELOADING=1, then READY=1 with the reloaded config's 2 tenants"
kill -TERM "$FF_ROUTER_PID"
wait "$FF_ROUTER_PID" || fail "the router did not stop cleanly"
FF_ROUTER_PID=
wait_for "STOPPING=1"
pass "SIGTERM: STOPPING=1"
echo "4 passed, 0 failed"
