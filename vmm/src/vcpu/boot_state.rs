//! A vCPU's state at boot: CPUID, MSRs, FPU, LAPIC LVTs, and for the boot vCPU 64-bit mode
//! at the kernel's entry with RSI at the zero page.

use super::cpuid::guest_cpuid;
use super::{kvm, VcpuError};
use crate::boot::long_mode;
use crate::memory::{BOOT_STACK_POINTER, ZERO_PAGE_START};
use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, CpuId, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::GuestAddress;

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MTRR_ENABLE_WRITEBACK: u64 = (1 << 11) | 6;

/// MSR values at boot: syscall MSRs cleared, fast strings on, MTRRs enabled with write-back
/// as the default type (else Linux maps all RAM uncached).
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK),
    ]
    .iter()
    .map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() })
    .collect()
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

fn set_lvt_mode(regs: &mut [std::os::raw::c_char; 1024], offset: usize, mode: u32) {
    let mut raw = [0u8; 4];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = regs[offset + i] as u8;
    }
    let value = (u32::from_le_bytes(raw) & !0x700) | (mode << 8);
    for (i, b) in value.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *b as std::os::raw::c_char;
    }
}

/// How a vCPU starts.
#[derive(Debug, Clone, Copy)]
pub struct BootState {
    /// 64-bit entry point of the boot vCPU.
    pub entry: GuestAddress,
    /// Whether the VM has the in-kernel LAPIC (then APs wait for INIT/SIPI).
    pub irqchip: bool,
}

/// Puts vCPU `id` in its boot state. The boot vCPU starts at `boot.entry` in 64-bit mode
/// with RSI at the zero page; the others wait for the guest to start them.
pub fn configure(vcpu: &VcpuFd, supported: &CpuId, id: u8, cpus: u8, boot: BootState) -> Result<(), VcpuError> {
    vcpu.set_cpuid2(&guest_cpuid(supported, id, cpus)).map_err(kvm("KVM_SET_CPUID2"))?;
    let entries = boot_msrs();
    let msrs = Msrs::from_entries(&entries).map_err(VcpuError::Msrs)?;
    let written = vcpu.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
    if written != entries.len() {
        log::warn!(
            "vCPU {id}: KVM accepted {written} of {} boot MSRs (first refused: {:#x})",
            entries.len(),
            entries[written].index
        );
    }
    let fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
    vcpu.set_fpu(&fpu).map_err(kvm("KVM_SET_FPU"))?;
    if boot.irqchip {
        let mut lapic = vcpu.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?;
        set_lvt_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
        set_lvt_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
        vcpu.set_lapic(&lapic).map_err(kvm("KVM_SET_LAPIC"))?;
    }
    if id == 0 || !boot.irqchip {
        let mut sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
        long_mode::configure_sregs(&mut sregs);
        vcpu.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;
        let regs = kvm_regs {
            rflags: 0x2,
            rip: boot.entry.0,
            rsp: BOOT_STACK_POINTER,
            rbp: BOOT_STACK_POINTER,
            rsi: ZERO_PAGE_START.0,
            ..Default::default()
        };
        vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_msrs_enable_write_back_mtrrs() {
        let msrs = boot_msrs();
        let def_type = msrs.iter().find(|m| m.index == MSR_MTRR_DEF_TYPE).unwrap();
        assert_eq!(def_type.data, (1 << 11) | 6);
        assert!(msrs.iter().all(|m| m.index != 0x10a), "IA32_ARCH_CAPABILITIES is refused by KVM here");
    }

    #[test]
    fn lvt_mode_is_set_in_place() {
        let mut regs = [0 as std::os::raw::c_char; 1024];
        regs[APIC_LVT0] = 0x30;
        regs[APIC_LVT0 + 2] = 0x01;
        set_lvt_mode(&mut regs, APIC_LVT0, APIC_MODE_EXTINT);
        assert_eq!((regs[APIC_LVT0] as u8, regs[APIC_LVT0 + 1] as u8, regs[APIC_LVT0 + 2] as u8), (0x30, 0x07, 0x01));
    }
}
