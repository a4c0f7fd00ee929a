#!/bin/bash
# Links between routers secured with TLS 1.3 (docs/SECURITY.md), first with a
# pre-shared key, then with certificates. Each time two routers carry every
# RC operation with every byte checked (ffv_crosshost); then, while
# ibv_rc_pingpong runs between them, impostors on a third host (gamma, a
# router of the directory that runs none) connect to alpha's peer port, each
# sending a valid Hello that names beta: in the clear, with the wrong key (or
# a certificate for gamma, or one another CA signed), or noise. Each is
# refused with a log line naming its address and why, counted in beta's
# failures; no QP fails and the program keeps running. 70 connections that
# say nothing take at most 64 handshake slots, for at most their deadline.
# The same impostor with the right credentials for its own name is
# accepted, so the refusals are the credentials' doing.
source "$(dirname "$0")/multihost_lib.sh"
IMPOSTOR=$FF_BUILD/bin/ffv_impostor

mh_host alpha 10.99.0.1
mh_host beta 10.99.0.2
mh_host gamma 10.99.0.3
mh_container a 10.50.1.1
mh_container b 10.50.2.1
dir=$(mh_static_directory alpha:default:10.50.1.0/24 beta:default:10.50.2.0/24 gamma:default:10.50.3.0/24)

peer_field() {  # peer_field HOST PEER FIELD: a counter of HOST's link to PEER
  mh_ctl "$1" peers | sed -n "s/^peer $2 .* $3=\([0-9]*\).*/\1/p"
}

# wait_frames N: until alpha has sent N more frames to beta.
wait_frames() {
  local before
  before=$(peer_field alpha beta frames_sent)
  for _ in $(seq 400); do
    [ "$(peer_field alpha beta frames_sent)" -ge $((before + $1)) ] && return 0
    sleep 0.05
  done
  tail "$FF_WORK"/long-*.log
  fail "$FF_LINK_SECURITY: no traffic between alpha and beta"
}

# impostor EXPECT WHAT NAME MODE [FILE]: runs one from gamma against alpha;
# EXPECT is accepted or refused.
impostor() {
  local expect=$1 what=$2 out
  shift 2
  out=$(ip netns exec "ffh-gamma-$$" "$IMPOSTOR" 10.99.0.1:$FF_PORT "$@" 2>&1) || true
  [[ $out == "$expect:"* ]] || fail "impostor $what: expected $expect, got: $out"
  echo "  impostor $what: $out"
}

# flood: 100 connections from gamma that say nothing, held 2 s: alpha sets
# up at most 64 plus one per poller for each router of its directory at once
# and refuses the rest at once; then (they gone, or past their 3 s deadline)
# a connection with the right credentials gets through.
flood() {
  local refused="[0-9]+ connections are being set up already"
  ip netns exec "ffh-gamma-$$" bash -c "for i in \$(seq 100); do exec {fd}<>/dev/tcp/10.99.0.1/$FF_PORT; done; sleep 2" &
  local holder=$!
  for _ in $(seq 100); do
    grep -Eq "$refused" "$FF_WORK/router-alpha.log" && break
    sleep 0.05
  done
  grep -Eq "$refused" "$FF_WORK/router-alpha.log" || fail "$FF_LINK_SECURITY: 100 silent connections, and none refused"
  wait "$holder"
  pass "$FF_LINK_SECURITY: a flood of silent connections: $(grep -Ec "$refused" "$FF_WORK/router-alpha.log") refused \
at once, $(grep -Eo "$refused" "$FF_WORK/router-alpha.log" | head -1 | cut -d' ' -f1) held until they closed"
}

stop_routers() {
  local h
  for h in alpha beta; do
    kill "${FF_HOST_ROUTER[$h]}"
    wait "${FF_HOST_ROUTER[$h]}" 2>/dev/null || true
    unset "FF_HOST_ROUTER[$h]"
  done
}

