#!/bin/bash
# Real containers (podman with runc): the router runs from its image
# (containers/Containerfile.router) as a privileged sidecar with the host's
# pid and network namespaces and its run directory on the host; `ffctl cdi`
# writes a CDI spec per tenant; app containers from the app image
# (containers/Containerfile.app) get a tenant's device with
# `podman run --device KIND=TENANT` and nothing else: no socket mount, no
# LD_PRELOAD of their own. Unmodified programs run between two of them, and
# the router's counters show each went through it. Images: built by
# containers/build-images.sh (scripts/test.sh builds them once per run;
# this test again when they do not hold this build's binaries).
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=containers/podman-env.sh
source "$here/containers/podman-env.sh"
TAG=${FF_IMAGE_TAG:-dev}
KIND="ffe2e$$.ffrouter.io/tenant"  # this run's own kind: specs of other runs never collide
CDI_DIR=/var/run/cdi
LABEL="ffe2e=$$"

containers_cleanup() {
  set +e
  podman ps -aq --filter "label=$LABEL" | xargs -r podman rm -f -t 0 >/dev/null 2>&1
  rm -f "$CDI_DIR"/ffe2e$$.ffrouter.io-tenant_*.json
  ff_cleanup
}
trap containers_cleanup EXIT

bash "$here/containers/build-images.sh" --if-stale "$FF_BUILD" "$TAG" || fail "the images did not build"

# The router, from its image.
config=$(ff_tenants_config blue red)
mkdir -p "$FF_RUN"
# (FFR_POLLERS, when the suite sets it, reaches the router in its container too.)
podman run -d --name "ffe2e-router-$$" --label "$LABEL" --privileged --pid=host --network host \
  ${FFR_POLLERS:+-e FFR_POLLERS="$FFR_POLLERS"} -v "$FF_RUN:$FF_RUN" -v "$config:$config:ro" \
  "localhost/ffrouter:$TAG" --run-dir "$FF_RUN" --config "$config" \
  >/dev/null || fail "the router container did not start"
"$FFCTL" --run-dir "$FF_RUN" --wait 20 status >/dev/null || { podman logs "ffe2e-router-$$"; fail "router in a container"; }
pass "the router runs from localhost/ffrouter:$TAG (privileged, host pid and network namespaces)"

"$FFCTL" --run-dir "$FF_RUN" cdi --kind "$KIND" --output-dir "$CDI_DIR" >"$FF_WORK/cdi.txt" || fail "ffctl cdi"
for t in blue red; do
  grep -q "^$KIND=$t	$CDI_DIR/ffe2e$$.ffrouter.io-tenant_$t.json\$" "$FF_WORK/cdi.txt" || { cat "$FF_WORK/cdi.txt"; fail "no spec for $t"; }
done
pass "ffctl cdi wrote a spec per tenant: $(tr '\n' ' ' <"$FF_WORK/cdi.txt" | cut -c1-160)"

# Every program of this test runs in an app container with a tenant's device:
# lib.sh's pairs and helpers call this.
ff_in_container() {
  local ns="ffc-$1-$$" tenant=$2
  shift 2
  podman run --rm -i --label "$LABEL" --network "ns:/run/netns/$ns" --device "$KIND=$tenant" \
    --env 'UCX_*' -v "$FF_BUILD/bin:$FF_BUILD/bin:ro" -v "$FF_WORK/share:$FF_WORK/share" \
    "localhost/ffrouter-app:$TAG" "$@"
}
mkdir -p "$FF_WORK/share"
ff_container_pair a 10.48.0.1 b 10.48.0.2

out=$(ff_in_container a blue ibv_devinfo) || fail "ibv_devinfo in an app container"
grep -q "hca_id:	ffvirt0" <<<"$out" || { echo "$out"; fail "ibv_devinfo shows no ffvirt0"; }
grep -q "state:			PORT_ACTIVE" <<<"$out" || fail "ffvirt0's port is not active"
pass "ibv_devinfo in an app container sees ffvirt0 (the CDI device alone: socket, shim, LD_PRELOAD)"

