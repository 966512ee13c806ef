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

# Tests that cannot run for a missing prerequisite append a line here (constellation-testkit);
# the list is printed at the end. Under CI=true such a test fails instead, so CI lists none.
CONSTELLATION_SKIP_LOG=$(mktemp "${TMPDIR:-/tmp}/constellation-skipped.XXXXXX")
export CONSTELLATION_SKIP_LOG
report_skips() {
  local rc=$?
  if [ -s "$CONSTELLATION_SKIP_LOG" ]; then
    echo "=== skipped tests ($(sort -u "$CONSTELLATION_SKIP_LOG" | wc -l)):" >&2
    sort -u "$CONSTELLATION_SKIP_LOG" | sed 's/^/  /' >&2
    if [ "${CI:-}" = true ] && [ "$rc" -eq 0 ]; then
      echo "=== CI=true: skipped tests are not allowed" >&2
      rc=1
    fi
  else
    echo "=== skipped tests: none" >&2
  fi
  rm -f "$CONSTELLATION_SKIP_LOG"
  exit "$rc"
}
trap report_skips EXIT

step fmt-check cargo fmt --all -- --check
step build cargo build --locked --workspace --all-targets
step clippy cargo clippy --locked --workspace --all-targets -- -D warnings
# Node images for the cluster acceptance tests (acceptance/tests/provider_cluster.rs): the
# product image, and a tampered one that differs by one file in the initramfs (PCRs 4, 9, 11).
TEST_IMAGES=$(realpath -m "${CARGO_TARGET_DIR:-target}")/test-images
mkdir -p "$TEST_IMAGES"
printf 'tampered\n' >"$TEST_IMAGES/tampered.txt"
step image bash scripts/build-image.sh "$TEST_IMAGES/good"
step image-tampered bash scripts/build-image.sh "$TEST_IMAGES/tampered" --extra-file "etc/tampered=$TEST_IMAGES/tampered.txt"
export CONSTELLATION_TEST_IMAGE_DIR=$TEST_IMAGES/good
export CONSTELLATION_TEST_TAMPERED_IMAGE_DIR=$TEST_IMAGES/tampered
step tests cargo test --locked --workspace --no-fail-fast
# The same non-VM acceptance tests against OpenTofu (pinned in tools/tofu/go.mod, built from its
# Go module): protocol, data sources, write-only, ephemeral, functions, import, invalid config.
TOFU=$(step tofu-build bash scripts/build-tofu.sh)
tests_tofu() {
  env -u TF_CLI_CONFIG_FILE "$TOFU" version
  TF_BINARY=$TOFU cargo test --locked -p acceptance --test tfplugin_example --test provider_data_sources
  TF_BINARY=$TOFU cargo test --locked -p acceptance --test provider_cluster -- --exact \
    invalid_configuration_is_refused_at_the_attribute_without_vms
}
step tests-tofu tests_tofu
# attest: validators build and pass without the TPM feature (what the provider links), no
# tss-esapi in that dependency tree; then the swtpm-backed issuer/validator/aTLS tests.
step attest-no-tpm cargo test --locked --no-fail-fast -p constellation-attest --no-default-features
step attest-no-tss bash -c '! cargo tree --locked -p constellation-attest --no-default-features -e normal,build | grep -q tss-esapi'
step provider-no-tpm-libs bash -c '! cargo tree --locked -p terraform-provider-constellation -e normal,build | grep -qE "tss-esapi|libcryptsetup"'
# The provider verifies only: attest's node-side issuers (configfs-tsm, IMDS clients, TPM) are
# features it must not enable.
step provider-no-issuer bash -c '! cargo tree --locked -p terraform-provider-constellation -e normal,build,features | grep -qE "constellation-attest feature \"(issuer|tpm)\""'
step attest-swtpm cargo test --locked --no-fail-fast -p constellation-attest --features tpm,test-support
step attest-swtpm-clippy cargo clippy --locked -p constellation-attest --features tpm,test-support --all-targets -- -D warnings
# attest-verify CLI: its integration tests run the built binary (feature `cli`).
step attest-verify-cli cargo test --locked -p constellation-attest --features cli --test attest_verify_cli
step attest-verify-clippy cargo clippy --locked -p constellation-attest --features cli --all-targets -- -D warnings
step docs-check make -s docs-check
step fuzz-smoke bash scripts/fuzz-smoke.sh
echo "=== make test: all steps passed in $SECONDS s" >&2
