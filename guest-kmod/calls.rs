// SPDX-License-Identifier: GPL-2.0

//! The mshare calls of the 2026 proposal (LSF/MM/BPF 2026): `mshare_create`, `_attach`,
//! `_detach`, `_map`, `_unmap`, `_protect` and `_advise`. One implementation, reached two
//! ways: as system calls where the kernel has them ([`crate::syscalls`]), and as
//! `/dev/mshare`'s ioctls everywhere ([`crate::devmshare`]), which only copy their
//! arguments in and out.
//!
//! `create` returns the descriptor of a new region with no name; its size is set with
//! `ftruncate`, other processes get it by descriptor passing. Every other call takes the
//! descriptor of a region, named (an msharefs file) or not, so the msharefs API reaches
//! the same regions. Unlike the proposal, where the creator owns the region and its exit
//! takes every mapping away, a region lives while any descriptor or mapping of it does:
//! nothing a process relies on disappears because another process exited, and ownership
//! needs no handing over.

use crate::file_pages::MappedFile;
use crate::msharefs::{self, MAP_ANONYMOUS, MAP_SHARED, PROT_READ, PROT_WRITE};
use crate::region::Region;
use crate::uapi::abi::{MSHARE_ATTACH_FIXED as ATTACH_FIXED, MSHARE_ATTACH_READ_ONLY as ATTACH_READ_ONLY};
use core::ffi::c_void;
use kernel::{
    bindings,
    fs::{file, File, LocalFile},
    prelude::*,
    sync::aref::ARef,
};

// Typed pointers to C structs (bindgen's layouts, which improper_ctypes flags for a
// zero-length array deep inside) and to `Region` (which C never reads, only passes back):
// only the pointers cross.
#[allow(improper_ctypes)]
extern "C" {
    fn msharefs_new_anonymous_file() -> *mut c_void;
    fn msharefs_file_region(file: *mut bindings::file) -> *const Region;
}

const MAP_FIXED_NOREPLACE: u32 = 0x100000;

/// `madvise(2)`'s advice values that [`advise`] answers.
const MADV_NORMAL: i32 = 0;
const MADV_RANDOM: i32 = 1;
const MADV_SEQUENTIAL: i32 = 2;
const MADV_WILLNEED: i32 = 3;
const MADV_DONTNEED: i32 = 4;

/// A region reached through a file descriptor of the caller, held for the call.
struct RegionFd {
    file: ARef<LocalFile>,
    region: *const Region,
}

impl RegionFd {
    /// EBADF for a descriptor that is not open, EINVAL for a file that is not a region.
    fn get(fd: i32) -> Result<Self> {
        let file = LocalFile::fget(u32::try_from(fd).map_err(|_| EBADF)?)?;
        // SAFETY: the file is held by `file`; the call only reads its operations and inode.
        let region = unsafe { msharefs_file_region(file.as_ptr()) };
        if region.is_null() {
            return Err(EINVAL);
        }
        Ok(Self { file, region })
    }

    fn region(&self) -> &Region {
        // SAFETY: the region lives as long as its inode, which the held file keeps alive.
        unsafe { &*self.region }
    }

    /// Changing a region takes a descriptor open for writing, as with msharefs.
    fn writable(fd: i32) -> Result<Self> {
        let region = Self::get(fd)?;
        if region.file.flags() & file::flags::O_ACCMODE == file::flags::O_RDONLY {
            return Err(EBADF);
        }
        Ok(region)
    }
}

/// `mshare_create(flags)`: a region with no name, no size and no memory; its descriptor.
pub(crate) fn create(flags: u32) -> Result<u32> {
    if flags & !file::flags::O_CLOEXEC != 0 {
        return Err(EINVAL);
    }
    let reservation = file::FileDescriptorReservation::get_unused_fd_flags(flags)?;
    // SAFETY: plain call into the glue; it returns a file with a reference we own, or an
    // ERR_PTR.
    let raw = kernel::error::from_err_ptr(unsafe { msharefs_new_anonymous_file() })?;
    let raw = core::ptr::NonNull::new(raw.cast::<File>()).ok_or(ENOMEM)?;
    let fd = reservation.reserved_fd();
    // SAFETY: `raw` is a live file whose reference is handed to the `ARef`.
    let file = unsafe { ARef::from_raw(raw) };
    reservation.fd_install(file);
    Ok(fd)
}

/// `mshare_attach(fd, offset, size, addr, flags)`: maps `[offset, offset + size)` of the
/// region into the caller, read-only with `MSHARE_ATTACH_READ_ONLY`, at `addr` exactly
/// with `MSHARE_ATTACH_FIXED` (EEXIST if taken; `addr` is ignored without it); the
/// window's address.
pub(crate) fn attach(fd: i32, offset: u64, size: u64, addr: u64, flags: u32) -> Result<usize> {
    if flags & !(ATTACH_READ_ONLY | ATTACH_FIXED) != 0 || (flags & ATTACH_FIXED != 0 && addr == 0) {
        return Err(EINVAL);
    }
    let (offset, size, addr) = (to_usize(offset)?, to_usize(size)?, to_usize(addr)?);
    let region = RegionFd::get(fd)?;
    let prot = if flags & ATTACH_READ_ONLY != 0 { PROT_READ } else { PROT_READ | PROT_WRITE };
    let map_flags = MAP_SHARED | if flags & ATTACH_FIXED != 0 { MAP_FIXED_NOREPLACE } else { 0 };
    let hint = if flags & ATTACH_FIXED != 0 { addr } else { 0 };
    // The mmap path checks the rest: the file's access mode, the window's size, alignment
    // and place in the region.
    // SAFETY: maps a held file into the calling process, as mmap(2) would.
    let mapped =
        unsafe { bindings::vm_mmap(region.file.as_ptr(), hint, size, prot as usize, map_flags as usize, offset) };
    // An address, or a negative errno (IS_ERR_VALUE).
    match mapped as isize {
        errno @ -4095..=-1 => Err(Error::from_errno(errno as i32)),
        _ => Ok(mapped),
    }
}

