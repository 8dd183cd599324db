//! `/dev/mshare`: the calls of the 2026 syscall proposal ([`Calls`]) as ioctls, for
//! kernels without the system calls ([`crate::syscalls`]). Regions made here have no name; other
//! processes get them by descriptor passing (fork, `SCM_RIGHTS`). Every call that takes a
//! region also takes msharefs files.

use crate::abi;
use crate::msharefs::{ioctl, ioctl_value};
use crate::{Calls, Window};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

/// The device node.
pub const DEVICE: &str = abi::MSHARE_DEVICE;

/// `MSHARE_CREATE`: the argument is 0 or `O_CLOEXEC`; returns a region's descriptor.
pub const MSHARE_CREATE: u64 = abi::MSHARE_CREATE;
/// `MSHARE_ATTACH` ([`MshareAttach`] in and out).
pub const MSHARE_ATTACH: u64 = abi::MSHARE_ATTACH;
/// `MSHARE_DETACH` ([`MshareDetach`]).
pub const MSHARE_DETACH: u64 = abi::MSHARE_DETACH;
/// `MSHARE_MAP` ([`MshareMap`]).
pub const MSHARE_MAP: u64 = abi::MSHARE_MAP;
/// `MSHARE_UNMAP` ([`MshareRange`]).
pub const MSHARE_UNMAP: u64 = abi::MSHARE_UNMAP;
/// `MSHARE_PROTECT` ([`MshareProtect`]).
pub const MSHARE_PROTECT: u64 = abi::MSHARE_PROTECT;
/// `MSHARE_ADVISE` ([`MshareAdvise`]).
pub const MSHARE_ADVISE: u64 = abi::MSHARE_ADVISE;

/// `struct mshare_attach` flag: map read-only.
pub const MSHARE_ATTACH_READ_ONLY: u32 = abi::MSHARE_ATTACH_READ_ONLY;
/// `struct mshare_attach` flag: map at `addr` exactly, failing (EEXIST) if it is taken.
pub const MSHARE_ATTACH_FIXED: u32 = abi::MSHARE_ATTACH_FIXED;

/// `struct mshare_attach`: `addr` is set to where the window went.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MshareAttach {
    /// The region's descriptor.
    pub fd: i32,
    /// `MSHARE_ATTACH_*`.
    pub flags: u32,
    /// Offset of the window in the region (granule aligned).
    pub offset: u64,
    /// Length of the window (whole granules).
    pub size: u64,
    /// In: the address with `MSHARE_ATTACH_FIXED`; out: the address of the window.
    pub addr: u64,
}

/// `struct mshare_detach`: a whole window.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MshareDetach {
    /// Start of the window.
    pub addr: u64,
    /// Its length.
    pub size: u64,
}

/// `struct mshare_map`: memory for part of a region.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MshareMap {
    /// The region's descriptor.
    pub fd: i32,
    /// `PROT_READ | PROT_WRITE` (what regions hold).
    pub prot: u32,
    /// Offset in the region.
    pub offset: u64,
    /// Length (whole granules).
    pub size: u64,
    /// -1: anonymous memory (the only kind for now).
    pub object_fd: i32,
    /// `MAP_SHARED | MAP_ANONYMOUS`, or 0.
    pub flags: u32,
}

/// `struct mshare_range`: part of a region.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MshareRange {
    /// The region's descriptor.
    pub fd: i32,
    /// Zero.
    pub pad: u32,
    /// Offset in the region.
    pub offset: u64,
    /// Length.
    pub size: u64,
}

/// `struct mshare_protect`: a region's protection.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MshareProtect {
    /// The region's descriptor.
    pub fd: i32,
    /// `PROT_READ`, or with `PROT_WRITE`.
    pub prot: u32,
}

/// `struct mshare_advise`: advice for part of a region, for every process.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MshareAdvise {
    /// The region's descriptor.
    pub fd: i32,
    /// `MADV_*` (see [`Calls::advise`]).
    pub advice: i32,
    /// Offset in the region.
    pub offset: u64,
    /// Length.
    pub size: u64,
}

/// An open `/dev/mshare`: the calls as ioctls, on any kernel the module loads in.
#[derive(Debug)]
pub struct Device(File);

impl Device {
    /// Opens `/dev/mshare`.
    pub fn open() -> io::Result<Self> {
        OpenOptions::new().read(true).write(true).open(DEVICE).map(Self)
    }

    /// The device's own file (for tests that pass raw arguments).
    pub fn file(&self) -> &File {
        &self.0
    }
}

impl Calls for Device {
    fn create(&self, close_on_exec: bool) -> io::Result<File> {
        let flags = if close_on_exec { libc::O_CLOEXEC as usize } else { 0 };
        let fd = ioctl_value(&self.0, MSHARE_CREATE, flags)?;
        // SAFETY: a fresh descriptor the kernel just installed for this process.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    fn attach(&self, region: &File, offset: u64, size: usize, read_only: bool) -> io::Result<Window> {
        let mut attach = MshareAttach {
            fd: region.as_raw_fd(),
            flags: if read_only { MSHARE_ATTACH_READ_ONLY } else { 0 },
            offset,
            size: size as u64,
            addr: 0,
        };
        ioctl(&self.0, MSHARE_ATTACH, &mut attach as *mut MshareAttach as usize)?;
        // SAFETY: the kernel mapped `size` bytes at `addr` for this process.
        Ok(unsafe { Window::from_raw(attach.addr as *mut u8, size) })
    }

    fn detach(&self, window: Window) -> io::Result<()> {
        let (ptr, len) = window.into_raw();
        let mut detach = MshareDetach { addr: ptr as u64, size: len as u64 };
        ioctl(&self.0, MSHARE_DETACH, &mut detach as *mut MshareDetach as usize)
    }

    fn map(&self, region: &File, offset: u64, size: u64) -> io::Result<()> {
        let mut map = MshareMap {
            fd: region.as_raw_fd(),
            prot: (libc::PROT_READ | libc::PROT_WRITE) as u32,
            offset,
            size,
            object_fd: -1,
            flags: 0,
        };
        ioctl(&self.0, MSHARE_MAP, &mut map as *mut MshareMap as usize)
    }

    fn unmap(&self, region: &File, offset: u64, size: u64) -> io::Result<()> {
        let mut range = MshareRange { fd: region.as_raw_fd(), pad: 0, offset, size };
        ioctl(&self.0, MSHARE_UNMAP, &mut range as *mut MshareRange as usize)
    }

    fn protect(&self, region: &File, prot: i32) -> io::Result<()> {
        let mut protect = MshareProtect { fd: region.as_raw_fd(), prot: prot as u32 };
        ioctl(&self.0, MSHARE_PROTECT, &mut protect as *mut MshareProtect as usize)
    }

    fn advise(&self, region: &File, offset: u64, size: u64, advice: i32) -> io::Result<()> {
        let mut advise = MshareAdvise { fd: region.as_raw_fd(), advice, offset, size };
        ioctl(&self.0, MSHARE_ADVISE, &mut advise as *mut MshareAdvise as usize)
    }
}
