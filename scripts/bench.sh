#!/usr/bin/env bash
# Benchmarks behind `make bench`: each prints its figures; nothing is asserted.
# Add a `bench <name> <command…>` line per benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

bench() {
  local name=$1; shift
  local t0=$SECONDS
  echo "=== bench $name" >&2
  "$@"
  echo "=== bench $name: $((SECONDS - t0)) s" >&2
}

# terraform plan with the tfplugin example provider vs. without a provider; provider peak RSS.
# BENCH_RUNS (default 15) sets the plans per configuration.
bench tfplugin-plan cargo bench --locked -q -p acceptance --bench tfplugin_plan
# constellation provider: plan with the image/attestation data sources vs. without a provider;
# with an image (CONSTELLATION_BENCH_IMAGE_DIR, default image/out) also the wall time of a
# 1 + BENCH_WORKERS (default 2) cluster apply to verified, split into boot/attestation/Init/joins.
bench cluster cargo bench --locked -q -p acceptance --bench cluster

# attest: qemu-vtpm quote validation/s (RSA-2048 AK) vs one bare RSA-2048 verify; aTLS handshake
# on loopback with swtpm, total and the quote's share.
bench attest-quote-verify cargo bench --locked -q -p constellation-attest --features tpm,test-support --bench tpm_quote_verify
bench attest-atls-handshake cargo bench --locked -q -p constellation-attest --features tpm,test-support --bench atls_handshake


# node: JoinService tickets/s (pre-recorded qemu-vtpm evidence validated per ticket, 100-member
# cluster) and KeyService GetDataKey/s over an attested aTLS channel (needs swtpm).
bench node-join-tickets cargo bench --locked -q -p constellation-node --bench join_tickets
bench node-key-derivations cargo bench --locked -q -p constellation-node --bench key_derivations
# SEV-SNP: full report verification with the chain cached vs one ECDSA-P384 verify (goal <= 1.3x).
bench snp-verify cargo bench --locked -q -p constellation-attest --bench snp_verify
# TDX: quote verification with collateral cached, quotes/s and ratio to its two P-256 verifies.
bench tdx-verify cargo bench --locked -q -p constellation-attest --bench tdx_verify
# qemu-tdx documents: validation with the verifier cached / uncached vs one P-256 verify.
bench qemu-tdx-validate cargo bench --locked -q -p constellation-attest --bench qemu_tdx_validate
