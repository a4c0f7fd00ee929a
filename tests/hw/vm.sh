#!/bin/bash
# Runs a command against a real kernel RDMA device, on a machine without RDMA
# hardware or kernel RDMA support: boots Debian's own kernel (which has
# SoftRoCE, rdma_rxe) under qemu with TCG, creates rxe0 on a veth pair, and
# runs the command in the guest. The guest sees the host's files (the host's
# / is the read-only lower layer of an overlay, writes vanish at power-off)
# and this repository read-write.
#
#   tests/hw/vm.sh [--timeout SECONDS] [--hosts 2] [-e NAME=VALUE]... -- CMD [ARGS...]
#
# In the guest: rxe0 is ACTIVE on 10.77.0.1, FF_RXE_DEV=rxe0 and
# FF_RXE_GID_INDEX is the index of its IPv4-mapped GID.
#
# With --hosts 2, two guests boot side by side, each a host with its own
# kernel and rdma_rxe on its own NIC (virtio-net), the two NICs joined by one
# Ethernet segment (qemu's UDP socket netdev on the host's loopback): guest
# N is 10.77.0.N, FF_VM_HOST=N, FF_VM_HOSTS=2, and both run CMD (which
# branches on FF_VM_HOST). /run/shared is one directory both see (rendezvous
# files); their consoles are prefixed [h1] and [h2].
# Exit status: CMD's (the first failing guest's); 124 on timeout; 125 when a
# guest could not be set up.
# The image (kernel + initramfs, ~110 MB) is cached in $FF_VM_CACHE
# (default ~/.cache/ffrouter-vm); the first run builds it (~15 s).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${FF_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ffrouter-vm}
timeout_s=900
hosts=1
envs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) timeout_s=$2; shift 2 ;;
    --hosts) hosts=$2; shift 2 ;;
    -e) envs+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "vm.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: vm.sh [--timeout S] [--hosts 2] [-e NAME=VALUE]... -- CMD [ARGS...]" >&2; exit 2; }
case $hosts in 1 | 2) ;; *) echo "vm.sh: --hosts is 1 or 2" >&2; exit 2 ;; esac

