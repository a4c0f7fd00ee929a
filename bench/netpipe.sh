#!/bin/bash
# NetPIPE (NPopenmpi) through the router against Open MPI's own transports,
# between the same podman containers in the same run (the containers and
# launchers of tests/e2e/mpi_lib.sh):
#   one host:  two containers on one router, pml ucx over the shim's
#              rc_verbs, against two ranks in one container over shared
#              memory (pml ob1, btl vader: the floor on one host);
#   two hosts: a container on each host, through both routers and their
#              TCP link, against Open MPI over TCP between the same two
#              containers (pml ob1, btl tcp).
# Prints a markdown table per setup: one-way latency (half NetPIPE's round
# trip) and bandwidth at a few sizes, with the ratios. Every rank yields
# when idle (mpi_yield_when_idle): on two cores, ranks spinning beside the
# routers (or beside each other and the kernel's TCP) measure the scheduler.
#   bench/netpipe.sh [one|two] (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
export FF_BUILD=${FF_BUILD:-$PWD/build}
export FF_MPIRUN_EXTRA=${FF_MPIRUN_EXTRA:---mca mpi_yield_when_idle 1}
[ -n "${FF_NETPIPE_SETUP:-}" ] || scripts/build.sh Release >/dev/null
sizes="1 64 1024 8192 65536 1048576 4194304"

# table TITLE OURS_LOG OURS_NAME FLOOR_LOG FLOOR_NAME
table() {
  echo
  echo "### $1"
  echo
  echo "| bytes | $3 latency | $5 latency | ratio | $3 bandwidth | $5 bandwidth | ratio |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  local n
  for n in $sizes; do
    # NetPIPE: "  i: BYTES bytes TIMES times --> MBPS Mbps in USEC usec" (usec: half a round trip)
    awk -v n="$n" -v ours="$2" -v floor="$4" 'BEGIN {
        while ((getline l < ours) > 0) { split(l, f, " "); if (f[2] == n && f[3] == "bytes") { ob = f[7]; ol = f[10] } }
        while ((getline l < floor) > 0) { split(l, f, " "); if (f[2] == n && f[3] == "bytes") { fb = f[7]; fl = f[10] } }
        if (ob == "" || fb == "") exit
        printf "| %d | %.2f us | %.2f us | %.2fx | %.0f Mb/s | %.0f Mb/s | %.2f |\n", n, ol, fl, ol / fl, ob, fb, ob / fb
      }'
  done
}

case ${FF_NETPIPE_SETUP:-} in
  one)
    source tests/e2e/lib.sh
    source tests/e2e/mpi_lib.sh
    trap 'mpi_cleanup; ff_cleanup' EXIT
    mpi_one_host
    openmpi NPopenmpi -u 4194304 -p 0 >"$FF_NETPIPE_OUT/router.log" 2>&1
    openmpi_run --host nodea:2 -np 2 --mca pml ob1 --mca btl self,vader NPopenmpi -u 4194304 -p 0 \
      >"$FF_NETPIPE_OUT/floor.log" 2>&1
    exit 0 ;;
  two)
    source tests/e2e/multihost_lib.sh
    source tests/e2e/mpi_lib.sh
    trap 'mpi_cleanup; mh_exit' EXIT
    mpi_two_hosts
    openmpi NPopenmpi -u 4194304 -p 0 >"$FF_NETPIPE_OUT/router.log" 2>&1
    openmpi_run --host nodea:1,nodeb:1 -np 2 --mca pml ob1 --mca btl self,tcp --mca btl_tcp_if_include "$MPI_OOB" \
      NPopenmpi -u 4194304 -p 0 >"$FF_NETPIPE_OUT/floor.log" 2>&1
    exit 0 ;;
esac

out=$(mktemp -d /tmp/ffnetpipe.XXXXXX)
trap 'rm -rf "$out"' EXIT
for setup in ${1:-one two}; do
  mkdir -p "$out/$setup"
  FF_NETPIPE_SETUP=$setup FF_NETPIPE_OUT=$out/$setup bash "$0" ||
    { tail -20 "$out/$setup"/*.log; echo "bench/netpipe.sh: the $setup-host run failed" >&2; exit 1; }
done
[ ! -d "$out/one" ] ||
  table "One host: two containers through the router vs Open MPI shared memory (vader) in one container" \
    "$out/one/router.log" "router" "$out/one/floor.log" "vader"
[ ! -d "$out/two" ] ||
  table "Two hosts: through both routers vs Open MPI over TCP between the same containers" \
    "$out/two/router.log" "routers" "$out/two/floor.log" "TCP"
echo
echo "(NPopenmpi -u 4194304 -p 0 $FF_MPIRUN_EXTRA, Open MPI pml ucx over rc_verbs through the router; $(nproc) cores, $(date -u +%Y-%m-%d))"
