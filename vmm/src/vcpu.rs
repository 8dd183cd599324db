//! vCPUs: their boot state (CPUID, MSRs, registers, LAPIC), one thread each, and the run
//! loop that dispatches exits to the devices.
//!
//! Cost of each exit here (see docs/vmm.md): a port access or MMIO access is one KVM_RUN
//! round trip through this loop; under a software hypervisor the guest kernel code around
//! it is emulated, so the VMM side is never the bottleneck.

use crate::boot::long_mode;
use crate::devices::pci::PciBus;
use crate::devices::PioBus;
use crate::memory::{BOOT_STACK_POINTER, ZERO_PAGE_START};
use crate::stop::{StopReason, StopSignal};
use crate::symbols::Symbols;
use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_sregs, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Errors setting up a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A KVM ioctl failed.
    #[error("{what}: {source}")]
    Kvm {
        /// Which step.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// Building the MSR list failed.
    #[error("building the MSR list: {0:?}")]
    Msrs(vmm_sys_util::fam::Error),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError {
    move |source| VcpuError::Kvm { what, source }
}

/// Exit counters of one VM, shared by its vCPUs.
#[derive(Debug, Default)]
pub struct ExitCounters {
    /// Port reads.
    pub io_in: AtomicU64,
    /// Port writes.
    pub io_out: AtomicU64,
    /// MMIO reads no device decodes (they read all ones).
    pub mmio_read: AtomicU64,
    /// MMIO writes no device decodes (dropped).
    pub mmio_write: AtomicU64,
    /// Instructions the host's emulator gave up on that the VMM completed (`fwait`).
    pub completed_instructions: AtomicU64,
}

impl std::fmt::Display for ExitCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "io-in {}, io-out {}, mmio-read {}, mmio-write {}, instructions completed by the VMM {}",
            get(&self.io_in),
            get(&self.io_out),
            get(&self.mmio_read),
            get(&self.mmio_write),
            get(&self.completed_instructions)
        )
    }
}

// CPUID leaves and bits fixed up for the guest.
const LEAF_FEATURES: u32 = 1;
const LEAF_CACHE_PARAMS: u32 = 4;
const LEAF_PMU: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// Number of bits an APIC id needs for `cpus` CPUs.
fn apic_id_bits(cpus: u8) -> u32 {
    u32::from(cpus).next_power_of_two().trailing_zeros()
}

/// The host's supported CPUID fixed up for vCPU `id` of `cpus`: APIC ids and topology (one
/// package, one thread per core), the hypervisor bit, no PMU.
pub fn guest_cpuid(supported: &CpuId, id: u8, cpus: u8) -> CpuId {
    let mut cpuid = supported.clone();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx = (entry.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(cpus) << 16);
                entry.ecx |= ECX_HYPERVISOR;
                if cpus > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                entry.eax = (entry.eax & 0x3fff) | ((u32::from(cpus) - 1) << 26);
            }
            LEAF_PMU => {
                entry.eax = 0;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
                entry.edx = u32::from(id);
                match entry.index {
                    0 => {
                        entry.eax = 0;
                        entry.ebx = 1;
                        entry.ecx = 1 << 8;
                    }
                    1 => {
                        entry.eax = apic_id_bits(cpus);
                        entry.ebx = u32::from(cpus);
                        entry.ecx = (2 << 8) | 1;
                    }
                    level => {
                        entry.eax = 0;
                        entry.ebx = 0;
                        entry.ecx = level;
                    }
                }
            }
            _ => {}
        }
    }
    cpuid
}

/// The host's supported CPUID.
pub fn supported_cpuid(kvm_fd: &Kvm) -> Result<CpuId, VcpuError> {
    kvm_fd.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(kvm("KVM_GET_SUPPORTED_CPUID"))
}

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

/// Translates a guest-virtual address by walking the guest's page tables (4- or 5-level).
pub fn translate(mem: &GuestMemoryMmap, cr0: u64, cr3: u64, cr4: u64, vaddr: u64) -> Option<u64> {
    const PG: u64 = 1 << 31;
    const LA57: u64 = 1 << 12;
    if cr0 & PG == 0 {
        return Some(vaddr);
    }
    let levels: u32 = if cr4 & LA57 != 0 { 5 } else { 4 };
    let mut table = cr3 & 0x000f_ffff_ffff_f000;
    for level in (0..levels).rev() {
        let shift = 12 + 9 * level;
        let index = (vaddr >> shift) & 0x1ff;
        let entry: u64 = mem.read_obj(GuestAddress(table + index * 8)).ok()?;
        if entry & 1 == 0 {
            return None;
        }
        let frame = entry & 0x000f_ffff_ffff_f000;
        if level == 0 || (level <= 2 && entry & 0x80 != 0) {
            let page_mask = (1u64 << shift) - 1;
            return Some((frame & !page_mask) | (vaddr & page_mask));
        }
        table = frame;
    }
    None
}

