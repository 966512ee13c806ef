#!/usr/bin/env bash
# `make image-check`: builds the image twice — here and from a copy of the source tree in
# another directory with its own target directory — and compares the SHA-256 of every output.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/constellation-image-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Fixed once for both builds (the copy has no git history to read it from).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
IMAGE_TARGET_DIR=${IMAGE_TARGET_DIR:-target/image-build} bash scripts/build-image.sh "$work/out1"
# Copy the source (tracked and untracked files, no build output) to a different path.
mkdir -p "$work/src"
git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$work/src"
# The second build's target directory is clean by default (a full release build of the agent:
# ~9 min on 2 busy cores, which is most of this check's time). IMAGE_CHECK_TARGET2=<dir> keeps
# it between runs so that later checks only rebuild what changed — still a different source
# path and a different target path from the first build.
IMAGE_TARGET_DIR="${IMAGE_CHECK_TARGET2:-$work/target2}" bash "$work/src/scripts/build-image.sh" "$work/out2"
status=0
for f in constellation.efi disk.raw measurements.json manifest.json; do
  a=$(sha256sum < "$work/out1/$f" | cut -d' ' -f1)
  b=$(sha256sum < "$work/out2/$f" | cut -d' ' -f1)
  if [ "$a" = "$b" ]; then echo "image-check: $f identical ($a)"; else echo "image-check: $f DIFFERS ($a vs $b)"; status=1; fi
done
exit $status
