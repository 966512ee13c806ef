#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian 12 machine, only when missing.
set -euo pipefail

pkgs=(
  # vTPM for attestation tests; swtpm_setup for EK certificates
  swtpm swtpm-tools
  # tss-esapi (node-side TPM issuer)
  libtss2-dev pkg-config
  # libcryptsetup-rs (node-side state disk): headers + clang for bindgen
  libcryptsetup-dev clang
  # local backend and guest tests
  qemu-system-x86 ovmf qemu-utils
  # image build and guest initramfs
  cpio zstd binutils systemd-boot-efi busybox-static
  # guest state-disk tests copy the host's mke2fs into the guest (node/tests/guest_disk.rs)
  e2fsprogs
  # packet capture on the VM network in guest tests
  tcpdump
  # GNU time: peak RSS of the provider in `make bench` (tfplugin_plan)
  time
  # image build: Kubernetes flavour downloads (the .debs come through apt-get download)
  curl
  # Kubernetes components from source (scripts/build-kubernetes-components.sh): runc's seccomp
  # support is cgo against a static libseccomp; jq and file check the output
  libseccomp-dev jq file
  # fuzz smoke (scripts/fuzz-smoke.sh): libfuzzer-sys compiles libFuzzer's C++ sources
  g++
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v terraform >/dev/null; then
  # Under CI a missing terraform would fail every acceptance test (constellation-testkit): say so
  # here, once, instead.
  if [ "${CI:-}" = true ]; then
    echo "install-deps: error: terraform is not on PATH and CI=true; install terraform (or set TF_BINARY for the tests)" >&2
    exit 1
  fi
  echo "install-deps: warning: terraform is not on PATH; acceptance tests need it (TF_BINARY)" >&2
fi
command -v go >/dev/null || echo "install-deps: warning: go is not on PATH; scripts/build-tofu.sh builds OpenTofu with it (tools/tofu/go.mod)" >&2
