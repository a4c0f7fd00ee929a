#!/bin/bash
# Configures and builds one build type into its own directory.
#   scripts/build.sh [Release|Debug|Sanitize|Tsan] [build-dir] [target...]
set -euo pipefail
cd "$(dirname "$0")/.."
type=${1:-Release}
dir=${2:-build}
[ "$type" = Release ] || dir=${2:-build-$(tr 'A-Z' 'a-z' <<<"$type")}
shift $(( $# > 2 ? 2 : $# ))
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" >/dev/null
cmake --build "$dir" -j "$(nproc)" "${targets[@]}" | grep -vE '^\[[0-9]+/[0-9]+\] |^ninja: no work to do' || true
[ ${#targets[@]} -gt 0 ] || { test -x "$dir/bin/ffrouter" && test -f "$dir/lib/libffverbs.so"; }
