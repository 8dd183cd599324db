# mshare-vmm: the project's commands. `make help` lists them.

SHELL := /bin/bash
BUILD := bash images/scripts/build.sh

.DEFAULT_GOAL := help

help:
	@echo "make demo         boot the guest: user space under QEMU TCG, then the test kernel under mshare-vmm/KVM"
	@echo "make test         the whole test suite: images, unit tests, tiny KVM guests, guest boots (what CI runs)"
	@echo "make test-kvm     also the guest user-space boots under mshare-vmm (hosts with hardware virtualization)"
	@echo "make images       toolchain, guest kernel, test kernel, mshare.ko, guest programs, initramfs (cached)"
	@echo "make image-paths  print KEY=PATH lines for the built images (use with -s)"
	@echo "make toolchain    install the host packages, rust-src and bindgen-cli"
	@echo "make bench        every benchmark below; reports in target/bench/"
	@echo "make bench-boot   mshare-vmm against QEMU booting the same guest on this host's KVM"
	@echo "make bench-regions host memory of K VMs sharing a 1 GiB region against K private copies"
	@echo "make bench-pagetables guest page tables and faults of N processes: mshare, memfd, hugetlbfs"
	@echo "make lint         rustfmt and clippy over the workspace"
	@echo "make clean-cache  remove every cached image build"

toolchain:
	bash images/scripts/toolchain.sh

images:
	$(BUILD) all

image-paths:
	@$(BUILD) paths

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

# Unit tests need nothing; the guest boots in guest-runner/tests find the images through
# `make -s image-paths`, so build them first.
test: images
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo test --workspace --locked

demo: images
	@eval "$$($(BUILD) paths)"; set -e; \
	echo "== 1. guest user space under QEMU TCG: msharefs regions, the mshare command, the API suite"; \
	cargo run -q --locked -p guest-runner --bin qemu-run -- --initrd "$$INITRAMFS" "$$VMLINUX" -- \
	    sh -c "mshare info && mshare create demo 64M 644 && mshare write demo 0 hello-from-msharefs && \
	           mshare read demo 0 19 && mshare list && mshare-api | tail -3"; \
	echo "== 2. the test kernel under mshare-vmm on this host's KVM (about a minute where KVM emulates guest kernel code)"; \
	cargo run -q --locked --release -p vmm --bin mshare-vmm -- run --cpus 2 --memory 256M --timeout 600 \
	    --kernel "$$VMLINUX_KTEST"

# Guest user space under mshare-vmm: only on hosts whose KVM runs guest kernels in hardware.
test-kvm: images
	cargo test --locked -p vmm --test linux_boot -- --include-ignored

bench: bench-pagetables bench-regions bench-boot

bench-boot: images
	cargo bench --locked -p vmm --bench boot

bench-regions:
	cargo bench --locked -p vmm --bench regions

bench-pagetables: images
	cargo bench --locked -p guest-runner --bench pagetables

clean-cache:
	rm -rf "$${MSHARE_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/mshare-vmm}"

.PHONY: help toolchain images image-paths lint test test-kvm demo bench bench-boot bench-regions bench-pagetables clean-cache
