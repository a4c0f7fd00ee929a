#!/bin/bash
# Open MPI and MPICH jobs between two app containers (podman, each with tenant
# blue's CDI device only), over UCX's rc_verbs/ud_verbs on the shim's device
# (mpi_lib.sh: how the jobs are launched), the router's counters showing
# their bytes:
#   1. tests/tools/ffv_mpi_check: ping-pong of every size up to 4 MiB,
#      allreduce, alltoall, MPI_Put/MPI_Get, every value checked;
#   2. NetPIPE (Debian's NPopenmpi, NPmpich2) up to 4 MiB.
# One-sided operations go through osc ucx (Open MPI's default beside pml
# ucx), which opens the device a second time in each rank (FF_MPI_OSC=pt2pt
# runs them over pml ucx instead).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mpi_lib.sh"
trap 'mpi_cleanup; ff_cleanup' EXIT

mpi_one_host

check_job openmpi "Open MPI (pml ucx, osc ${FF_MPI_OSC:-ucx}, rc_verbs/ud_verbs)" ffv_mpi_check
netpipe_job openmpi "Open MPI" NPopenmpi
check_job mpich "MPICH (ch4:ucx, rc_verbs/ud_verbs)" ffv_mpi_check_mpich
netpipe_job mpich MPICH NPmpich2
echo "$n passed, 0 failed"
