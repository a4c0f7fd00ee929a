#!/bin/bash
# Three hosts: two senders, each on its own host, share one receiver host.
# Both transfers run at once over the receiver router's two links, and each
# must move all its bytes.
source "$(dirname "$0")/multihost_lib.sh"

mh_host alpha 10.99.0.1
mh_host beta 10.99.0.2
mh_host gamma 10.99.0.3
mh_container s1 10.50.1.1
mh_container s2 10.50.2.1
mh_container r 10.50.3.1
dir=$(mh_static_directory alpha:default:10.50.1.0/24 beta:default:10.50.2.0/24 gamma:default:10.50.3.0/24)
for h in alpha beta gamma; do mh_router "$h" "$dir"; done
for h in alpha beta gamma; do mh_wait_peers "$h" 2; done

# Two servers in r on two ports; the clients in s1 and s2 start together.
mh_in gamma r default timeout 120 ib_write_bw -p 18515 -n 500 >"$FF_WORK/r1.log" 2>&1 &
r1=$!
mh_in gamma r default timeout 120 ib_send_bw -p 18516 -n 500 >"$FF_WORK/r2.log" 2>&1 &
r2=$!
ff_wait_listen r 18515 && ff_wait_listen r 18516 || fail "servers did not start"
mh_in alpha s1 default timeout 120 ib_write_bw -p 18515 -n 500 10.50.3.1 >"$FF_WORK/s1.log" 2>&1 &
c1=$!
mh_in beta s2 default timeout 120 ib_send_bw -p 18516 -n 500 10.50.3.1 >"$FF_WORK/s2.log" 2>&1 &
c2=$!
rc=0
for p in $r1 $r2 $c1 $c2; do wait "$p" || rc=$?; done
if [ $rc -ne 0 ]; then
  for f in r1 r2 s1 s2; do echo "--- $f"; tail -n 5 "$FF_WORK/$f.log"; done
  fail "a transfer failed (rc $rc)"
fi
mh_ctl gamma peers
for peer in alpha beta; do
  got=$(mh_ctl gamma peers | sed -n "s/^peer $peer .* bytes_received=\([0-9]*\).*/\1/p")
  [ "$got" -ge $((500 * 65536)) ] || fail "gamma received $got bytes from $peer, expected >= $((500 * 65536))"
done
echo "PASS: ib_write_bw from alpha ($(grep -E '^ +65536' "$FF_WORK/s1.log" | tr -s ' ')) and ib_send_bw from beta ($(grep -E '^ +65536' "$FF_WORK/s2.log" | tr -s ' ')) into gamma at once"
