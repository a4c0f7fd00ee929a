#!/bin/bash
# Builds the images, no registry needed:
#   localhost/ffrouter-base:bookworm  Debian 12 (mmdebstrap from Debian's
#                                     archive, podman import): the router's
#                                     libraries and the RDMA user tools
#   localhost/ffrouter:TAG            the router (Containerfile.router)
#   localhost/ffrouter-app:TAG        the app base (Containerfile.app)
# from the binaries of a build directory.
#   containers/build-images.sh [--if-stale] [BUILD_DIR] [TAG]   (default: build, dev)
# --if-stale: only when the images do not hold this build's binaries (each
# image carries their checksum in the label io.ffrouter.build).
# The base is made once (about a minute) and kept while its package list
# stays the same (label io.ffrouter.packages); FF_REBUILD_BASE=1 makes it
# again. Needs root, podman, runc and mmdebstrap (scripts/install-deps.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if_stale=0
[ "${1:-}" = --if-stale ] && { if_stale=1; shift; }
build=$(cd "${1:-$here/../build}" && pwd)
tag=${2:-dev}
base=localhost/ffrouter-base:bookworm
# shellcheck source=containers/podman-env.sh
source "$here/podman-env.sh"

binaries=("$build/bin/ffrouter" "$build/bin/ffctl" "$build/lib/libffverbs.so")
# What the images run: the router's shared libraries and the tools.
packages=(
  libibverbs1 librdmacm1 libyaml-cpp0.7 libspdlog1.10 libfmt9 libssl3 libsystemd0
  ibverbs-utils perftest rdmacm-utils ucx-utils libucx0 coreutils procps
  openmpi-bin netpipe-openmpi mpich netpipe-mpich2
)
packages_sum=$(echo "${packages[*]}" | sha256sum | cut -c1-16)

# The images hold these binaries on this base.
sum=$( (cat "${binaries[@]}"; echo "$packages_sum") | sha256sum | cut -c1-16)
if [ $if_stale = 1 ]; then
  current=1
  for name in localhost/ffrouter localhost/ffrouter-app; do
    [ "$(podman image inspect --format '{{index .Labels "io.ffrouter.build"}}' "$name:$tag" 2>/dev/null)" = "$sum" ] ||
      current=0
  done
  [ $current = 1 ] && exit 0
fi

if [ "${FF_REBUILD_BASE:-0}" = 1 ] ||
  [ "$(podman image inspect --format '{{index .Labels "io.ffrouter.packages"}}' "$base" 2>/dev/null)" != "$packages_sum" ]; then
  echo "containers: making $base (mmdebstrap bookworm)"
  rootfs=$(mktemp /tmp/ffbase.XXXXXX.tar)
  trap 'rm -f "$rootfs"' EXIT
  mirror=${FF_DEBIAN_MIRROR:-http://deb.debian.org/debian}
  mmdebstrap --quiet --variant=apt --include="$(IFS=,; echo "${packages[*]}")" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$rootfs" "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
    "deb ${FF_DEBIAN_SECURITY:-http://deb.debian.org/debian-security} bookworm-security main"
  podman import -q --change "LABEL io.ffrouter.packages=$packages_sum" "$rootfs" "$base" >/dev/null
fi

context=$(mktemp -d /tmp/ffimage.XXXXXX)
trap 'rm -rf "$context"; rm -f "${rootfs:-}"' EXIT
mkdir -p "$context/bin" "$context/lib"
cp "${binaries[@]:0:2}" "$context/bin/"
cp "${binaries[2]}" "$context/lib/"
for image in router app; do
  name=localhost/ffrouter-$image
  [ "$image" = router ] && name=localhost/ffrouter
  podman build -q --network none --build-arg BASE="$base" --label "io.ffrouter.build=$sum" -t "$name:$tag" -f "$here/Containerfile.$image" \
    "$context" >/dev/null
  echo "containers: $name:$tag"
done
podman image prune -f >/dev/null  # the images these tags had before
