//! Fleets: one TOML file describing shared regions and the VMs that attach them
//! ([`file`]), launched together in this process ([`in_process`]: each region is mapped
//! once and that one mapping is the memslot of its ivshmem BAR2 in every VM that attaches
//! it, so host page tables and data exist once whatever the number of VMs) or a process
//! per VM ([`per_process`]: the regions made once and handed down).
//!
//! ```toml
//! [[region]]
//! name = "db"
//! size = "64M"
//! backing = "memfd"        # memfd (default), hugetlbfs (page_size = "2M" or "1G"), path
//! # path = "/dev/shm/db"   # with backing = "path": any mmap-able file; contents outlive the VMs
//!
//! [[vm]]
//! name = "writer"
//! kernel = "${VMLINUX}"    # ${VAR} is taken from the environment; relative paths from the file's directory
//! initrd = "${INITRAMFS}"
//! cmdline = "loglevel=4"
//! cpus = 1
//! memory = "256M"
//! timeout = 600            # seconds
//! serial = "stdout"        # or a file path; on stdout lines start with [name]
//! serial2 = "stdout"       # COM2 for the guest's user space (no default: no COM2); on stdout [name/ttyS1]
//! command = ["sh", "-c", "..."]
//! regions = [{ name = "db", access = "rw" }]   # access: rw (default) or ro
//! ```
//!
//! Everything is checked before anything starts; each problem is one line naming the file,
//! the entry and the fix.

pub mod file;
pub mod in_process;
pub mod per_process;

pub use file::{Fleet, FleetError};
pub use in_process::{launch, FleetOutcome, VmResult};
pub use per_process::{launch_process_per_vm, VmProcess};

use crate::signals::SignalFd;
use std::os::fd::AsRawFd;

/// Waits up to `millis` for a signal on the launcher's signalfd.
pub(crate) fn wait_for_signal(signals: &SignalFd, millis: i32) -> Option<i32> {
    let mut poll = libc::pollfd { fd: signals.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: polls one valid fd for a bounded time.
    let ready = unsafe { libc::poll(&mut poll, 1, millis) };
    if ready > 0 {
        signals.read()
    } else {
        None
    }
}
