#!/usr/bin/env bash
# `make demo`: build a provider, serve it to terraform from a local filesystem mirror (no
# registry access) and apply an example configuration; `make demo-destroy` (`demo.sh destroy`)
# destroys it and removes everything the demo created.
#
# By default it creates a local confidential cluster (examples/local: QEMU VMs booting the node
# image, building the image first with `make image` when image/out has none). Other examples:
# set DEMO_DIR, DEMO_PACKAGE, DEMO_TARGET ("--bin NAME" or "--example NAME") and DEMO_SOURCE
# (hostname/namespace/type as in required_providers), e.g. for the tfplugin example provider:
#   DEMO_DIR=examples/tfplugin-demo DEMO_PACKAGE=tfplugin \
#   DEMO_TARGET="--example terraform-provider-tfexample" DEMO_SOURCE=example.com/tfplugin/tfexample
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_DIR=${DEMO_DIR:-examples/local}
DEMO_PACKAGE=${DEMO_PACKAGE:-terraform-provider-constellation}
DEMO_TARGET=${DEMO_TARGET:---bin terraform-provider-constellation}
DEMO_VERSION=${DEMO_VERSION:-0.1.0}
TF=${TF_BINARY:-terraform}

command -v "$TF" >/dev/null || { echo "demo: '$TF' not found: install terraform (or set TF_BINARY=tofu)" >&2; exit 1; }
# A source without a host ("constellation-rs/constellation") means the CLI's default registry:
# registry.opentofu.org for OpenTofu, registry.terraform.io for terraform. The mirror must use it.
default_host=registry.terraform.io
if env -u TF_CLI_CONFIG_FILE "$TF" version 2>/dev/null | grep -q '^OpenTofu'; then
  default_host=registry.opentofu.org
fi
DEMO_SOURCE=${DEMO_SOURCE:-$default_host/constellation-rs/constellation}
command -v cargo >/dev/null || { echo "demo: cargo not found: install Rust (see rust-toolchain.toml)" >&2; exit 1; }

# The CLI configuration and mirror live in the example's .terraform/ (gitignored).
cli_dir="$PWD/$DEMO_DIR/.terraform/demo-cli"
export TF_CLI_CONFIG_FILE="$cli_dir/cli.tfrc" TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1 TF_INPUT=0
unset TF_CLI_ARGS TF_CLI_ARGS_plan TF_CLI_ARGS_apply TF_DATA_DIR TF_WORKSPACE TF_PLUGIN_CACHE_DIR || true

install_provider() {
  echo "demo: building $DEMO_PACKAGE $DEMO_TARGET (the first build takes minutes)" >&2
  # Only the JSON messages on stdout are parsed; cargo's progress bar and Compiling/Finished
  # lines go to stderr, so a long first build is visibly under way.
  # shellcheck disable=SC2086 # DEMO_TARGET is two words on purpose
  exe=$(cargo build --locked -p "$DEMO_PACKAGE" $DEMO_TARGET --message-format=json-render-diagnostics \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
  [ -x "$exe" ] || { echo "demo: cargo did not report the provider executable" >&2; exit 1; }
  local type=${DEMO_SOURCE##*/} os arch
  os=$(uname -s | tr '[:upper:]' '[:lower:]')
  case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64 | arm64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
  local dir="$cli_dir/mirror/$DEMO_SOURCE/$DEMO_VERSION/${os}_$arch"
  rm -rf "$cli_dir/mirror"
  mkdir -p "$dir"
  cp "$exe" "$dir/terraform-provider-${type}_v$DEMO_VERSION"
  cat >"$TF_CLI_CONFIG_FILE" <<CFG
provider_installation {
  filesystem_mirror {
    path = "$cli_dir/mirror"
  }
}
CFG
  # A rebuilt provider has another checksum: let init record the current one.
  rm -f "$DEMO_DIR/.terraform.lock.hcl"
  "$TF" -chdir="$DEMO_DIR" init -input=false >/dev/null
}

if [ "${1:-}" = destroy ]; then
  if [ ! -f "$DEMO_DIR/terraform.tfstate" ]; then
    echo "demo: nothing to destroy in $DEMO_DIR"
  else
    install_provider
    "$TF" -chdir="$DEMO_DIR" destroy -auto-approve -input=false
  fi
  rm -rf "$DEMO_DIR/.terraform" "$DEMO_DIR/.terraform.lock.hcl" "$DEMO_DIR"/terraform.tfstate*
  echo "demo: destroyed; removed $DEMO_DIR/.terraform and its state"
  exit 0
fi

if [ "$DEMO_DIR" = examples/local ] && [ ! -f image/out/disk.raw ]; then
  echo "demo: no node image in image/out; building it (make image, a few minutes)" >&2
  bash scripts/build-image.sh image/out
fi
install_provider
# apply prints the outputs at its end.
"$TF" -chdir="$DEMO_DIR" apply -auto-approve -input=false
echo
echo "demo: run 'make demo-destroy' to tear it down."
