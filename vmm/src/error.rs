//! What keeps a VM from starting, each with what failed and how to fix it.

use crate::boot::cmdline;
use crate::devices::ivshmem::MemslotError;
use crate::devices::{pci, BusOverlap};
use crate::regions::RegionError;
use crate::{boot, memory, vcpu};
use kvm_ioctls::Cap;
use std::io;

/// Errors that keep a VM from starting.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// /dev/kvm missing.
    #[error(
        "/dev/kvm does not exist: this host has no KVM (load kvm_intel or kvm_amd, or enable nested virtualization)"
    )]
    NoKvm,
    /// /dev/kvm not accessible.
    #[error("/dev/kvm: permission denied (run as root or add your user to the kvm group)")]
    KvmPermission,
    /// Any other KVM failure.
    #[error("{what}: {source}")]
    Kvm {
        /// Which step.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// A capability the VMM needs is missing.
    #[error("this host's KVM lacks {0:?}, which mshare-vmm needs")]
    MissingCap(Cap),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// Kernel, initrd, zero page.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// Command line.
    #[error(transparent)]
    Cmdline(#[from] cmdline::CmdlineError),
    /// Writing the boot page tables and GDT.
    #[error("writing the boot GDT and page tables: {0}")]
    Tables(vm_memory::GuestMemoryError),
    /// vCPU setup.
    #[error(transparent)]
    Vcpu(#[from] vcpu::VcpuError),
    /// Devices.
    #[error(transparent)]
    Bus(#[from] BusOverlap),
    /// Shared regions.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// A region's memslot.
    #[error(transparent)]
    Memslot(#[from] MemslotError),
    /// Too many devices.
    #[error("{0} regions attached: the PCI bus has room for {max}", max = pci::SLOTS - 1)]
    TooManyRegions(usize),
    /// Host resources (files, eventfds, threads, epoll).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The event loop.
    #[error("event loop: {0:?}")]
    EventManager(event_manager::Error),
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
