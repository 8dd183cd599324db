//! mshare-vmm: a KVM virtual machine monitor on the rust-vmm crates that boots a Linux
//! guest (ELF vmlinux through the 64-bit entry, or bzImage) and, in later layers, shares
//! host memory regions across VMs.
//!
//! One concept per module: [`config`] (what a VM is), [`memory`] (guest RAM and its layout),
//! [`boot`] (kernel, initrd, zero page, MP table, long-mode tables), [`vcpu`] (CPU state and
//! the run loop), [`devices`] (UART, i8042 reset, exit device), [`stop`] (why a VM ended),
//! [`host`] (what kind of KVM this is), [`regions`] (host memory shared with guests),
//! [`vmm`] (one VM from start to stop). Test support (tiny guests, the ivshmem harness) is
//! the separate `vmm-testing` crate, not part of this library.

pub mod boot;
pub mod config;
pub mod console;
pub mod devices;
pub mod error;
pub mod event_loop;
pub mod fleet;
pub mod host;
pub mod logger;
pub mod memory;
pub mod outcome;
pub mod regions;
pub mod report;
pub mod shared_stage2;
pub mod signals;
pub mod stats;
pub mod stop;
pub mod symbols;
pub mod vcpu;
pub mod vm;
pub mod vmm;
