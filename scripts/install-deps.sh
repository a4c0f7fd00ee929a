#!/bin/bash
# Installs what ffrouter needs to build and test, from Debian 12 packages.
# Idempotent, and silent when nothing is missing. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  # build (clang and its runtime: the libFuzzer targets)
  build-essential cmake ninja-build pkg-config git clang libclang-rt-14-dev
  libibverbs-dev librdmacm-dev libboost-dev libflatbuffers-dev flatbuffers-compiler
  libnuma-dev libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev
  # the TCP baselines' io_uring stream (bench/tcp_probe; built without it otherwise)
  liburing-dev
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libsystemd-dev
  # a test program against UCP (UCX client/server over rdma_cm)
  libucx-dev
  # TLS on the links between routers (and the tests' keys and certificates)
  libssl-dev openssl
  # runtime peers: unmodified verbs programs driven through the router
  ibverbs-utils perftest rdmacm-utils ucx-utils libfabric-bin
  # end-to-end tests: namespaces and mounts
  iproute2 util-linux procps
  # MPI jobs through the router: Open MPI (pml ucx), MPICH (ch4:ucx), NetPIPE for each
  openmpi-bin libopenmpi-dev netpipe-openmpi mpich libmpich-dev netpipe-mpich2
  # real containers: podman with runc, images made with mmdebstrap
  podman runc catatonit mmdebstrap python3-yaml
  # the systemd units: systemd-analyze verify
  systemd
  # multi-host tests: the etcd directory
  etcd-server etcd-client
  # the operator's view: /metrics checked by promtool, JSON by jq
  prometheus curl jq
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# kubectl (kustomize, offline): Debian's kubernetes-client, unless one is
# installed already (from Kubernetes' own packages, say).
command -v kubectl >/dev/null || missing+=(kubernetes-client)
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's prometheus package brings promtool (the tests check /metrics with
# it) and a Prometheus server enabled at boot: a server nobody asked for is
# switched off again when this script is what installed it.
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