# round MODE IMPOSTOR...: routers with MODE's link security, traffic, and the
# impostors (each: EXPECT WHAT NAME MODE FILE; "flood": flood) besides the
# plaintext and noisy ones.
round() {
  FF_LINK_SECURITY=$1
  shift
  mh_router alpha "$dir"
  mh_router beta "$dir"
  mh_wait_peers alpha 1
  grep -Eq "peer beta: outbound connection (of poller 0 )?up \(TLS 1.3" "$FF_WORK/router-alpha.log" ||
    fail "$FF_LINK_SECURITY: alpha's link to beta is not TLS: $(grep 'peer beta' "$FF_WORK/router-alpha.log")"
  mh_pair alpha a beta b 10.50.1.1 18515 default "$FF_BUILD/bin/ffv_crosshost"
  pass "$FF_LINK_SECURITY: across hosts over TLS: $(tail -1 "$FF_WORK/client.log")"

  local connects failures
  connects=$(peer_field alpha beta connects)
  failures=$(peer_field alpha beta failures)
  # A program that runs until stopped: a failed QP would end it at once.
  mh_in alpha a default timeout 120 ibv_rc_pingpong -g 0 -n 100000000 >"$FF_WORK/long-server.log" 2>&1 &
  local spid=$!
  ff_wait_listen a 18515 || fail "pingpong server did not start"
  mh_in beta b default timeout 120 ibv_rc_pingpong -g 0 -n 100000000 10.50.1.1 >"$FF_WORK/long-client.log" 2>&1 &
  local cpid=$!
  wait_frames 1000
  impostor refused "in the clear" beta plain
  impostor refused "sending noise" beta noise
  while [ $# -gt 0 ]; do
    if [ "$1" = flood ]; then
      flood
      shift
      continue
    fi
    impostor "$1" "$2" "$3" "$4" "$5"
    shift 5
  done
  wait_frames 1000  # the traffic goes on
  kill -0 "$spid" 2>/dev/null && kill -0 "$cpid" 2>/dev/null ||
    { tail "$FF_WORK"/long-*.log; fail "$FF_LINK_SECURITY: the pingpong ended while the impostors came"; }
  pass "$FF_LINK_SECURITY: ibv_rc_pingpong kept running while the impostors were refused"

  local h
  for h in alpha beta; do
    mh_ctl $h peers | grep -Eq 'qps_failed=[1-9]' && { mh_ctl $h peers; fail "$FF_LINK_SECURITY: $h failed QPs"; }
  done
  [ "$(peer_field alpha beta connects)" = "$connects" ] || fail "$FF_LINK_SECURITY: alpha's links to beta were replaced"
  [ "$(peer_field alpha beta failures)" -ge $((failures + 2)) ] ||
    { mh_ctl alpha peers; fail "$FF_LINK_SECURITY: the impostors naming beta are not counted in its failures"; }
  grep -q "refused a connection from 10.99.0.3:[0-9]* claiming to be 'beta': it sent a plaintext Hello" \
    "$FF_WORK/router-alpha.log" || fail "$FF_LINK_SECURITY: no log line refusing the plaintext impostor"
  grep "refused a connection from 10.99.0.3" "$FF_WORK/router-alpha.log" | sed 's/^/  alpha: /'
  pass "$FF_LINK_SECURITY: every impostor refused, logged with its address and why; no QP failed"
  # (a program may end between the listing and the kill)
  for ns in "ffc-a-$$" "ffc-b-$$"; do ip netns pids "$ns" | xargs -r kill 2>/dev/null || true; done
  wait "$spid" "$cpid" 2>/dev/null || true
  stop_routers
  : >"$FF_WORK/router-alpha.log"
}

wrong=$FF_WORK/wrong.key
mh_psk "$wrong"
mh_psk "$FF_WORK/link.key"
round psk \
  refused "with the wrong key" beta psk "$wrong" \
  flood \
  accepted "with the key, as gamma" gamma psk "$FF_WORK/link.key"

mh_ca "$FF_WORK/ca"
mh_ca "$FF_WORK/other-ca"
mh_cert gamma "$FF_WORK/ca" "$FF_WORK/gamma.pem"
mh_cert beta "$FF_WORK/other-ca" "$FF_WORK/beta-other-ca.pem"
round cert \
  refused "with gamma's certificate" beta cert "$FF_WORK/gamma.pem" \
  refused "with another CA's certificate for beta" beta cert "$FF_WORK/beta-other-ca.pem" \
  accepted "with gamma's certificate, as gamma" gamma cert "$FF_WORK/gamma.pem"

# A router whose certificate is for another name does not start, and says so.
out=$("$FFROUTER" --run-dir "$FF_WORK/misnamed" --router-name alpha --listen 10.99.0.1:$FF_PORT --directory "$dir" \
  --link-cert "$FF_WORK/gamma.pem" --link-ca "$FF_WORK/ca.pem" 2>&1) && fail "a router started with gamma's certificate as alpha"
grep -q "is not for 'alpha', this router's --router-name" <<<"$out" || fail "no clear error for a misnamed certificate: $out"
pass "a router with another router's certificate refuses to start: $(grep -o "\-\-link-cert [^ ]*: its.*" <<<"$out")"
