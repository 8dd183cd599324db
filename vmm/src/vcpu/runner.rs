//! One vCPU's run loop: exits dispatched to the port and MMIO buses, stop reasons for the
//! rest, and the one instruction the host's emulator gives up on that the VMM completes.

use super::dump::register_dump;
use super::guest_walk::instruction_bytes;
use super::ExitCounters;
use crate::devices::pci::PciBus;
use crate::devices::PioBus;
use crate::stop::{StopReason, StopSignal};
use crate::symbols::Symbols;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

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
