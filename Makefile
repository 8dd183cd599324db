# mshare-vmm: the project's commands. `make help` lists them.

SHELL := /bin/bash
BUILD := bash images/scripts/build.sh

.DEFAULT_GOAL := help

help:
	@echo "make demo         mshare in the guest under QEMU TCG, then two Linux VMs sharing a region under mshare-vmm"
	@echo "make test         the whole test suite: images, unit tests, tiny KVM guests, guest boots (what CI runs)"
	@echo "make test-lockdep the module's suites on a kernel with KASAN and lockdep (builds it: about 4 minutes; runs about 2)"
	@echo "make test-kvm     also the guest user-space boots under mshare-vmm at full size, on the host's KVM (hardware virtualization; not yet run on such a host)"
	@echo "make images       toolchain, guest kernel, test kernel, mshare.ko, guest programs, initramfs, nested host, QEMU (cached)"
	@echo "make image-paths  print export KEY=PATH lines for the built images: eval \"\$$(make -s image-paths)\""
	@echo "make toolchain    install the host packages, rust-src and bindgen-cli"
	@echo "make bench        every benchmark below, then target/bench/report.md, report.json and plots"
	@echo "make bench-boot   mshare-vmm against QEMU booting the same guest on this host's KVM"
	@echo "make bench-regions host memory of K VMs sharing a region against K private copies; stage-2 tables on the nested KVM host"
	@echo "make bench-stage2 N VMs on the nested KVM host: one shared set of stage-2 tables for a region against each VM's own"
	@echo "make bench-pagetables guest page tables and faults of N processes: mshare, memfd, hugetlbfs"
	@echo "make bench-dbtier LMDB, K VMs x N readers: private copies (4 KiB, THP) against one shared copy (mshare C, B); then under mshare-vmm on the nested KVM host"
	@echo "make bench-postgres PostgreSQL (pgbench -S, connect storm): mmap, huge_pages=on, mshare C, mshare B"
	@echo "make bench-kvm    the LMDB tier under mshare-vmm with K VMs at once (hardware virtualization; not yet run on such a host)"
	@echo "make fuzz         cargo-fuzz over the VMM's inputs, FUZZ_SECONDS per target (default 300)"
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
#
# A nested boot in which QEMU's emulated SVM lost an L2's state (docs/vmm.md) is booted once
# more and recorded in target/nested-retries.log; the run ends with how many there were and
# fails with more than one (guest-runner/src/nested.rs says what counts as that evidence).
# --no-fail-fast: a failing test binary does not hide the results of the ones after it.
test: images
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	rm -f target/nested-retries.log
	status=0; cargo test --workspace --locked --no-fail-fast || status=$$?; bash images/scripts/nested-retries.sh || status=1; exit $$status
	$(MAKE) fuzz FUZZ_SECONDS=10

# cargo-fuzz (nightly, libFuzzer, AddressSanitizer) over the VMM's input parsers, the
# ivshmem devices (PCI configuration space and MMIO, in a KVM VM) and the exit device:
# FUZZ_SECONDS per target, from the seeds in vmm/fuzz/seeds into a scratch corpus. A crash leaves its input in vmm/fuzz/artifacts/.
FUZZ_TARGETS := fleet_file region_spec pci_config exit_device
FUZZ_SECONDS ?= 300
fuzz:
	@cd vmm && for t in $(FUZZ_TARGETS); do \
	    corpus=$$(mktemp -d); \
	    echo "== cargo fuzz run $$t for $(FUZZ_SECONDS) s"; \
	    cargo +nightly fuzz run $$t "$$corpus" fuzz/seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) -seed=1 \
	        -print_final_stats=1 2>&1 | grep -E '^(Done|stat::number_of_executed_units)|ERROR|panicked|SUMMARY' ; \
	    status=$${PIPESTATUS[0]}; rm -rf "$$corpus"; [ $$status -eq 0 ] || exit $$status; \
	done

demo: images
	bash examples/demo.sh

# The module's suites on the debug kernel (KASAN, lockdep): not in `make test`, whose time
# on a fresh machine has no room for a fourth kernel build.
test-lockdep: images
	bash images/scripts/build.sh debug
	cargo test --locked -p guest-runner --test debug_kernel -- --include-ignored

# Guest user space under mshare-vmm: only on hosts whose KVM runs guest kernels in hardware.
test-kvm: images
	cargo test --locked -p vmm --test linux_boot -- --include-ignored

bench: bench-pagetables bench-dbtier bench-postgres bench-regions bench-stage2 bench-boot
	cargo run -q --locked --release -p bench-report

bench-boot: images
	cargo bench --locked -p vmm --bench boot

# Host memory on this machine's KVM, then stage-2 tables on the nested KVM host's TDP MMU.
bench-regions: images
	cargo bench --locked -p vmm --bench regions
	cargo bench --locked -p vmm --bench regions_nested

# Stage-2 tables shared between VMs against each VM's own, on the nested KVM host.
bench-stage2: images
	cargo bench --locked -p vmm --bench stage2

bench-pagetables: images
	cargo bench --locked -p guest-runner --bench pagetables

# PostgreSQL, unmodified: mmap, huge_pages=on, mshare C and B side by side (docs/preload.md),
# under QEMU TCG, then under mshare-vmm on the nested KVM host.
bench-postgres: images
	cargo bench --locked -p guest-runner --bench postgres
	cargo bench --locked -p vmm --bench postgres_nested

# The LMDB tier under QEMU TCG, then under mshare-vmm on the nested KVM host.
bench-dbtier: images
	cargo bench --locked -p guest-runner --bench dbtier
	cargo bench --locked -p vmm --bench dbtier_nested

# The LMDB tier under mshare-vmm: hosts whose KVM runs guest user space (not kvm_pvm).
bench-kvm: images
	cargo bench --locked -p vmm --bench dbtier_kvm

clean-cache:
	rm -rf "$${MSHARE_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/mshare-vmm}"

.PHONY: bench-dbtier bench-postgres bench-kvm fuzz help toolchain images image-paths lint test test-kvm test-lockdep demo bench bench-boot bench-regions bench-stage2 bench-pagetables clean-cache
