#!/bin/bash
# The whole test suite: installs what is missing, builds Release, Sanitize
# (ASan+UBSan) and Tsan (ThreadSanitizer, the ring and poller tests only);
# runs every test in Release; the unit, integration and end-to-end tests under
# ASan+UBSan (router and libffverbs sanitized); the ring and poller tests (and
# the conformance suite against the router) under TSan; and each libFuzzer
# target for 20 s; then, in one qemu boot of Debian's kernel with SoftRoCE,
# the verbs fabric on a real kernel RDMA device; last, that no test left a
# namespace, process or temporary file behind (scripts/check-leftovers.sh).
# The Release run and the one-guest run start every router with two pollers
# (FFR_POLLERS=2); the sanitized run and the two guests, with one.
# Needs root (the end-to-end tests create namespaces). How to run one tier or
# one test: tests/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# What exists before the run is not blamed on it, nor what another run on this
# machine owns (FF_TEST_RUN tags this run's processes). Should a step fail,
# the leftovers are listed too, for information.
leftovers=$(mktemp /tmp/ffleftovers.XXXXXX)
export FF_TEST_RUN="$$.${leftovers##*.}"
on_exit() {
  local rc=$?
  [ $rc -eq 0 ] || scripts/check-leftovers.sh --since "$leftovers" || true
  rm -f "$leftovers"
}
trap on_exit EXIT
scripts/install-deps.sh  # (first: the check needs ip and ps)
scripts/check-leftovers.sh --snapshot "$leftovers"

jobs=$(nproc)
echo "== build: Release"
scripts/build.sh Release build
echo "== build: the container images (containers/build-images.sh: once per run)"
bash containers/build-images.sh build
echo "== build: Sanitize (ASan + UBSan)"
scripts/build.sh Sanitize build-sanitize

echo "== build: Tsan (rings, poller)"
scripts/build.sh Tsan build-tsan shm_ring_test poller_test pollers_test control_protocol_test ffrouter

echo "== tests: Tsan build (rings and the poller against the control plane)"
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  ctest --test-dir build-tsan -R 'shm_ring_test|poller_test|pollers_test|control_protocol_test' -j "$jobs" --output-on-failure
echo "== tests: the verbs conformance suite against a TSan-built router, with two pollers"
# A report stops the router (halt_on_error), and the suite then fails.
TSAN_OPTIONS=halt_on_error=1 FFR_POLLERS=2 FF_BUILD=$PWD/build FFROUTER=$PWD/build-tsan/bin/ffrouter \
  bash tests/e2e/test_conformance.sh
echo "== tests: Sanitize build (unit, integration)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-sanitize -L 'unit|integration' -j "$jobs" --output-on-failure
echo "== tests: end to end, with ffrouter and libffverbs under ASan+UBSan"
# Unmodified programs load the sanitized shim after the sanitizer runtimes.
# (The binding and export checks read the library file itself, and the
# containers run the images' Release binaries: Release only.)
ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0:abort_on_error=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
FFROUTER=$PWD/build-sanitize/bin/ffrouter \
LIBFFVERBS="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so) $PWD/build-sanitize/lib/libffverbs.so" \
  ctest --test-dir build -L e2e -E 'e2e_(bindings|exports|containers|kubernetes|mpi|multihost_mpi)' -j "$jobs" --output-on-failure
echo "== fuzzing: every libFuzzer target, bounded"
scripts/fuzz.sh 20
echo "== tests: Release build (all), every router on the host with two pollers (--pollers 2)"
# (The sanitized run above has the default, one poller; the guests' verbs
# fabric runs one.)
FFR_POLLERS=2 ctest --test-dir build -j "$jobs" --output-on-failure
echo "== tests: a real kernel RDMA device (rxe0, Debian's kernel under qemu): the verbs fabric"
# One boot: programs through the router on the verbs fabric, the conformance
# suite three ways, tenant isolation on the device (tests/hw/guest/).
# (With two pollers: each its own context on rxe0, the tenants on both.)
tests/hw/vm.sh --timeout 1800 -e FFR_POLLERS=2 -- tests/hw/guest/run_all.sh
echo "== tests: two hosts, each a guest with its own rxe0, on one Ethernet segment"
tests/hw/vm.sh --timeout 1200 --hosts 2 -- tests/hw/hosts/run_all.sh
echo "== no test left a namespace, process or temporary file behind"
scripts/check-leftovers.sh --since "$leftovers"
