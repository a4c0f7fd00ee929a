#!/bin/bash
# The data-checking MPI job of test_mpi.sh (Open MPI and MPICH over UCX's
# rc_verbs and ud_verbs) between podman containers on two hosts: each container has only
# the CDI device of its own host's router, and the ranks reach each other
# through both routers and the TCP link between them, whose byte counters
# must show the jobs' bytes (mpi_lib.sh: how the jobs are launched).
# NetPIPE across hosts is a measurement: bench/netpipe.sh.
source "$(dirname "$0")/multihost_lib.sh"
source "$(dirname "$0")/mpi_lib.sh"
trap 'mpi_cleanup; mh_exit' EXIT

mpi_two_hosts

check_job openmpi "Open MPI (pml ucx, osc ${FF_MPI_OSC:-ucx}, rc_verbs/ud_verbs)" ffv_mpi_check
check_job mpich "MPICH (ch4:ucx, rc_verbs/ud_verbs)" ffv_mpi_check_mpich
for h in alpha beta; do
  mh_ctl "$h" status | grep -q 'total clients=0 objects=0' || fail "router $h: objects left behind"
done
echo "$n passed, 0 failed"