need=()
for p in qemu-system-x86 qemu-system-data busybox-static cpio kmod xz-utils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- the boot image ----------------------------------------------------------
modules="virtio_pci virtio_net 9pnet_virtio 9p overlay veth crc32_generic ib_core ib_uverbs rdma_ucm rdma_rxe"
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kpkg" ] || { echo "vm.sh: cannot resolve linux-image-amd64 (apt-get update?)" >&2; exit 125; }
kver=${kpkg#linux-image-}
img=$cache/$kver
mkdir -p "$cache"
stamp=$(cat "$0" "$here/vm-init.sh" | sha256sum | cut -c1-16)
if [ "$(cat "$img/stamp" 2>/dev/null)" != "$stamp" ]; then
  (
    flock 9
    if [ "$(cat "$img/stamp" 2>/dev/null)" != "$stamp" ]; then
      rm -rf "$img.tmp" && mkdir -p "$img.tmp" && cd "$img.tmp"
      ls "$cache"/"$kpkg"_*.deb >/dev/null 2>&1 || (cd "$cache" && apt-get download -qq "$kpkg")
      dpkg -x "$cache"/"$kpkg"_*.deb root
      depmod -b root "$kver"
      mkdir -p init/bin init/lib/modules init/proc init/sys init/dev init/host init/rw init/new
      cp /bin/busybox init/bin/busybox
      for m in $modules; do modprobe -d root -S "$kver" --show-depends "$m"; done |
        awk '$1 == "insmod" && !seen[$2]++ {print $2}' >modules.list
      while read -r ko; do
        cp "$ko" init/lib/modules/
        echo "/lib/modules/$(basename "$ko")" >>init/modules.list
      done <modules.list
      cp "$here/vm-init.sh" init/init
      chmod +x init/init
      (cd init && find . | cpio -o -H newc --quiet | gzip -1) >initramfs.img
      # The uncompressed kernel (ELF with a PVH entry note): qemu starts it
      # directly, without seconds of XZ decompression under TCG.
      off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' root/boot/vmlinuz-"$kver" | head -1 | cut -d: -f1) || true
      tail -c +$((off + 1)) root/boot/vmlinuz-"$kver" | xz -dc --single-stream >vmlinux 2>/dev/null || true
      [ -s vmlinux ] || { echo "vm.sh: cannot extract vmlinux" >&2; exit 125; }
      rm -rf root init modules.list
      echo "$stamp" >stamp
      rm -rf "$img" && mv "$img.tmp" "$img"
    fi
  ) 9>"$cache.lock"
fi

# --- the run -------------------------------------------------------------------
job=$(mktemp -d /tmp/ffvm.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$job"' EXIT
{
  echo "#!/bin/bash"
  printf 'export %q\n' "${envs[@]}" 2>/dev/null | grep -v "^export ''$" || true
  printf 'cd %q\n' "$PWD"
  printf 'exec'
  printf ' %q' "$@"
  echo
} >"$job/cmd.sh"
cp "$here/vm-guest.sh" "$job/guest.sh"
mkdir -p "$job/shared"
# boot N: one guest, its console on stdout (prefixed when there are two).
boot() {
  local n=$1 dir=$job/h$1 nic=() port=$((20000 + ($$ % 20000) * 2))
  mkdir -p "$dir"
  cp "$job/cmd.sh" "$job/guest.sh" "$dir/"
  echo "export FF_VM_HOST=$n FF_VM_HOSTS=$hosts" >"$dir/host.env"
  if [ "$hosts" -gt 1 ]; then
    # Unicast UDP on the host's loopback, one port per side: an Ethernet
    # segment of two.
    local mine=$((port + n - 1)) other=$((port + 2 - n))
    nic=(-netdev "socket,id=l0,udp=127.0.0.1:$other,localaddr=127.0.0.1:$mine"
      -device "virtio-net-pci,netdev=l0,mac=52:54:00:77:00:0$n")
  fi
  timeout --foreground -k 5 "$timeout_s" qemu-system-x86_64 \
    -accel tcg,thread=multi,tb-size=256 -cpu max -smp 2 -m 1024M -nodefaults -nographic -no-reboot \
    -bios /usr/share/qemu/qboot.rom -kernel "$img/vmlinux" -initrd "$img/initramfs.img" \
    -append "console=ttyS0 quiet panic=-1 ff.repo=$repo" \
    -serial stdio "${nic[@]}" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs local,path="$dir",mount_tag=job,security_model=none \
    -virtfs local,path="$job/shared",mount_tag=shared,security_model=none \
    -virtfs local,path="$repo",mount_tag=repo,security_model=none \
    </dev/null
}
status() { # N: the guest's exit status
  local rc=$1
  [ "$rc" -eq 124 ] && { echo "vm.sh: timed out after ${timeout_s}s" >&2; return 124; }
  [ -f "$job/h$2/rc" ] || { echo "vm.sh: guest $2 did not run the command (qemu rc $rc)" >&2; return 125; }
  return "$(cat "$job/h$2/rc")"
}
if [ "$hosts" -eq 1 ]; then
  rc=0
  boot 1 || rc=$?
  status "$rc" 1 || exit $?
  exit 0
fi
pids=()
for n in $(seq "$hosts"); do
  (
    set -o pipefail
    rc=0
    boot "$n" | sed -u "s/^/[h$n] /" || rc=$?
    exit "$rc"
  ) &
  pids+=($!)
done
final=0
for n in $(seq "$hosts"); do
  rc=0
  wait "${pids[$((n - 1))]}" || rc=$?
  status "$rc" "$n" || { rc=$?; [ "$final" -ne 0 ] || final=$rc; }
done
exit "$final"
