//! What keeps a VM from starting, each with what failed and how to fix it.

use crate::boot::cmdline;
use crate::devices::ivshmem::{IvshmemError, MemslotError};
use crate::devices::{pci, BusOverlap};
use crate::regions::{MapError, RegionError};
use crate::{boot, memory, vcpu};
use kvm_ioctls::Cap;
use std::io;

/// Errors that keep a VM from starting.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "/dev/kvm does not exist: this host has no KVM (load kvm_intel or kvm_amd, or enable nested virtualization)"
    )]
    NoKvm,
    #[error("/dev/kvm: permission denied (run as root or add your user to the kvm group)")]
    KvmPermission,
    #[error("{what}: {source}")]
    Kvm {
        /// Which step.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    #[error("this host's KVM lacks {0:?}, which mshare-vmm needs")]
    MissingCap(Cap),
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    Cmdline(#[from] cmdline::CmdlineError),
    #[error("writing the boot GDT and page tables: {0}")]
    Tables(#[source] vm_memory::GuestMemoryError),
    #[error(transparent)]
    Vcpu(#[from] vcpu::VcpuError),
    #[error(transparent)]
    Bus(#[from] BusOverlap),
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error(transparent)]
    RegionMap(#[from] MapError),
    #[error("region '{0}' has no descriptor to hand down to a VM process (its backing is not a file)")]
    NoDescriptor(String),
    #[error("vm '{0}': its thread panicked (see the message above); the other VMs were not affected")]
    VmThreadPanicked(String),
    #[error(transparent)]
    Memslot(#[from] MemslotError),
    #[error(transparent)]
    Ivshmem(#[from] IvshmemError),
    #[error("{0} regions attached: the PCI bus has room for {max}", max = pci::SLOTS - 1)]
    TooManyRegions(usize),
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    #[error("event loop: {0}")]
    EventManager(#[source] event_manager::Error),
}

pub(crate) fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::Kvm { what, source }
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> VmmError {
    let what = what.into();
    move |source| VmmError::Io { what, source }
}

/// [`io_err`] for the errno errors of vmm-sys-util.
pub(crate) fn errno_err(what: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> VmmError {
    move |e| io_err(what)(e.into())
}
