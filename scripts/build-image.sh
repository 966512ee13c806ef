#!/usr/bin/env bash
# `make image`: reproducible release build of the node agent and /init, then the image assembly
# (constellation-image build) into $1 (default image/out); further arguments go to
# `constellation-image build` (e.g. `--extra-file etc/x=FILE`). Paths are remapped so that the bytes
# do not depend on where the repository or the target directory live.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-image/out}
TARGET=$(realpath -m "${IMAGE_TARGET_DIR:-target/image-build}")
SRC=$(pwd -P)
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
# The last commit's time: stable for a given commit, no wall-clock leaking into the image.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
remap="--remap-path-prefix=$SRC=/constellation --remap-path-prefix=$TARGET=/target"
remap+=" --remap-path-prefix=$CARGO_HOME=/cargo --remap-path-prefix=$RUSTUP_HOME=/rustup"
export RUSTFLAGS="$remap"
# C code built by -sys crates (aws-lc, tss bindings) embeds __FILE__ paths.
prefix_map="-ffile-prefix-map=$SRC=/constellation -ffile-prefix-map=$TARGET=/target -ffile-prefix-map=$CARGO_HOME=/cargo"
export CFLAGS="${CFLAGS:-} $prefix_map" CXXFLAGS="${CXXFLAGS:-} $prefix_map"
export CARGO_TARGET_DIR=$TARGET
t0=$SECONDS
# One cargo invocation for all three binaries: while the agent's single-threaded LTO link runs,
# the other core can compile the image tool (two invocations left it idle meanwhile).
cargo build --locked --profile image -p constellation-node -p constellation-image \
  --bin constellation-node --bin constellation-init --bin constellation-image
echo "build-image: binaries built in $((SECONDS - t0)) s" >&2
"$TARGET/image/constellation-image" build \
  --agent "$TARGET/image/constellation-node" \
  --init "$TARGET/image/constellation-init" \
  --out "$OUT" "${@:2}"
echo "build-image: done in $((SECONDS - t0)) s; $(du -h "$OUT/disk.raw" | cut -f1) disk, $(du -h "$OUT/constellation.efi" | cut -f1) UKI" >&2
