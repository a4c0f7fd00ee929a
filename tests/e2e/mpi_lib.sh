# MPI jobs between two podman app containers (sourced after lib.sh or
# multihost_lib.sh, by test_mpi.sh and test_multihost_mpi.sh).
#
# mpirun (the host's) starts one orted in each container through podman exec
# (its launch agent), as it would over ssh, and mpiexec.hydra one
# hydra_pmi_proxy; hosts are named nodea and nodeb, which the launchers
# cannot take for themselves. podman exec does not give the processes it
# starts the CDI spec's environment (only the container's own process has
# it), so the launcher passes LD_PRELOAD to the ranks (-x, -genv), at the
# path the spec mounts the shim. MPICH is Debian's (ch4:ucx); both MPIs are
# installed, so every command names its MPI (mpirun.openmpi,
# mpiexec.hydra, the program built for each). UCX_TLS leaves the ranks no
# shared memory and no TCP, so a job runs through the router or not at all.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=containers/podman-env.sh
source "$here/containers/podman-env.sh"
TAG=${FF_IMAGE_TAG:-dev}
MPI_BYTES=ff_bytes                # the counter that must grow by a job's bytes
MPI_COUNTED="the router moved"    # ... what it counts
MPI_WHERE="across two containers"
MPI_OOB=             # the launchers' own network (CIDR), on eth0
FF_MPIRUN_EXTRA=${FF_MPIRUN_EXTRA:-}
mpi_cleanup() {
  set +e
  podman ps -aq --filter "label=ffe2e=$$" | xargs -r podman rm -f -t 0 >/dev/null 2>&1
  rm -f /var/run/cdi/ffe2e$$*.json
}
bash "$here/containers/build-images.sh" --if-stale "$FF_BUILD" "$TAG" || fail "the images did not build"
# The launch agent lies where mpirun and each orted look for it (orted
# checks that the agent mpirun names exists, even when it never calls it).
mkdir -p "$FF_WORK/launch"
echo "127.0.0.1 localhost" >"$FF_WORK/launch/hosts"
cat >"$FF_WORK/launch/agent" <<AGENT
#!/bin/sh
# The launchers' agent, in ssh's place: "agent [-x] HOST COMMAND..." runs
# COMMAND in HOST's container (mpiexec.hydra passes ssh's -x).
while [ "\${1#-}" != "\$1" ]; do shift; done
host=\$1; shift
exec podman exec -i "ffe2e-mpi-\${host#node}-$$" sh -c "\$*"
AGENT
chmod +x "$FF_WORK/launch/agent"

# mpi_node NAME IP DEVICE: the app container of host nodeNAME, in network
# namespace ffc-NAME-$$ where it has address IP, with the CDI device DEVICE
# (KIND=TENANT) only. The nodes know each other by name without DNS. The
# ranks start in / (the launchers would take their own directory).
mpi_node() {
  local name=$1 ip=$2 device=$3
  echo "$ip node$name" >>"$FF_WORK/launch/hosts"
  podman run -d --name "ffe2e-mpi-$name-$$" --label "ffe2e=$$" --network "ns:/run/netns/ffc-$name-$$" \
    --device "$device" --hostname "node$name" --dns none -v "$FF_WORK/launch/hosts:/etc/hosts:ro" -v "$FF_BUILD/bin:$FF_BUILD/bin:ro" -v "$FF_WORK/launch:$FF_WORK/launch:ro" \
    "localhost/ffrouter-app:$TAG" sleep infinity >/dev/null || fail "app container $name"
}

# mpi_one_host: one router (tenant blue), containers a (10.51.0.1) and b
# (10.51.0.2) on their own link, each with blue's CDI device.
mpi_one_host() {
  local kind="ffe2e$$.ffrouter.io/tenant"
  ff_start_router --config "$(ff_tenants_config blue)"
  "$FFCTL" --run-dir "$FF_RUN" cdi --kind "$kind" >/dev/null || fail "ffctl cdi"
  ff_container_pair a 10.51.0.1 b 10.51.0.2
  MPI_OOB=10.51.0.0/24
  mpi_node a 10.51.0.1 "$kind=blue"
  mpi_node b 10.51.0.2 "$kind=blue"
}

# mpi_two_hosts (after multihost_lib.sh): hosts alpha and beta, container a
# on alpha and b on beta, each with only its own router's CDI device; the
# counter is the bytes the routers sent each other.
mpi_two_hosts() {
  local host
  mh_two_hosts
  for host in alpha beta; do
    mh_ctl "$host" cdi --kind "ffe2e$$-$host.ffrouter.io/tenant" >/dev/null || fail "ffctl cdi ($host)"
  done
  mpi_node a 10.50.1.1 "ffe2e$$-alpha.ffrouter.io/tenant=default"
  mpi_node b 10.50.2.1 "ffe2e$$-beta.ffrouter.io/tenant=default"
  MPI_OOB=10.0.0.0/8
  MPI_BYTES=mpi_between_routers
  MPI_COUNTED="the routers sent each other"
  MPI_WHERE="across two hosts"
}
mpi_between_routers() { echo $(($(mh_bytes alpha) + $(mh_bytes beta))); }

