//! vCPUs: their boot state ([`cpuid`], [`boot_state`]: CPUID, MSRs, registers, LAPIC), one
//! thread each running [`runner`]'s loop that dispatches exits to the devices, and what
//! that loop needs to explain or repair a failed exit: a walk of the guest's page tables
//! ([`guest_walk`]) and the register dump ([`dump`]).
//!
//! Cost of each exit here (see docs/vmm.md): a port access or MMIO access is one KVM_RUN
//! round trip through this loop; under a software hypervisor the guest kernel code around
//! it is emulated, so the VMM side is never the bottleneck.

pub mod boot_state;
pub mod cpuid;
pub mod dump;
pub mod guest_walk;
pub mod runner;

pub use boot_state::{configure, BootState};
pub use cpuid::supported_cpuid;
pub use runner::VcpuRunner;

use std::sync::atomic::{AtomicU64, Ordering};

/// Errors setting up a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("{what}: {source}")]
    Kvm {
        /// Which step.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    #[error("building the MSR list: {0}")]
    Msrs(#[source] vmm_sys_util::fam::Error),
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
