#!/usr/bin/env bash
# `make demo`: mshare at work, in three parts (about a minute here once the images are built).
#
# 1. Guest user space under QEMU TCG: a region made through msharefs, written and read by
#    the `mshare` command; 16 processes mapping the same 64 MiB through mshare (page tables
#    shared) and through a plain shared memfd, side by side.
# 2. examples/two-vms.toml under mshare-vmm on this host's KVM: two Linux VMs share a
#    region as an ivshmem device, the primary's mshare module writes it, the replica's
#    (attached read-only) reads it and its own write is dropped; then the VMM's figures.
# 3. examples/two-vms-programs.toml under mshare-vmm on the nested KVM test host (QEMU TCG
#    emulating AMD SVM, a Linux KVM host inside): two Linux VMs with user space, a program
#    in one writes a region through msharefs, a program in the other (read-only) reads it
#    and is refused a write.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash images/scripts/build.sh paths)"
export VMLINUX_KTEST
out=target/demo
mkdir -p "$out"

# The guest command's own output: what its ttyS1 shows between /init's start and end
# (qemu-run logs ttyS1 beside the console: NAME.ttyS1.log for --log NAME.log).
guest_output() { sed -n '/^MSHARE-INIT/,/^MSHARE-RESULT/p' "$1" | grep -vE '^MSHARE-(INIT|RESULT)'; }

echo "== 1. guest user space under QEMU TCG (Linux 7.3 with the core-mm patch, 2 vCPUs)"
script="mshare info && mshare create demo 64M 644 && mshare write demo 0 hello-from-msharefs && \
mshare read demo 0 19 && mshare list && echo && \
echo 16 processes map 64 MiB and touch every page, mshare then a shared memfd: && \
mshare-bench mshare 16 64M && mshare-bench memfd 16 64M && mshare remove demo"
cargo run -q --locked -p guest-runner --bin qemu-run -- --quiet --memory 1024 --append loglevel=4 --log "$out/tcg.log" \
    --initrd "$INITRAMFS" "$VMLINUX" -- sh -c "$script"
guest_output "$out/tcg.ttyS1.log"
echo "(pagetables_kib: PageTables growth for all 16; vmpte_kib: per process; faults: all 16; console: $out/tcg.log)"

echo
echo "== 2. two Linux VMs under mshare-vmm sharing a 64 MiB region (KUnit, then reset; about a minute)"
cargo build -q --locked --release -p vmm
./target/release/mshare-vmm launch examples/two-vms.toml --stats-json "$out/fleet.json" \
    >"$out/fleet-consoles.log" 2>"$out/fleet.log"
grep -E "mode B|selftest (wrote|read|write)|# Totals" "$out/fleet-consoles.log" || true
grep -E "dropped|vm '.*': (ran|host memory)|fleet:" "$out/fleet.log" || true
python3 - "$out/fleet.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print("\nVMM figures (%s; consoles in fleet-consoles.log):" % sys.argv[1])
for vm in report["vms"]:
    kvm = vm.get("kvm_stats") or {}
    stage2 = ", ".join("%s %s" % (k, kvm[k]) for k in ("pages_4k", "pages_2m", "pages_1g", "mmu_pte_write") if k in kvm)
    dropped = sum(r.get("read_only_writes_dropped", 0) for r in vm.get("regions", []))
    rss = vm.get("host_memory_kib_at_stop", {}).get("Rss", 0) >> 10
    print("  %-8s exit %s, RSS %d MiB at stop, read-only writes dropped %d; KVM: %s" % (vm["name"], vm["exit_status"], rss, dropped, stage2))
after = report.get("host_memory_kib_after_all_vms") or {}
def backing(b):
    # "memfd", or {"hugetlbfs": {"page_size": N}}, {"path": FILE}, {"inherited_fd": N}
    return b if isinstance(b, str) else ", ".join("%s %s" % kv for kv in b.items())
for region in report["regions"]:
    print("  region %s: %d MiB %s, attached by %s" % (region["name"], region["size"] >> 20, backing(region["backing"]), ", ".join(region["attached_by"])))
print("  the VMM process after both VMs stopped: RSS %d MiB, PSS %d MiB" % (after.get("Rss", 0) >> 10, after.get("Pss", 0) >> 10))
print("  (kvm_pvm shadows guest page tables: pages_* stay 0 here; mmu_pte_write counts its shadow-entry writes)")
PY

echo
echo "== 3. two Linux VMs with user space under mshare-vmm, on the nested KVM host (about 20 s)"
cargo run -q --locked -p guest-runner --bin qemu-run -- --nested --quiet --log "$out/nested.log" \
    --host-file examples/two-vms-programs.toml:/xchg.toml -- mshare-vmm launch /xchg.toml
grep -hE "^\[(writer|reader)(/ttyS1)?\] (ivshmem/xchg|NAME|mshare:|write status|written-by|MSHARE-RESULT)|^mshare-vmm: (region|vm .*(exited|KVM:))|Nested Paging" \
    "$out/nested.log" "$out/nested.ttyS1.log" || true
echo "(the nested host's console: $out/nested.log; its user space, with both guests' lines: $out/nested.ttyS1.log)"
