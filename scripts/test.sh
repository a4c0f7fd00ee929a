#!/bin/bash
# The whole test suite: installs what is missing, builds Release and Sanitize
# (ASan+UBSan), runs every test in Release and the unit and integration tests
# under the sanitizers. Needs root (the end-to-end tests create namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

jobs=$(nproc)
echo "== build: Release"
scripts/build.sh Release build
echo "== build: Sanitize (ASan + UBSan)"
scripts/build.sh Sanitize build-sanitize

echo "== tests: Sanitize build (unit, integration)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-sanitize -L 'unit|integration' -j "$jobs" --output-on-failure
echo "== tests: Release build (all)"
ctest --test-dir build -j "$jobs" --output-on-failure
