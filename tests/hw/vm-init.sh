#!/bin/busybox sh
# /init of the rxe test guest: load the modules, build the root (the host's
# / read-only under a tmpfs overlay), run /run/job/guest.sh, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.list); do insmod "$m" 2>/dev/null; done
repo=$(sed -n 's/.*ff\.repo=\([^ ]*\).*/\1/p' /proc/cmdline)
o=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$o",ro hostroot /host || { echo "vm-init: no host root" >&2; poweroff -f; }
mount -t tmpfs rw /rw
mkdir -p /rw/up /rw/work
mount -t overlay root -o lowerdir=/host,upperdir=/rw/up,workdir=/rw/work /new
mount -t devtmpfs dev /new/dev
mkdir -p /new/dev/pts /new/dev/shm
mount -t devpts pts /new/dev/pts
mount -t tmpfs shm /new/dev/shm
mount -t proc proc /new/proc
mount -t sysfs sys /new/sys
mount -t tmpfs run /new/run
mkdir -p /new/run/job
mount -t 9p -o "$o" job /new/run/job
mkdir -p /new/run/shared
mount -t 9p -o "$o" shared /new/run/shared
[ -n "$repo" ] && mount -t 9p -o "$o",cache=mmap repo "/new$repo"
chroot /new /bin/bash /run/job/guest.sh
echo $? >/new/run/job/rc
sync
poweroff -f
