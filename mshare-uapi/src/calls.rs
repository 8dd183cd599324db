//! The mshare calls of the 2026 proposal (LSF/MM/BPF 2026), one trait with two ways in:
//! the system calls ([`crate::syscalls::Syscalls`], kernels with `CONFIG_MSHARE_SYSCALLS`)
//! and `/dev/mshare`'s ioctls ([`crate::device::Device`], any kernel the module loads in).
//! The module answers both with one implementation, so a program written against the
//! trait behaves the same through either. docs/module.md has their manual.

use crate::Window;
use std::fs::File;
use std::io;

/// The calls on regions with no name, made by [`Calls::create`], or msharefs files.
pub trait Calls {
    /// `mshare_create`: a new region with no name and no size (set it with `set_len`).
    fn create(&self, close_on_exec: bool) -> io::Result<File>;

    /// `mshare_attach`: maps `[offset, offset + size)` of `region` into this process,
    /// read-only if asked.
    fn attach(&self, region: &File, offset: u64, size: usize, read_only: bool) -> io::Result<Window>;

    /// `mshare_detach`: unmaps a whole window.
    fn detach(&self, window: Window) -> io::Result<()>;

    /// `mshare_map`: anonymous shared memory for `[offset, offset + size)` of `region`.
    fn map(&self, region: &File, offset: u64, size: u64) -> io::Result<()>;

    /// `mshare_unmap`: takes the memory of `[offset, offset + size)` of `region` away from
    /// every process.
    fn unmap(&self, region: &File, offset: u64, size: u64) -> io::Result<()>;

    /// `mshare_protect`: `libc::PROT_READ`, or with `libc::PROT_WRITE`, for every process,
    /// over the whole region.
    fn protect(&self, region: &File, prot: i32) -> io::Result<()>;

    /// `mshare_advise`: `libc::MADV_DONTNEED` removes every process's mappings of the
    /// range (the memory stays); `MADV_NORMAL`, `_RANDOM`, `_SEQUENTIAL` and `_WILLNEED`
    /// are accepted with nothing to do; anything else is EINVAL.
    fn advise(&self, region: &File, offset: u64, size: u64, advice: i32) -> io::Result<()>;
}
