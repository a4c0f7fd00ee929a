#!/bin/bash
# In the guest: rxe0 on a veth pair, then the command (cmd.sh).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
stty -onlcr 2>/dev/null
ip link set lo up
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd  # bash process substitution
# shellcheck source=/dev/null
source /run/job/host.env  # FF_VM_HOST, FF_VM_HOSTS
if [ "$FF_VM_HOSTS" -gt 1 ]; then
  # One of several hosts: rxe0 on the NIC that joins them.
  netdev=eth0
  ip link set eth0 up
else
  netdev=rxenet0
  ip link add rxenet0 type veth peer name rxenet0p
  ip link set rxenet0 up
  ip link set rxenet0p up
fi
ip addr add "10.77.0.$FF_VM_HOST/24" dev $netdev
rdma link add rxe0 type rxe netdev $netdev || { echo "vm-guest: rdma link add failed" >&2; exit 125; }
# Port 1 ACTIVE, and which GID index holds ::ffff:10.77.0.N (read from sysfs:
# each ibv_devinfo costs half a second under TCG).
port=/sys/class/infiniband/rxe0/ports/1
idx=
for _ in $(seq 100); do
  if grep -q ACTIVE "$port/state" 2>/dev/null; then
    for g in "$port"/gids/*; do
      [ "$(cat "$g")" = "0000:0000:0000:0000:0000:ffff:0a4d:$(printf %04x "$FF_VM_HOST")" ] && idx=${g##*/} && break
    done
  fi
  [ -n "$idx" ] && break
  sleep 0.1
done
[ -n "$idx" ] || { echo "vm-guest: rxe0 did not come up: $(cat $port/state 2>&1)" >&2; ls /sys/class/infiniband >&2; exit 125; }
export FF_RXE_DEV=rxe0 FF_RXE_GID_INDEX=$idx
ulimit -l unlimited
exec bash /run/job/cmd.sh
