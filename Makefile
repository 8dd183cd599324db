# mshare-vmm: the project's commands. `make help` lists them.

SHELL := /bin/bash
BUILD := bash images/scripts/build.sh

.DEFAULT_GOAL := help

help:
	@echo "make demo         boot the guest under QEMU TCG and show mshare.ko at work (installs and builds what it needs)"
	@echo "make test         the whole test suite: images, unit tests, guest boots (what CI runs)"
	@echo "make images       toolchain, guest kernel, test kernel, mshare.ko, guest programs, initramfs (cached)"
	@echo "make image-paths  print KEY=PATH lines for the built images (use with -s)"
	@echo "make toolchain    install the host packages, rust-src and bindgen-cli"
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
	@eval "$$($(BUILD) paths)"; \
	echo "== booting the guest under QEMU TCG (the mshare-vmm VMM demo arrives with the VMM)"; \
	cargo run -q --locked -p guest-runner --bin qemu-run -- --initrd "$$INITRAMFS" "$$VMLINUX" -- \
	    sh -c "modcheck && grep -E 'PageTables|MemTotal' /proc/meminfo && rmmod mshare && echo demo: done"

clean-cache:
	rm -rf "$${MSHARE_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/mshare-vmm}"

.PHONY: help toolchain images image-paths lint test demo clean-cache
