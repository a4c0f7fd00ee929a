#!/bin/bash
# ib_write_bw between two containers; the server is killed with SIGKILL in
# the middle of the transfer. The client must fail promptly (error
# completions, no hang), and the router must hold nothing of the dead
# process afterwards.
source "$(dirname "$0")/lib.sh"
ff_start_router
ff_container_pair a 10.35.0.1 b 10.35.0.2

ff_in_container a default ib_write_bw -n 2000000 >"$FF_WORK/server.log" 2>&1 &
FF_PIDS+=($!)
ff_wait_listen a 18515 || fail "server did not start"
start=$(date +%s)
ff_in_container b default timeout 60 ib_write_bw -n 2000000 10.35.0.1 >"$FF_WORK/client.log" 2>&1 &
client=$!
FF_PIDS+=($client)
# Wait until data flows, then kill the server by the pid the router sees.
before=$(ff_bytes)
for _ in $(seq 200); do [ "$(ff_bytes)" -gt "$((before + 100000000))" ] && break; sleep 0.05; done
[ "$(ff_bytes)" -gt "$((before + 100000000))" ] || { cat "$FF_WORK/client.log"; fail "no data moved"; }
# The server connected first: the lowest session number.
server_pid=$(ff_status | sed -n 's/.*client session=\([0-9]*\) pid=\([0-9]*\) program=ib_write_bw.*/\1 \2/p' |
             sort -n | head -1 | cut -d' ' -f2)
[ -n "$server_pid" ] || fail "server not found in ffctl status"
kill -9 "$server_pid"
rc=0
wait "$client" || rc=$?
elapsed=$(( $(date +%s) - start ))
[ $rc -ne 124 ] || fail "the client hung after its peer died"
[ $rc -ne 0 ] || fail "the client claims success although its peer died"
grep -Eq "Completion with error|status" "$FF_WORK/client.log" || { cat "$FF_WORK/client.log"; fail "client saw no error completion"; }
echo "PASS: client failed with error completions $elapsed s after the start (rc $rc): $(grep -m1 -i 'status' "$FF_WORK/client.log")"
for _ in $(seq 100); do ff_status | grep -q 'total clients=0 objects=0' && break; sleep 0.05; done
ff_status | grep -q 'total clients=0 objects=0' || { ff_status; fail "objects left behind"; }
pass "the router holds no object of either process"
echo "2 passed, 0 failed"