/// `mshare_detach(addr, size)`: unmaps a whole window of a region, EINVAL for anything
/// else (part of a window, another mapping, nothing).
pub(crate) fn detach(addr: u64, size: u64) -> Result {
    let (addr, size) = (to_usize(addr)?, to_usize(size)?);
    if size == 0 {
        return Err(EINVAL);
    }
    let task = kernel::current!();
    let window = {
        let mm = task.mm().ok_or(EINVAL)?.mmap_read_lock();
        mm.vma_lookup(addr).is_some_and(|vma| {
            // SAFETY: a field of a VMA the mmap lock keeps alive; a held VMA's file is set
            // at mmap and never changes.
            let file = unsafe { (*vma.as_ptr()).vm_file };
            // SAFETY: the VMA holds its file (if any), so it is alive while the lock is held.
            let region = (!file.is_null()).then(|| unsafe { msharefs_file_region(file) });
            vma.start() == addr && vma.end() - addr == size && region.is_some_and(|region| !region.is_null())
        })
    };
    if !window {
        return Err(EINVAL);
    }
    // SAFETY: unmaps a range of the caller's own address space, taking its mmap lock.
    kernel::error::to_result(unsafe { bindings::vm_munmap(addr, size) })
}

/// `mshare_map(fd, offset, size, prot, flags, object_fd)`: memory for `[offset, offset +
/// size)` of the region, every granule of which must be a hole: anonymous (`object_fd`
/// -1), or the pages of the shmem file `object_fd` from its start (without
/// `MAP_ANONYMOUS`). `prot` is `PROT_READ | PROT_WRITE`, what regions hold (the region's
/// protection is `mshare_protect`'s).
pub(crate) fn map(fd: i32, offset: u64, size: u64, prot: u32, flags: u32, object_fd: i32) -> Result {
    if prot != PROT_READ | PROT_WRITE || flags & !(MAP_SHARED | MAP_ANONYMOUS) != 0 {
        return Err(EINVAL);
    }
    let region = RegionFd::writable(fd)?;
    match (object_fd, flags & MAP_ANONYMOUS != 0) {
        (-1, _) => region.region().create_mapping(offset, size),
        // The object's pages from its start.
        (object_fd, false) => region.region().create_file_mapping(offset, size, &MappedFile::get(object_fd)?, 0),
        (_, true) => Err(EINVAL),
    }
}

/// `mshare_unmap(fd, offset, size)`: takes the memory of the range away from every
/// process, leaving holes.
pub(crate) fn unmap(fd: i32, offset: u64, size: u64) -> Result {
    RegionFd::writable(fd)?.region().unmap(offset, size)
}

/// `mshare_protect(fd, offset, size, prot)`: the protection (`PROT_READ`, or with
/// `PROT_WRITE`) of every process's windows that ask for write access. A region has one
/// protection: the range must be the whole region (EINVAL otherwise). `None`: the whole
/// region, whatever its size (`/dev/mshare`'s `PROTECT`).
pub(crate) fn protect(fd: i32, range: Option<(u64, u64)>, prot: u32) -> Result {
    let region = RegionFd::writable(fd)?;
    if let Some((offset, size)) = range {
        if offset != 0 || size != region.region().size() {
            return Err(EINVAL);
        }
    }
    msharefs::set_prot(region.region(), u64::from(prot))
}

/// `mshare_advise(fd, offset, size, advice)`, for every process that maps the range:
///
/// - `MADV_DONTNEED`: each process's mappings of the range are removed (their TLBs
///   flushed); the memory and its contents stay, and each process maps it again on its
///   next access, as `madvise(MADV_DONTNEED)` does to a shared mapping of a file.
/// - `MADV_NORMAL`, `MADV_RANDOM`, `MADV_SEQUENTIAL`, `MADV_WILLNEED`: accepted, nothing
///   to do: a region's memory is resident from `mshare_map` on, with no read-ahead.
/// - anything else: EINVAL (docs/module.md says why for each).
pub(crate) fn advise(fd: i32, offset: u64, size: u64, advice: i32) -> Result {
    let region = RegionFd::writable(fd)?;
    match advice {
        MADV_DONTNEED => region.region().remove_mappings(offset, size),
        MADV_NORMAL | MADV_RANDOM | MADV_SEQUENTIAL | MADV_WILLNEED => region.region().check_in_range(offset, size),
        _ => Err(EINVAL),
    }
}

fn to_usize(value: u64) -> Result<usize> {
    usize::try_from(value).map_err(|_| EINVAL)
}