/// The instruction bytes at the vCPU's RIP, if they can be read.
fn instruction_bytes(vcpu: &VcpuFd, mem: &GuestMemoryMmap) -> Option<(u64, Vec<u8>)> {
    let regs = vcpu.get_regs().ok()?;
    let sregs = vcpu.get_sregs().ok()?;
    let phys = translate(mem, sregs.cr0, sregs.cr3, sregs.cr4, regs.rip)?;
    let mut bytes = vec![0u8; 15];
    // The instruction may end at a page boundary followed by an unmapped page: keep what reads.
    let readable = (0..bytes.len())
        .take_while(|i| mem.read_slice(&mut bytes[*i..*i + 1], GuestAddress(phys + *i as u64)).is_ok())
        .count();
    bytes.truncate(readable);
    Some((regs.rip, bytes))
}

/// `fwait` (9b): the host emulator cannot run it, and with no pending x87 exception (the
/// guest kernel runs with x87 exceptions masked) it does nothing, so stepping over is exact.
const FWAIT: u8 = 0x9b;

/// One vCPU's run loop until the VM stops.
pub struct VcpuRunner {
    /// The vCPU.
    pub vcpu: VcpuFd,
    /// Its index.
    pub id: u8,
    /// Port-I/O bus.
    pub bus: Arc<PioBus>,
    /// PCI devices, for MMIO to their BARs.
    pub pci: Arc<PciBus>,
    /// Guest memory, to read instructions on emulation failures.
    pub mem: GuestMemoryMmap,
    /// Where stop reasons go.
    pub stop: Arc<StopSignal>,
    /// Exit counters.
    pub counters: Arc<ExitCounters>,
    /// Kernel symbols for messages.
    pub symbols: Option<Arc<Symbols>>,
}

impl VcpuRunner {
    /// Runs until the VM stops (for whatever reason, from whichever thread).
    pub fn run(mut self) {
        while !self.stop.is_stopping() {
            if let Some(reason) = self.run_once() {
                self.stop.stop(reason);
            }
        }
    }