through() {  # through NAME BYTES_BEFORE: the router moved bytes for NAME
  [ "$(ff_bytes)" -gt "$2" ] || fail "$1 did not go through the router"
}
before=$(ff_bytes)
ff_pair a b 10.48.0.1 18515 blue ibv_rc_pingpong -g 0 -n 200
grep -q "200 iters" "$FF_WORK/client.log" || fail "ibv_rc_pingpong: $(tail -2 "$FF_WORK/client.log")"
through ibv_rc_pingpong "$before"
pass "ibv_rc_pingpong -g 0 between two app containers"

before=$(ff_bytes)
ff_pair a b 10.48.0.1 18515 blue ib_write_bw -n 2000 -s 65536
through ib_write_bw "$before"
pass "ib_write_bw: $(grep -E '^ +65536' "$FF_WORK/client.log" | tr -s ' ')"
before=$(ff_bytes)
ff_pair a b 10.48.0.1 18515 blue ib_send_lat -n 2000
through ib_send_lat "$before"
pass "ib_send_lat: $(grep -E '^ +2 ' "$FF_WORK/client.log" | tr -s ' ')"

export UCX_TLS=rc_verbs UCX_NET_DEVICES=ffvirt0:1
before=$(ff_bytes)
ff_pair a b 10.48.0.1 13337 blue timeout 60 ucx_perftest -d ffvirt0:1 -x rc_verbs -t put_bw -s 65536 -D zcopy -n 2000
grep -q "^Final:" "$FF_WORK/client.log" || fail "ucx_perftest: $(tail -3 "$FF_WORK/client.log")"
through ucx_perftest "$before"
pass "ucx_perftest rc_verbs put_bw: $(grep '^Final:' "$FF_WORK/client.log" | tr -s ' ')"
unset UCX_TLS UCX_NET_DEVICES

before=$(ff_bytes)
ff_cm_pair_in rping "" a 10.48.0.1 "" b blue rping -s -a 10.48.0.1 -C 50 -v -- rping -c -a 10.48.0.1 -C 50 -v -V
grep -q "rdma-ping-49" "$FF_WORK/client.log" || fail "rping: no 50th ping"
through rping "$before"
pass "rdma_cm: rping -V between two app containers"

# kill -9 of an app container: the router closes its session.
podman run -d --name "ffe2e-hold-$$" --label "$LABEL" --network "ns:/run/netns/ffc-a-$$" --device "$KIND=blue" \
  -v "$FF_BUILD/bin:$FF_BUILD/bin:ro" "localhost/ffrouter-app:$TAG" "$FF_BUILD/bin/ffv_hold" 3 >/dev/null
for _ in $(seq 200); do ff_status | grep -q "program=ffv_hold" && break; sleep 0.05; done
ff_status | grep -q "program=ffv_hold .*pds=3" || { ff_status; fail "the held PDs do not show"; }
podman kill -s KILL "ffe2e-hold-$$" >/dev/null
for _ in $(seq 200); do ff_status | grep -q "program=ffv_hold" || break; sleep 0.05; done
! ff_status | grep -q "program=ffv_hold" || fail "the router kept the killed container's session"
pass "podman kill -s KILL of an app container: the router released its session and objects"

# Isolation: red serves memory; a container given blue's device (whatever
# it wanted to be) is blue, and red's address and rkey reach nothing.
mkfifo "$FF_WORK/share/hold"
ff_in_container a red "$FF_BUILD/bin/ffv_isolation" serve "$FF_WORK/share/key" <"$FF_WORK/share/hold" \
  >"$FF_WORK/serve.log" 2>&1 &
serve=$!
exec 7>"$FF_WORK/share/hold"
for _ in $(seq 200); do [ -s "$FF_WORK/share/key" ] && break; sleep 0.05; done
[ -s "$FF_WORK/share/key" ] || { cat "$FF_WORK/serve.log"; fail "red did not register its memory"; }
read -r addr rkey <"$FF_WORK/share/key"
ff_in_container b blue "$FF_BUILD/bin/ffv_isolation" attack "$addr" "$rkey" ||
  fail "a container with blue's device reached red's memory"
exec 7>&-
wait "$serve" || { cat "$FF_WORK/serve.log"; fail "red's memory changed"; }
pass "a container with blue's CDI device cannot reach red's memory (IBV_WC_REM_ACCESS_ERR, memory intact)"

podman stop -t 10 "ffe2e-router-$$" >/dev/null
pass "the router container stops on SIGTERM"
echo "9 passed, 0 failed"
