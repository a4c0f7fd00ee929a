#!/bin/bash
# Two tenants on one router: one registers memory for remote writes and
# publishes its address and rkey; the other, holding both, writes there
# through its own QP and gets IBV_WC_REM_ACCESS_ERR; the memory is intact.
# Then a QP connected ahead of time to the QP number the device hands out
# next (another tenant's, once created) never reaches it.
# FF_ROUTER_ARGS selects the fabric (tests/hw runs this on the verbs fabric).
source "$(dirname "$0")/lib.sh"
# shellcheck disable=SC2086
ff_start_router --config "$(ff_tenants_config blue red)" ${FF_ROUTER_ARGS:-}
ff_container a 10.41.0.1
ff_container b 10.41.0.2
mkfifo "$FF_WORK/hold"
ff_in_container a blue "$FF_BUILD/bin/ffv_isolation" serve "$FF_WORK/key" <"$FF_WORK/hold" >"$FF_WORK/serve.log" 2>&1 &
serve=$!
exec 7>"$FF_WORK/hold"
for _ in $(seq 200); do [ -s "$FF_WORK/key" ] && break; sleep 0.05; done
[ -s "$FF_WORK/key" ] || { cat "$FF_WORK/serve.log"; fail "the blue tenant did not register its memory"; }
read -r addr rkey <"$FF_WORK/key"
ff_in_container b red "$FF_BUILD/bin/ffv_isolation" attack "$addr" "$rkey" || fail "the red tenant's write did not fail with REM_ACCESS_ERR"
exec 7>&-
wait "$serve" || { cat "$FF_WORK/serve.log"; fail "the blue tenant's memory changed"; }
cat "$FF_WORK/serve.log"
pass "a WRITE with another tenant's valid rkey fails with IBV_WC_REM_ACCESS_ERR"

rm -f "$FF_WORK/qpn"
mkfifo "$FF_WORK/go" "$FF_WORK/done"
ff_in_container a blue "$FF_BUILD/bin/ffv_isolation" preconnect "$FF_WORK/qpn" <"$FF_WORK/go" >"$FF_WORK/pre.log" 2>&1 &
pre=$!
exec 8>"$FF_WORK/go"
for _ in $(seq 200); do [ -s "$FF_WORK/qpn" ] && break; sleep 0.05; done
[ -s "$FF_WORK/qpn" ] || { cat "$FF_WORK/pre.log"; fail "blue did not connect its QP"; }
ff_in_container b red "$FF_BUILD/bin/ffv_isolation" victim "$FF_WORK/qpn" <"$FF_WORK/done" >"$FF_WORK/victim.log" 2>&1 &
victim=$!
exec 9>"$FF_WORK/done"
for _ in $(seq 200); do grep -q ready "$FF_WORK/victim.log" && break; kill -0 $victim 2>/dev/null || break; sleep 0.05; done
grep -q ready "$FF_WORK/victim.log" || { cat "$FF_WORK/victim.log"; fail "red did not get the predicted QP number"; }
echo go >&8
rc=0
wait "$pre" || rc=$?
exec 9>&-
wait "$victim" || rc=$((rc + 10 * $?))
cat "$FF_WORK/pre.log" "$FF_WORK/victim.log"
[ $rc -eq 0 ] || fail "a QP connected ahead of time reached another tenant's QP (rc $rc)"
exec 8>&-
pass "a QP connected to a number not yet handed out never reaches the other tenant's QP that gets it"

# Multicast (soft fabric: the verbs fabric has none): red attached to the
# group blue sends to gets nothing, while blue's own member gets it all.
if [[ "${FF_ROUTER_ARGS:-}" != *"--fabric verbs"* ]]; then
  ff_container c 10.41.0.3
  ff_in_container c blue timeout 60 "$FF_BUILD/bin/ffv_mcast" recv 239.8.8.8 3 >"$FF_WORK/mblue.log" 2>&1 &
  mblue=$!
  ff_in_container b red timeout 60 "$FF_BUILD/bin/ffv_mcast" recv 239.8.8.8 0 >"$FF_WORK/mred.log" 2>&1 &
  mred=$!
  for f in mblue mred; do
    for _ in $(seq 200); do grep -q ready "$FF_WORK/$f.log" && break; sleep 0.05; done
  done
  ff_in_container a blue "$FF_BUILD/bin/ffv_mcast" send 239.8.8.8 3 >"$FF_WORK/msend.log" 2>&1 ||
    { cat "$FF_WORK/msend.log"; fail "blue's multicast sender failed"; }
  wait "$mblue" || { cat "$FF_WORK/mblue.log"; fail "blue's member of the group did not get blue's datagrams"; }
  wait "$mred" || { cat "$FF_WORK/mred.log"; fail "red's member of the group got blue's datagrams"; }
  pass "a multicast group of one tenant's never delivers to another tenant's QP attached to the same group"

  # XRC (soft fabric): both tenants open the XRC domain of one file; each
  # gets its own, red cannot open blue's receive QP, and red's request
  # naming blue's SRQ number fails; nothing reaches blue.
  mkfifo "$FF_WORK/xhold"
  ff_in_container a blue "$FF_BUILD/bin/ffv_xrc_isolation" owner "$FF_WORK/xrc_domain" "$FF_WORK/xrc" \
    <"$FF_WORK/xhold" >"$FF_WORK/xowner.log" 2>&1 &
  xowner=$!
  exec 6>"$FF_WORK/xhold"
  for _ in $(seq 200); do [ -s "$FF_WORK/xrc" ] && break; sleep 0.05; done
  [ -s "$FF_WORK/xrc" ] || { cat "$FF_WORK/xowner.log"; fail "blue did not make its XRC objects"; }
  read -r xqpn xsrqn <"$FF_WORK/xrc"
  ff_in_container b red "$FF_BUILD/bin/ffv_xrc_isolation" intruder "$FF_WORK/xrc_domain" "$xqpn" "$xsrqn" ||
    fail "red reached blue's XRC domain, receive QP or SRQ"
  exec 6>&-
  wait "$xowner" || { cat "$FF_WORK/xowner.log"; fail "something reached blue's XRC SRQ"; }
  pass "XRC: a tenant's domain of a file, its receive QPs and SRQs are its own"
fi
echo "done, 0 failed"
