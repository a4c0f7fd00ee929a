#!/bin/bash
# Open MPI jobs between two app containers (podman, each with tenant blue's
# CDI device only), over UCX's rc_verbs/ud_verbs on the shim's device:
# UCX_TLS leaves it no shared memory and no TCP, so the job runs through the
# router or not at all, and the router's counters must show its bytes.
# mpirun (the host's) starts one orted in each container through podman exec
# (its launch agent), as it would over ssh; hosts are named nodea and nodeb,
# which mpirun cannot take for itself. podman exec does not give the
# processes it starts the CDI spec's environment (only the container's own
# process has it), so mpirun passes LD_PRELOAD to the ranks (-x), at the
# path the spec mounts the shim.
#   1. tests/tools/ffv_mpi_check: ping-pong of every size up to 4 MiB,
#      allreduce, alltoall, MPI_Put/MPI_Get, every value checked;
#   2. NetPIPE (Debian's NPopenmpi) up to 4 MiB.
# One-sided operations go through osc ucx (Open MPI's default beside pml
# ucx), which opens the device a second time in each rank (FF_MPI_OSC=pt2pt
# runs them over pml ucx instead).
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=containers/podman-env.sh
source "$here/containers/podman-env.sh"
TAG=${FF_IMAGE_TAG:-dev}
KIND="ffe2e$$.ffrouter.io/tenant"
mpi_cleanup() {
  set +e
  podman ps -aq --filter "label=ffe2e=$$" | xargs -r podman rm -f -t 0 >/dev/null 2>&1
  rm -f /var/run/cdi/ffe2e$$.ffrouter.io-tenant_*.json
  ff_cleanup
}
trap mpi_cleanup EXIT
bash "$here/containers/build-images.sh" --if-stale "$FF_BUILD" "$TAG" || fail "the images did not build"

ff_start_router --config "$(ff_tenants_config blue)"
"$FFCTL" --run-dir "$FF_RUN" cdi --kind "$KIND" >/dev/null || fail "ffctl cdi"
ff_container_pair a 10.51.0.1 b 10.51.0.2
# The launch agent lies where mpirun and each orted look for it (orted
# checks that the agent mpirun names exists, even when it never calls it).
mkdir -p "$FF_WORK/launch"
for node in a b; do
  podman run -d --name "ffe2e-mpi-$node-$$" --label "ffe2e=$$" --network "ns:/run/netns/ffc-$node-$$" \
    --device "$KIND=blue" --hostname "node$node" -v "$FF_BUILD/bin:$FF_BUILD/bin:ro" -v "$FF_WORK/launch:$FF_WORK/launch:ro" \
    "localhost/ffrouter-app:$TAG" sleep infinity >/dev/null || fail "app container $node"
done
cat >"$FF_WORK/launch/agent" <<AGENT
#!/bin/sh
# mpirun's launch agent: "agent HOST COMMAND..." runs COMMAND in HOST's container.
host=\$1; shift
exec podman exec -i "ffe2e-mpi-\${host#node}-$$" sh -c "\$*"
AGENT
chmod +x "$FF_WORK/launch/agent"

mpi() {  # mpi LOG PROGRAM ARGS...: the job across the two containers
  local log=$1
  shift
  # nsenter --net, not ip netns exec: podman exec needs the host's mounts
  # (ip netns exec remounts /sys, and with it the cgroups).
  nsenter --net="/run/netns/ffc-a-$$" timeout 180 mpirun --allow-run-as-root --host nodea:1,nodeb:1 -np 2 \
    --mca plm_rsh_agent "$FF_WORK/launch/agent" --mca routed direct --mca plm_rsh_no_tree_spawn 1 --mca oob_tcp_if_include 10.51.0.0/24 \
    --mca pml ucx --mca osc ${FF_MPI_OSC:-ucx} --mca btl self \
    -x UCX_TLS=${FF_UCX_TLS:-rc_verbs,ud_verbs,self} -x UCX_NET_DEVICES=ffvirt0:1 \
    -x LD_PRELOAD=/usr/lib/ffrouter/libffverbs.so -x OMPI_ALLOW_RUN_AS_ROOT=1 -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "$@" >"$log" 2>&1
}

before=$(ff_bytes)
mpi "$FF_WORK/check.log" "$FF_BUILD/bin/ffv_mpi_check" || { tail -30 "$FF_WORK/check.log"; fail "ffv_mpi_check"; }
grep -q "mpi check: ping-pong 1 B..4 MiB, allreduce, alltoall, put/get: ok" "$FF_WORK/check.log" ||
  { tail -20 "$FF_WORK/check.log"; fail "ffv_mpi_check did not finish"; }
grep -q "rank 1 of 2 on nodeb" "$FF_WORK/check.log" || fail "rank 1 did not run in container b"
moved=$(($(ff_bytes) - before))
# The ping-pong alone moves 2 x (8 MiB - 1) B.
[ "$moved" -ge $((2 * (8 << 20))) ] || fail "the router moved $moved B: the job did not go through it"
pass "Open MPI (pml ucx, rc_verbs/ud_verbs) across two containers: ping-pong 1 B..4 MiB, allreduce, alltoall, put/get checked; the router moved $moved B"

before=$(ff_bytes)
mpi "$FF_WORK/netpipe.log" NPopenmpi -u 4194304 -p 0 || { tail -30 "$FF_WORK/netpipe.log"; fail "NPopenmpi"; }
last=$(grep -E '^ *[0-9]+: +[0-9]+ bytes' "$FF_WORK/netpipe.log" | tail -1)
[[ $last =~ ([0-9]+)\ bytes ]] && [ "${BASH_REMATCH[1]}" -ge 4194304 ] || { tail -10 "$FF_WORK/netpipe.log"; fail "NetPIPE stopped short"; }
[ $(($(ff_bytes) - before)) -gt $((8 << 20)) ] || fail "NetPIPE did not go through the router"
pass "NetPIPE (NPopenmpi) across two containers up to 4 MiB: $(echo "$last" | tr -s ' ')"
echo "2 passed, 0 failed"
