#!/bin/bash
# Open MPI and MPICH jobs between two app containers (podman, each with tenant blue's
# CDI device only), over UCX's rc_verbs/ud_verbs on the shim's device:
# UCX_TLS leaves it no shared memory and no TCP, so the job runs through the
# router or not at all, and the router's counters must show its bytes.
# mpirun (the host's) starts one orted in each container through podman exec
# (its launch agent), as it would over ssh, and mpiexec.hydra one
# hydra_pmi_proxy; hosts are named nodea and nodeb, which the launchers
# cannot take for themselves. podman exec does not give the
# processes it starts the CDI spec's environment (only the container's own
# process has it), so the launcher passes LD_PRELOAD to the ranks (-x,
# -genv), at the path the spec mounts the shim.
#   1. tests/tools/ffv_mpi_check: ping-pong of every size up to 4 MiB,
#      allreduce, alltoall, MPI_Put/MPI_Get, every value checked;
#   2. NetPIPE (Debian's NPopenmpi, NPmpich2) up to 4 MiB.
# MPICH is Debian's (ch4:ucx); both are installed, so every command names
# its MPI (mpirun.openmpi, mpiexec.hydra, the program built for each).
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
# The launchers' agent, in ssh's place: "agent [-x] HOST COMMAND..." runs
# COMMAND in HOST's container (mpiexec.hydra passes ssh's -x).
while [ "\${1#-}" != "\$1" ]; do shift; done
host=\$1; shift
exec podman exec -i "ffe2e-mpi-\${host#node}-$$" sh -c "\$*"
AGENT
chmod +x "$FF_WORK/launch/agent"

# nsenter --net, not ip netns exec: podman exec needs the host's mounts
# (ip netns exec remounts /sys, and with it the cgroups).
openmpi() {  # openmpi PROGRAM ARGS...: an Open MPI job across the two containers
  nsenter --net="/run/netns/ffc-a-$$" timeout 180 mpirun.openmpi --allow-run-as-root --host nodea:1,nodeb:1 -np 2 \
    --mca plm_rsh_agent "$FF_WORK/launch/agent" --mca routed direct --mca plm_rsh_no_tree_spawn 1 --mca oob_tcp_if_include 10.51.0.0/24 \
    --mca pml ucx --mca osc "${FF_MPI_OSC:-ucx}" --mca btl self \
    -x "UCX_TLS=${FF_UCX_TLS:-rc_verbs,ud_verbs,self}" -x UCX_NET_DEVICES=ffvirt0:1 \
    -x LD_PRELOAD=/usr/lib/ffrouter/libffverbs.so -x OMPI_ALLOW_RUN_AS_ROOT=1 -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "$@"
}
# MPICH: Hydra's proxies call back to mpiexec on eth0's address; the ranks
# get only the environment named here (-genvnone), and no shared memory
# even between ranks it thought local (MPIR_CVAR_NOLOCAL).
mpich() {  # mpich PROGRAM ARGS...: an MPICH job across the two containers
  nsenter --net="/run/netns/ffc-a-$$" timeout 180 mpiexec.hydra -launcher ssh -launcher-exec "$FF_WORK/launch/agent" \
    -iface eth0 -hosts nodea:1,nodeb:1 -n 2 -genvnone -genv MPIR_CVAR_NOLOCAL 1 \
    -genv UCX_TLS "${FF_UCX_TLS:-rc_verbs,ud_verbs,self}" -genv UCX_NET_DEVICES ffvirt0:1 \
    -genv LD_PRELOAD /usr/lib/ffrouter/libffverbs.so "$@"
}

n=0
check_job() {  # check_job LAUNCHER NAME PROGRAM: the data-checking MPI program
  local log=$FF_WORK/check-$1.log before moved
  before=$(ff_bytes)
  "$1" "$FF_BUILD/bin/$3" >"$log" 2>&1 || { tail -30 "$log"; fail "$3 ($2)"; }
  grep -q "mpi check: ping-pong 1 B..4 MiB, allreduce, alltoall, put/get: ok" "$log" ||
    { tail -20 "$log"; fail "$3 ($2) did not finish"; }
  grep -q "rank 1 of 2 on nodeb" "$log" || fail "$2: rank 1 did not run in container b"
  moved=$(($(ff_bytes) - before))
  # The ping-pong alone moves 2 x (8 MiB - 1) B.
  [ "$moved" -ge $((2 * (8 << 20))) ] || fail "$2: the router moved $moved B: the job did not go through it"
  pass "$2 across two containers: ping-pong 1 B..4 MiB, allreduce, alltoall, put/get checked; the router moved $moved B"
  n=$((n + 1))
}
netpipe_job() {  # netpipe_job LAUNCHER NAME NETPIPE_PROGRAM
  local log=$FF_WORK/netpipe-$1.log before last
  before=$(ff_bytes)
  "$1" "$3" -u 4194304 -p 0 >"$log" 2>&1 || { tail -30 "$log"; fail "$3"; }
  last=$(grep -E '^ *[0-9]+: +[0-9]+ bytes' "$log" | tail -1)
  [[ $last =~ ([0-9]+)\ bytes ]] && [ "${BASH_REMATCH[1]}" -ge 4194304 ] || { tail -10 "$log"; fail "$3 stopped short"; }
  [ $(($(ff_bytes) - before)) -gt $((8 << 20)) ] || fail "$3 did not go through the router"
  pass "NetPIPE ($3, $2) across two containers up to 4 MiB: $(echo "$last" | tr -s ' ')"
  n=$((n + 1))
}

check_job openmpi "Open MPI (pml ucx, osc ${FF_MPI_OSC:-ucx}, rc_verbs/ud_verbs)" ffv_mpi_check
netpipe_job openmpi "Open MPI" NPopenmpi
check_job mpich "MPICH (ch4:ucx, rc_verbs/ud_verbs)" ffv_mpi_check_mpich
netpipe_job mpich MPICH NPmpich2
echo "$n passed, 0 failed"
