# Entry points. `make test` is what CI runs (.ci/run); `make demo` runs the local example.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

export CARGO_TERM_COLOR ?= never
CARGO ?= cargo
# Everything tests need that a fresh Debian 12 machine lacks is installed by this script.
DEPS := scripts/install-deps.sh

.PHONY: help deps test fmt-check clippy unit docs docs-check fuzz-smoke bench demo demo-destroy image image-check image-run image-boot-time test-tofu-cluster kubernetes-components

help:
	@echo "make demo    - run the local example through terraform"
	@echo "make test    - everything CI runs: fmt, clippy, unit/integration/acceptance tests, docs-check, fuzz smoke"
	@echo "make test-tofu-cluster - the local cluster lifecycle test (VMs) against OpenTofu"
	@echo "make bench   - benchmarks (figures printed, nothing asserted)"
	@echo "make image   - build the node image into image/out/"
	@echo "make kubernetes-components - build kubeadm, kubelet, etcd, containerd, runc, CNI from source (docs/kubernetes-components.md)"
	@echo "make image-check - build the image twice in different directories and compare"
	@echo "make image-run   - boot image/out/disk.raw with OVMF + swtpm (serial console)"
	@echo "make image-boot-time - boot-to-agent-ready time of image/out/disk.raw per stage"

deps:
	@bash $(DEPS)

# The full gate. Order: cheap static checks first, then tests that start processes and VMs.
test: deps
	bash scripts/test.sh

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# The local cluster lifecycle test (QEMU VMs) against OpenTofu instead of terraform. Needs the
# node images `make test` builds (CONSTELLATION_TEST_IMAGE_DIR, CONSTELLATION_TEST_TAMPERED_IMAGE_DIR).
test-tofu-cluster: deps
	TF_BINARY=$$(bash scripts/build-tofu.sh) $(CARGO) test --locked -p acceptance --test provider_cluster -- --exact local_cluster_lifecycle

unit:
	$(CARGO) test --locked --workspace

docs:
	$(CARGO) run --locked -q -p terraform-provider-constellation --bin docs-gen -- --write docs

docs-check:
	$(CARGO) run --locked -q -p terraform-provider-constellation --bin docs-gen -- --check docs

fuzz-smoke: deps
	bash scripts/fuzz-smoke.sh

bench: deps
	bash scripts/bench.sh

demo: deps
	bash scripts/demo.sh

demo-destroy:
	bash scripts/demo.sh destroy

# Node image (image/): reproducible UKI + GPT disk + measurements.json + manifest.json.
image: deps
	bash scripts/build-image.sh image/out

# Kubernetes node components from their pinned Go modules (cold: tens of minutes; then a no-op).
# Output directory: CONSTELLATION_K8S_COMPONENTS, else under CONSTELLATION_CACHE.
kubernetes-components: deps
	nice -n 19 bash scripts/build-kubernetes-components.sh

# Two builds in different directories must be byte-identical.
image-check: deps
	bash scripts/image-check.sh

# Boots image/out/disk.raw with OVMF + swtpm and streams the serial console (Ctrl-C stops it).
# Comes up as control plane cp-0 waiting for Init; options: IMAGE_RUN_ARGS="--role worker --fw-cfg opt/constellation/join-endpoints=10.42.0.11:30090"
image-run:
	$(CARGO) run --locked -q -p constellation-image --bin constellation-image -- run --disk image/out/disk.raw $(IMAGE_RUN_ARGS)

# Boot-to-agent-ready time of image/out/disk.raw per boot stage (3 boots; figures only).
image-boot-time:
	$(CARGO) bench --locked -p constellation-image --bench boot_time