# The launchers run in container a's network namespace: nsenter --net, not
# ip netns exec, as podman exec needs the host's mounts (ip netns exec
# remounts /sys, and with it the cgroups).
mpi_launch() { nsenter --net="/run/netns/ffc-a-$$" timeout 180 "$@"; }
# mpirun takes nodea for a remote node (its name is not the host's) unless
# it resolves the name to one of its addresses: if_base_do_not_resolve keeps
# it from looking names up at all, which also spares it a nameserver this
# namespace cannot reach (seconds per lookup).
# FF_MPIRUN_EXTRA: more mpirun arguments (bench/netpipe.sh).
openmpi_run() {  # openmpi_run MPIRUN_ARGS...: mpirun launching through the containers
  mpi_launch mpirun.openmpi --allow-run-as-root --wdir / --mca plm_rsh_agent "$FF_WORK/launch/agent" --mca routed direct \
    --mca plm_rsh_no_tree_spawn 1 --mca if_base_do_not_resolve 1 --mca oob_tcp_if_include "$MPI_OOB" \
    -x OMPI_ALLOW_RUN_AS_ROOT=1 -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 $FF_MPIRUN_EXTRA "$@"
}
openmpi() {  # openmpi PROGRAM ARGS...: an Open MPI job across the two containers, through the shim
  openmpi_run --host nodea:1,nodeb:1 -np 2 --mca pml ucx --mca osc "${FF_MPI_OSC:-ucx}" --mca btl self \
    -x "UCX_TLS=${FF_UCX_TLS:-rc_verbs,ud_verbs,self}" -x UCX_NET_DEVICES=ffvirt0:1 \
    -x LD_PRELOAD=/usr/lib/ffrouter/libffverbs.so "$@"
}
# MPICH: Hydra's proxies call back to mpiexec on eth0's address; the ranks
# get only the environment named here (-genvnone), and no shared memory
# even between ranks it thought local (MPIR_CVAR_NOLOCAL).
mpich() {  # mpich PROGRAM ARGS...: an MPICH job across the two containers
  mpi_launch mpiexec.hydra -wdir / -launcher ssh -launcher-exec "$FF_WORK/launch/agent" \
    -iface eth0 -hosts nodea:1,nodeb:1 -n 2 -genvnone -genv MPIR_CVAR_NOLOCAL 1 \
    -genv UCX_TLS "${FF_UCX_TLS:-rc_verbs,ud_verbs,self}" -genv UCX_NET_DEVICES ffvirt0:1 \
    -genv LD_PRELOAD /usr/lib/ffrouter/libffverbs.so "$@"
}

n=0
check_job() {  # check_job LAUNCHER NAME PROGRAM: the data-checking MPI program
  local log=$FF_WORK/check-$1.log before moved started=$SECONDS
  before=$($MPI_BYTES)
  "$1" "$FF_BUILD/bin/$3" >"$log" 2>&1 || { tail -30 "$log"; fail "$3 ($2)"; }
  grep -q "mpi check: ping-pong 1 B..4 MiB, allreduce, alltoall, put/get: ok" "$log" ||
    { tail -20 "$log"; fail "$3 ($2) did not finish"; }
  grep -q "rank 1 of 2 on nodeb" "$log" || fail "$2: rank 1 did not run in container b"
  moved=$(($($MPI_BYTES) - before))
  # The ping-pong alone moves 2 x (8 MiB - 1) B.
  [ "$moved" -ge $((2 * (8 << 20))) ] || fail "$2: $MPI_COUNTED $moved B: the job did not go through it"
  pass "$2 $MPI_WHERE: ping-pong 1 B..4 MiB, allreduce, alltoall, put/get checked; $MPI_COUNTED $moved B ($((SECONDS - started)) s)"
  n=$((n + 1))
}
netpipe_job() {  # netpipe_job LAUNCHER NAME NETPIPE_PROGRAM
  local log=$FF_WORK/netpipe-$1.log before last
  before=$($MPI_BYTES)
  "$1" "$3" -u 4194304 -p 0 >"$log" 2>&1 || { tail -30 "$log"; fail "$3"; }
  last=$(grep -E '^ *[0-9]+: +[0-9]+ bytes' "$log" | tail -1)
  [[ $last =~ ([0-9]+)\ bytes ]] && [ "${BASH_REMATCH[1]}" -ge 4194304 ] || { tail -10 "$log"; fail "$3 stopped short"; }
  [ $(($($MPI_BYTES) - before)) -gt $((8 << 20)) ] || fail "$3 did not go through the router"
  pass "NetPIPE ($3, $2) $MPI_WHERE up to 4 MiB: $(echo "$last" | tr -s ' ')"
  n=$((n + 1))
}

