#!/usr/bin/env bash
# Bounded smoke run of every cargo-fuzz target in the repository (each */fuzz directory
# with a Cargo.toml). Each target runs FUZZ_SECONDS (default 10) and the script fails on
# the first crash, leak or timeout; libFuzzer prints the reproducer path.
#
# Environment:
#   FUZZ_SECONDS     run time per target (default 10)
#   FUZZ_SANITIZER   cargo-fuzz sanitizer (default none: the code is forbid(unsafe), and
#                    `none` needs no sanitizer runtime, so the stable toolchain suffices)
#   FUZZ_TARGET_DIR  build directory (default $CARGO_TARGET_DIR/fuzz or target/fuzz)
#   FUZZ_ONLY        run only targets whose name matches this extended regex
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SECS=${FUZZ_SECONDS:-10}
SANITIZER=${FUZZ_SANITIZER:-none}
FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/fuzz}
# cargo-fuzz passes -Z flags to rustc and cargo. The pinned toolchain is stable;
# RUSTC_BOOTSTRAP lets it accept them without relying on a nightly being installed.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked
fi

# Corpora and crash artifacts go to a scratch directory, removed on exit, so runs leave
# nothing in the work tree (a crash's input is copied to $FUZZ_ARTIFACTS if set).
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-smoke.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

found=0
failed=()
while IFS= read -r fuzz_dir; do
  [ -f "$fuzz_dir/Cargo.toml" ] || continue
  crate_dir=$(dirname "$fuzz_dir")
  targets=$(cd "$crate_dir" && cargo fuzz list --fuzz-dir fuzz)
  for target in $targets; do
    if [ -n "${FUZZ_ONLY:-}" ] && ! [[ $target =~ $FUZZ_ONLY ]]; then
      continue
    fi
    found=$((found + 1))
    corpus="$SCRATCH/corpus/${crate_dir#./}/$target"
    artifacts="$SCRATCH/artifacts/${crate_dir#./}/$target"
    mkdir -p "$corpus" "$artifacts"
    # Seed corpus checked into the repository, if any (read-only use: copied).
    if [ -d "$fuzz_dir/seeds/$target" ]; then
      cp -r "$fuzz_dir/seeds/$target/." "$corpus/"
    fi
    # cargo-fuzz creates fuzz/artifacts/<target> even though artifacts go elsewhere;
    # remember whether it existed so an empty one can be removed afterwards.
    had_artifacts_dir=0
    [ -d "$fuzz_dir/artifacts/$target" ] && had_artifacts_dir=1
    echo "fuzz-smoke: ${crate_dir#./} $target for ${SECS}s (sanitizer: $SANITIZER)" >&2
    if ! (cd "$crate_dir" && cargo fuzz run --fuzz-dir fuzz -s "$SANITIZER" \
        --target-dir "$FUZZ_TARGET_DIR" "$target" "$corpus" -- \
        -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" -print_final_stats=1); then
      failed+=("${crate_dir#./}:$target")
      if [ -n "${FUZZ_ARTIFACTS:-}" ]; then
        mkdir -p "$FUZZ_ARTIFACTS" && cp -r "$artifacts/." "$FUZZ_ARTIFACTS/"
      fi
      echo "fuzz-smoke: $target FAILED; crash input(s):" >&2
      ls -l "$artifacts" >&2 || true
    fi
    if [ "$had_artifacts_dir" -eq 0 ]; then
      rmdir "$fuzz_dir/artifacts/$target" 2>/dev/null || true
      rmdir "$fuzz_dir/artifacts" 2>/dev/null || true
    fi
  done
done < <(find . -path ./target -prune -o -path '*/node_modules' -prune -o \
  -type d -name fuzz -print | sort)

if [ "$found" -eq 0 ]; then
  echo "fuzz-smoke: no fuzz targets found" >&2
  exit 1
fi
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz-smoke: failing targets: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz-smoke: $found target(s) ran ${SECS}s each without failures" >&2
