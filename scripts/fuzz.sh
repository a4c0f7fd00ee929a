#!/bin/bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a
# bounded time from its checked-in seed corpus (tests/fuzz/corpus/<target>).
#   scripts/fuzz.sh [seconds per target (default 20)]
# A crash leaves its input in build-fuzz/artifacts/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_C_COMPILER=clang -DFF_WERROR=OFF -DFF_BUILD_TESTS=OFF -DFF_BUILD_BENCH=OFF -DFF_FUZZ=ON >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target fuzz_frame fuzz_control fuzz_descriptor fuzz_peer fuzz_peer_tls fuzz_cm |
  grep -vE '^\[[0-9]+/[0-9]+\] |^ninja: no work to do|warning:|^ +[0-9]* \||^ +\||^In file included|note:|^[0-9]+ warnings? generated' || true
mkdir -p build-fuzz/artifacts
for t in frame control descriptor peer peer_tls cm; do
  work=build-fuzz/corpus-$t
  mkdir -p "$work"
  # peer_tls: the same byte streams as peer, through an authenticated TLS link
  out=$(ASAN_OPTIONS=detect_leaks=0 build-fuzz/bin/fuzz_$t -max_total_time="$seconds" -rss_limit_mb=4096 \
        -artifact_prefix=build-fuzz/artifacts/$t- "$work" "tests/fuzz/corpus/${t%_tls}" 2>&1) || {
    echo "$out" | tail -30
    echo "fuzz_$t: FAILED (input in build-fuzz/artifacts/)"
    exit 1
  }
  echo "fuzz_$t: $(grep -E 'DONE' <<<"$out" | tail -1)"
done
