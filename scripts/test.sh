#!/usr/bin/env bash
# The whole gate behind `make test`. Each step prints a banner and its wall time.
set -euo pipefail
cd "$(dirname "$0")/.."

step() {
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name" >&2
  "$@"
  echo "=== $name: $((SECONDS - t0)) s" >&2
}

step fmt-check cargo fmt --all -- --check
step build cargo build --locked --workspace --all-targets
step clippy cargo clippy --locked --workspace --all-targets -- -D warnings
step tests cargo test --locked --workspace
step docs-check make -s docs-check
step fuzz-smoke bash scripts/fuzz-smoke.sh
echo "=== make test: all steps passed in $SECONDS s" >&2
