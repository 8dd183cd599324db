//! What a guest can do to the ivshmem devices through PCI configuration space (ports
//! 0xcf8-0xcff) and MMIO: the real devices in a real KVM VM (needs /dev/kvm), two of
//! different sizes, one read-only, next to a RAM memslot. Size probes, BAR2 moved anywhere
//! (over RAM, onto the other device, past what KVM accepts), decoding off and on: after
//! every step the IDs and BAR types hold, each device maps BAR2 exactly where the guest
//! has it decoding, and KVM agrees (the slot is there, a removed slot is gone, no slot over
//! RAM or another); a placement KVM refuses stops the VM, naming the region, and only
//! where the place was taken. The harness is `vmm_testing::IvshmemHarness`, shared with
//! the seeded test in vmm/tests/input_fuzz.rs; one VM per process, fresh devices per input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vmm_testing::IvshmemHarness;

static HARNESS: OnceLock<IvshmemHarness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    HARNESS.get_or_init(|| IvshmemHarness::new().expect("a KVM VM for the ivshmem harness (needs /dev/kvm)")).run(data);
});