    fn run_once(&mut self) -> Option<StopReason> {
        let id = self.id;
        match self.vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                self.counters.io_out.fetch_add(1, Ordering::Relaxed);
                self.bus.write(port, data);
                None
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                self.counters.io_in.fetch_add(1, Ordering::Relaxed);
                self.bus.read(port, data);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if self.pci.mmio_read(addr, data) {
                    return None;
                }
                if self.counters.mmio_read.fetch_add(1, Ordering::Relaxed) < 10 {
                    log::debug!(
                        "vCPU {id}: MMIO read of {} bytes at {addr:#x}: no device, reads as all ones",
                        data.len()
                    );
                }
                data.fill(0xff);
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if self.pci.mmio_write(addr, data) {
                    return None;
                }
                if self.counters.mmio_write.fetch_add(1, Ordering::Relaxed) < 10 {
                    log::debug!("vCPU {id}: MMIO write of {} bytes at {addr:#x}: no device, dropped", data.len());
                }
                None
            }
            Ok(VcpuExit::Hlt) => Some(StopReason::Halted(id)),
            Ok(VcpuExit::Shutdown) => Some(StopReason::TripleFault {
                vcpu: id,
                registers: register_dump(&self.vcpu, self.symbols.as_deref()),
            }),
            Ok(VcpuExit::SystemEvent(kind, _)) => Some(match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => StopReason::Reset,
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => StopReason::PowerOff,
                other => {
                    StopReason::VcpuFailure { vcpu: id, detail: format!("KVM system event {other} (guest crash)") }
                }
            }),
            Ok(VcpuExit::InternalError) => self.internal_error(),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(StopReason::VcpuFailure {
                vcpu: id,
                detail: format!(
                    "KVM could not enter the guest (hardware reason {reason:#x}, host CPU {cpu})\n{}",
                    register_dump(&self.vcpu, self.symbols.as_deref())
                ),
            }),
            Ok(VcpuExit::Intr) => None,
            Ok(other) => Some(StopReason::VcpuFailure { vcpu: id, detail: format!("unexpected exit {other:?}") }),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => Some(StopReason::VcpuFailure { vcpu: id, detail: format!("KVM_RUN: {e}") }),
        }
    }

    /// KVM_EXIT_INTERNAL_ERROR: complete what the VMM can (`fwait`), describe the rest.
    fn internal_error(&mut self) -> Option<StopReason> {
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the union
        // member KVM filled; it is plain data.
        let (suberror, ndata) = unsafe {
            let internal = &self.vcpu.get_kvm_run().__bindgen_anon_1.internal;
            (internal.suberror, internal.ndata)
        };
        let insn = instruction_bytes(&self.vcpu, &self.mem);
        if suberror == kvm_bindings::KVM_INTERNAL_ERROR_EMULATION {
            if let Some((rip, bytes)) = &insn {
                if bytes.first() == Some(&FWAIT) {
                    if let Ok(mut regs) = self.vcpu.get_regs() {
                        regs.rip = rip + 1;
                        if self.vcpu.set_regs(&regs).is_ok() {
                            if self.counters.completed_instructions.fetch_add(1, Ordering::Relaxed) == 0 {
                                log::info!(
                                    "vCPU {}: the host emulator cannot run fwait; stepping over it (counted)",
                                    self.id
                                );
                            }
                            return None;
                        }
                    }
                }
            }
        }
        let kind = match suberror {
            kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => "the host's instruction emulator gave up",
            kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => "an exception while delivering an exception",
            kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => "an event could not be delivered",
            _ => "unexpected exit reason inside KVM",
        };
        let instruction = match insn {
            Some((rip, bytes)) => {
                let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let symbol =
                    self.symbols.as_ref().and_then(|s| s.describe(rip)).map(|s| format!(" in {s}")).unwrap_or_default();
                format!("instruction at {rip:#x}{symbol}: {}", hex.join(" "))
            }
            None => "instruction bytes unreadable".to_owned(),
        };
        Some(StopReason::InternalError {
            vcpu: self.id,
            detail: format!(
                "{kind} (suberror {suberror}, {ndata} data words); {instruction}\n{}",
                register_dump(&self.vcpu, self.symbols.as_deref())
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn cpuid_with(entries: &[kvm_cpuid_entry2]) -> CpuId {
        CpuId::from_entries(entries).unwrap()
    }

    #[test]
    fn cpuid_carries_apic_id_topology_and_hypervisor_bit() {
        let supported = cpuid_with(&[
            kvm_cpuid_entry2 { function: 1, ebx: 0xffff_0800, edx: 0, ..Default::default() },
            kvm_cpuid_entry2 { function: 0xb, index: 0, ..Default::default() },
            kvm_cpuid_entry2 { function: 0xb, index: 1, ..Default::default() },
            kvm_cpuid_entry2 { function: 0xa, eax: 0x0703_0802, ..Default::default() },
        ]);
        let cpuid = guest_cpuid(&supported, 2, 4);
        let e = cpuid.as_slice();
        assert_eq!(e[0].ebx, (2 << 24) | (4 << 16) | 0x0800);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert_eq!((e[1].edx, e[1].ebx, e[1].ecx), (2, 1, 1 << 8));
        assert_eq!((e[2].eax, e[2].ebx, e[2].ecx), (2, 4, (2 << 8) | 1));
        assert_eq!(e[3].eax, 0, "no PMU");
        let single = guest_cpuid(&supported, 0, 1);
        assert_eq!(single.as_slice()[0].edx & EDX_HTT, 0);
    }

    #[test]
    fn apic_id_width() {
        assert_eq!(apic_id_bits(1), 0);
        assert_eq!(apic_id_bits(2), 1);
        assert_eq!(apic_id_bits(3), 2);
        assert_eq!(apic_id_bits(8), 3);
    }

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

    #[test]
    fn translate_walks_4_level_tables_with_large_pages() {
        let mem = crate::memory::create_guest_memory(64 << 20).unwrap();
        long_mode::write_tables(&mem).unwrap();
        let cr0 = 1 << 31;
        assert_eq!(translate(&mem, cr0, 0x9000, 0, 0x0123_4567), Some(0x0123_4567));
        assert_eq!(translate(&mem, cr0, 0x9000, 0, 0x1_0000_0000), None, "only the first 4 GiB are mapped");
        assert_eq!(translate(&mem, 0, 0, 0, 0xdead), Some(0xdead), "paging off");
        // A 4 KiB mapping: PD entry 1 -> a page table mapping page 3 to 0x30_0000.
        mem.write_obj(0xc000u64 | 3, GuestAddress(0xb000 + 8)).unwrap();
        mem.write_obj(0x30_0000u64 | 3, GuestAddress(0xc000 + 3 * 8)).unwrap();
        assert_eq!(translate(&mem, cr0, 0x9000, 0, (1 << 21) + 3 * 4096 + 0x10), Some(0x30_0010));
    }
}
