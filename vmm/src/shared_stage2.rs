//! Stage-2 tables shared between VMs (`stage2=shared` regions): the KVM ABI of this
//! project's host kernel patch (`images/kernel/host-patches/`, docs/regions.md). A memslot
//! registered with [`KVM_MEM_SHARED_STAGE2`] pins its memory, and KVM links one set of
//! stage-2 tables for that memory into every VM whose slot maps it.

use kvm_bindings::{kvm_enable_cap, KVM_CAP_DISABLE_QUIRKS2, KVM_X86_QUIRK_SLOT_ZAP_ALL};
use kvm_ioctls::VmFd;

/// `KVM_SET_USER_MEMORY_REGION2` flag: map this slot through shared stage-2 tables.
pub const KVM_MEM_SHARED_STAGE2: u32 = 1 << 3;
/// `KVM_CHECK_EXTENSION`: whether the host's KVM has [`KVM_MEM_SHARED_STAGE2`].
pub const KVM_CAP_SHARED_STAGE2: u32 = 252;

/// Whether `vm`'s KVM can share stage-2 tables.
pub fn supported(vm: &VmFd) -> bool {
    vm.check_extension_raw(KVM_CAP_SHARED_STAGE2.into()) > 0
}

/// Makes deleting a memslot unmap only that slot's range (`tdp_mmu_zap_leafs`, which
/// unlinks shared tables in it) rather than all of the VM's stage-2 entries, which KVM
/// does by default for old VMMs (`KVM_X86_QUIRK_SLOT_ZAP_ALL`). An ivshmem BAR's slot is
/// deleted and registered again whenever the guest turns the device's memory decoding
/// off and on; with the quirk, each time would also drop every link to shared tables.
pub fn zap_only_deleted_slots(vm: &VmFd) -> Result<(), kvm_ioctls::Error> {
    let mut cap = kvm_enable_cap { cap: KVM_CAP_DISABLE_QUIRKS2, ..Default::default() };
    cap.args[0] = KVM_X86_QUIRK_SLOT_ZAP_ALL.into();
    vm.enable_cap(&cap)
}
