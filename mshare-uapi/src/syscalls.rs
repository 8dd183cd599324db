//! The mshare system calls (numbers 473-479 on x86-64, a kernel with
//! `CONFIG_MSHARE_SYSCALLS` and the module loaded): [`Calls`] without a device node.

use crate::abi::{
    MSHARE_ATTACH_READ_ONLY, SYS_MSHARE_ADVISE, SYS_MSHARE_ATTACH, SYS_MSHARE_CREATE, SYS_MSHARE_DETACH,
    SYS_MSHARE_MAP, SYS_MSHARE_PROTECT, SYS_MSHARE_UNMAP,
};
use crate::{Calls, Window};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

/// The system calls. [`Syscalls::probe`] says whether this kernel answers them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Syscalls;

/// A system call with up to six arguments; its result, or the errno it set.
fn call(number: i64, args: [u64; 6]) -> io::Result<i64> {
    // SAFETY: the mshare calls take integers only; the kernel checks each (descriptors,
    // ranges, addresses in this process) and touches no memory of ours through them.
    let ret = unsafe { libc::syscall(number, args[0], args[1], args[2], args[3], args[4], args[5]) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Syscalls {
    /// `Ok` if the running kernel answers the calls; ENOSYS (a kernel without them, or
    /// the module not loaded) otherwise. Probes with a call that fails harmlessly: EBADF
    /// from `mshare_unmap` of descriptor -1.
    pub fn probe() -> io::Result<Self> {
        match call(SYS_MSHARE_UNMAP, [u64::MAX, 0, 0, 0, 0, 0]) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Err(e),
            _ => Ok(Self),
        }
    }
}

fn fd_arg(region: &File) -> u64 {
    // Sign-extended, as the kernel reads an int argument.
    i64::from(region.as_raw_fd()) as u64
}

impl Calls for Syscalls {
    fn create(&self, close_on_exec: bool) -> io::Result<File> {
        let flags = if close_on_exec { libc::O_CLOEXEC as u64 } else { 0 };
        let fd = call(SYS_MSHARE_CREATE, [flags, 0, 0, 0, 0, 0])?;
        let fd = i32::try_from(fd).map_err(io::Error::other)?;
        // SAFETY: a fresh descriptor the kernel just installed for this process.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    fn attach(&self, region: &File, offset: u64, size: usize, read_only: bool) -> io::Result<Window> {
        let flags = if read_only { MSHARE_ATTACH_READ_ONLY } else { 0 };
        let addr = call(SYS_MSHARE_ATTACH, [fd_arg(region), offset, size as u64, 0, u64::from(flags), 0])?;
        // SAFETY: the kernel mapped `size` bytes at `addr` for this process.
        Ok(unsafe { Window::from_raw(addr as *mut u8, size) })
    }

    fn detach(&self, window: Window) -> io::Result<()> {
        let (ptr, len) = window.into_raw();
        call(SYS_MSHARE_DETACH, [ptr as u64, len as u64, 0, 0, 0, 0]).map(drop)
    }

    fn map(&self, region: &File, offset: u64, size: u64) -> io::Result<()> {
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        call(SYS_MSHARE_MAP, [fd_arg(region), offset, size, prot, 0, -1i64 as u64]).map(drop)
    }

    fn unmap(&self, region: &File, offset: u64, size: u64) -> io::Result<()> {
        call(SYS_MSHARE_UNMAP, [fd_arg(region), offset, size, 0, 0, 0]).map(drop)
    }

    fn protect(&self, region: &File, prot: i32) -> io::Result<()> {
        let size = region.metadata()?.len();
        call(SYS_MSHARE_PROTECT, [fd_arg(region), 0, size, prot as u64, 0, 0]).map(drop)
    }

    fn advise(&self, region: &File, offset: u64, size: u64, advice: i32) -> io::Result<()> {
        call(SYS_MSHARE_ADVISE, [fd_arg(region), offset, size, advice as u64, 0, 0]).map(drop)
    }
}
