#!/usr/bin/env bash
# Builds the pinned OpenTofu CLI (tools/tofu/go.mod) from its Go module into
# ${CONSTELLATION_CACHE:-~/.cache/constellation-rs}/tofu/<version>/tofu, only when it is missing,
# and prints that path on stdout. Go's module and build caches keep a rebuild fast.
#
# The link flags are those of OpenTofu's release builds (.goreleaser.yaml): `version.dev=no`
# drops the "-dev" suffix, so `tofu version` prints the plain release version (the version itself
# is embedded from the module's version/VERSION file).
set -euo pipefail
cd "$(dirname "$0")/../tools/tofu"

command -v go >/dev/null || { echo "build-tofu: go not found: install Go (see tools/tofu/go.mod for the version)" >&2; exit 1; }

version=$(go list -m -f '{{.Version}}' github.com/opentofu/opentofu)
version=${version#v}
out="${CONSTELLATION_CACHE:-$HOME/.cache/constellation-rs}/tofu/$version/tofu"

if [ ! -x "$out" ]; then
  echo "build-tofu: building OpenTofu $version into $out" >&2
  mkdir -p "$(dirname "$out")"
  tmp="$out.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  # -mod=readonly: go.mod/go.sum are the pin; a build never edits them.
  CGO_ENABLED=0 go build -mod=readonly -trimpath \
    -ldflags "-s -w -X github.com/opentofu/opentofu/version.dev=no" \
    -o "$tmp" github.com/opentofu/opentofu/cmd/tofu
  # A half-written binary never sits at the cached path.
  mv "$tmp" "$out"
  trap - EXIT
fi

# Refuse a cached binary that is not the pinned release. Without TF_CLI_CONFIG_FILE: tofu warns
# on stdout about a configured CLI file that does not exist (terraform stays silent).
got=$(env -u TF_CLI_CONFIG_FILE "$out" version -json | sed -n 's/.*"terraform_version": *"\([^"]*\)".*/\1/p')
[ "$got" = "$version" ] || { echo "build-tofu: $out reports version '$got', want $version" >&2; exit 1; }
echo "$out"
