//! The register dump a failed vCPU leaves in the stop reason.

use crate::symbols::Symbols;
use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;

/// The register dump printed when a vCPU dies. Registers in the reset state are said to be
/// so: KVM on AMD reinitializes a vCPU that shuts down (the VMCB is undefined after a
/// shutdown intercept), and they are not the state that faulted.
pub fn register_dump(vcpu: &VcpuFd, symbols: Option<&Symbols>) -> String {
    let (Ok(regs), Ok(sregs)) = (vcpu.get_regs(), vcpu.get_sregs()) else {
        return "  (registers unavailable)".to_owned();
    };
    let symbol = symbols.and_then(|s| s.describe(regs.rip)).map(|s| format!(" <{s}>")).unwrap_or_default();
    let reset = if is_reset_state(&regs, &sregs) {
        "\n  (these are the reset values: KVM on AMD SVM reinitializes a vCPU that shuts down, so the state that faulted is lost)"
    } else {
        ""
    };
    format!(
        "  rip {:#018x}{symbol}\n  rsp {:#018x} rbp {:#018x} rflags {:#x}\n  rax {:#018x} rbx {:#018x} rcx {:#018x} rdx {:#018x}\n  rsi {:#018x} rdi {:#018x}\n  cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} cs {:#x} (cpl {}){reset}",
        regs.rip, regs.rsp, regs.rbp, regs.rflags, regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi,
        sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4, sregs.efer, sregs.cs.selector, sregs.cs.dpl
    )
}

/// Whether the registers are the architectural reset state (CS:IP f000:fff0, paging off).
fn is_reset_state(regs: &kvm_regs, sregs: &kvm_sregs) -> bool {
    regs.rip == 0xfff0 && sregs.cs.selector == 0xf000 && sregs.cr0 & (1 << 31) == 0
}
