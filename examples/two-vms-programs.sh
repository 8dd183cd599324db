#!/bin/sh
# Two Linux VMs with user space sharing a region, on the nested KVM test host: `make demo`
# and `make test` run this inside it, as
#
#   cargo run --locked -p guest-runner --bin qemu-run -- --nested \
#       --host-file examples/two-vms-programs.sh:/xchg.sh -- sh /xchg.sh
#
# The region is a file of the host, so it outlives each VM. A program in the writer VM
# writes it through msharefs; then the reader VM, which attaches it read-only, reads those
# bytes and is refused a write. The VMs run one after the other: two L2 VMs at the same
# time are not reliable under QEMU's SVM emulation (docs/vmm.md). On a host with hardware
# virtualization, examples/two-vms-programs.toml runs the same exchange as one fleet.
#
# L2_KERNEL and L2_INITRD (the guest image) are in the nested host's environment.
region=/tmp/xchg
dd if=/dev/zero of=$region bs=1M count=16 2>/dev/null || exit 1

vm() {
    name=$1 access=$2
    shift 2
    mshare-vmm run --name "$name" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" --memory 256M --timeout 300 --serial2 stdout \
        --region "name=xchg,size=16M,path=$region$access" -- "$@"
}

vm writer "" sh -c 'mshare write ivshmem/xchg 0 written-by-the-writer-vm && mshare list' || exit
# One line: the guest command goes on the guest kernel's command line.
vm reader ,ro sh -c 'mshare read ivshmem/xchg 0 24 && mshare list && { mshare write ivshmem/xchg 0 overwritten; echo write status $?; } && mshare read ivshmem/xchg 0 24'
