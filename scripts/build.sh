#!/bin/bash
# Configures and builds one build type into its own directory.
#   scripts/build.sh [Release|Debug|Sanitize] [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
type=${1:-Release}
dir=${2:-build}
[ "$type" = Release ] || dir=${2:-build-$(tr 'A-Z' 'a-z' <<<"$type")}
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" >/dev/null
cmake --build "$dir" -j "$(nproc)" | grep -vE '^\[[0-9]+/[0-9]+\] ' || true
test -x "$dir/bin/ffrouter" && test -f "$dir/lib/libffverbs.so"
