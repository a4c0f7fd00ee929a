#!/bin/bash
# In the guest: rxe0 on a veth pair, then the command (cmd.sh).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
stty -onlcr 2>/dev/null
ip link set lo up
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd  # bash process substitution
ip link add rxenet0 type veth peer name rxenet0p
ip addr add 10.77.0.1/24 dev rxenet0
ip link set rxenet0 up
ip link set rxenet0p up
rdma link add rxe0 type rxe netdev rxenet0 || { echo "vm-guest: rdma link add failed" >&2; exit 125; }
# Port 1 ACTIVE, and which GID index holds ::ffff:10.77.0.1 (read from sysfs:
# each ibv_devinfo costs half a second under TCG).
port=/sys/class/infiniband/rxe0/ports/1
idx=
for _ in $(seq 100); do
  if grep -q ACTIVE "$port/state" 2>/dev/null; then
    for g in "$port"/gids/*; do
      [ "$(cat "$g")" = "0000:0000:0000:0000:0000:ffff:0a4d:0001" ] && idx=${g##*/} && break
    done
  fi
  [ -n "$idx" ] && break
  sleep 0.1
done
[ -n "$idx" ] || { echo "vm-guest: rxe0 did not come up: $(cat $port/state 2>&1)" >&2; ls /sys/class/infiniband >&2; exit 125; }
export FF_RXE_DEV=rxe0 FF_RXE_GID_INDEX=$idx
ulimit -l unlimited
exec bash /run/job/cmd.sh
