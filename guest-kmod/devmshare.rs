// SPDX-License-Identifier: GPL-2.0

//! `/dev/mshare`: the calls of the 2026 syscall proposal (`mshare_create`, `_attach`,
//! `_detach`, `_map`, `_protect`; LSF/MM+BPF 2026), as ioctls until they are syscalls.
//!
//! `MSHARE_CREATE` returns the file descriptor of a new region with no name; its size is
//! set with `ftruncate`, other processes get it by descriptor passing. Every other call
//! takes the descriptor of a region, named (an msharefs file) or not, so both interfaces
//! reach the same regions. Unlike the proposal, a region lives while any descriptor or
//! mapping of it does, not only while its creator does.

use crate::file_pages::MappedFile;
use crate::msharefs::{self, MAP_ANONYMOUS, MAP_SHARED, PROT_READ, PROT_WRITE};
use crate::uapi::abi::{
    MSHARE_ATTACH, MSHARE_ATTACH_FIXED as ATTACH_FIXED, MSHARE_ATTACH_READ_ONLY as ATTACH_READ_ONLY, MSHARE_CREATE,
    MSHARE_DETACH, MSHARE_MAP, MSHARE_PROTECT, MSHARE_UNMAP,
};
use crate::uapi::{read_arg, write_arg, MshareAttach, MshareDetach, MshareMap, MshareProtect, MshareRange};
use crate::region::Region;
use core::ffi::c_void;
use kernel::{
    bindings,
    fs::{file, File, LocalFile},
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
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

/// A region reached through a file descriptor of the caller, held for the call.
struct RegionFd {
    file: ARef<LocalFile>,
    region: *const Region,
}

impl RegionFd {
    /// EBADF for a descriptor that is not open, EINVAL for a file that is not a region.
    fn get(fd: u32) -> Result<Self> {
        let file = LocalFile::fget(fd)?;
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
    fn check_writable(&self) -> Result {
        if self.file.flags() & file::flags::O_ACCMODE == file::flags::O_RDONLY {
            return Err(EBADF);
        }
        Ok(())
    }
}

fn create(flags: usize) -> Result<isize> {
    if flags & !(file::flags::O_CLOEXEC as usize) != 0 {
        return Err(EINVAL);
    }
    let reservation = file::FileDescriptorReservation::get_unused_fd_flags(flags as u32)?;
    // SAFETY: plain call into the glue; it returns a file with a reference we own, or an
    // ERR_PTR.
    let raw = kernel::error::from_err_ptr(unsafe { msharefs_new_anonymous_file() })?;
    let raw = core::ptr::NonNull::new(raw.cast::<File>()).ok_or(ENOMEM)?;
    let fd = reservation.reserved_fd();
    // SAFETY: `raw` is a live file whose reference is handed to the `ARef`.
    let file = unsafe { ARef::from_raw(raw) };
    reservation.fd_install(file);
    Ok(fd as isize)
}

/// `struct mshare_attach { __s32 fd; __u32 flags; __u64 offset; __u64 size; __u64 addr; }`:
/// maps `[offset, offset + size)` of the region into the caller, returning the address.
fn attach(arg: usize) -> Result<isize> {
    let MshareAttach { fd, flags, offset, size, addr } = read_arg(arg)?;
    if flags & !(ATTACH_READ_ONLY | ATTACH_FIXED) != 0 || (flags & ATTACH_FIXED != 0 && addr == 0) {
        return Err(EINVAL);
    }
    let region = RegionFd::get(fd as u32)?;
    let prot = if flags & ATTACH_READ_ONLY != 0 { PROT_READ } else { PROT_READ | PROT_WRITE };
    let map_flags = MAP_SHARED | if flags & ATTACH_FIXED != 0 { MAP_FIXED_NOREPLACE } else { 0 };
    let hint = if flags & ATTACH_FIXED != 0 { addr } else { 0 };
    // The mmap path checks the rest: the file's access mode, the window's size, alignment
    // and place in the region.
    // SAFETY: maps a held file into the calling process, as mmap(2) would.
    let mapped = unsafe {
        bindings::vm_mmap(
            region.file.as_ptr(),
            hint as usize,
            size as usize,
            prot as usize,
            map_flags as usize,
            offset as usize,
        )
    };
    // An address, or a negative errno (IS_ERR_VALUE).
    if mapped as isize as i64 >= -4095 && (mapped as isize) < 0 {
        return Err(Error::from_errno(mapped as isize as i32));
    }
    let result = MshareAttach { fd, flags, offset, size, addr: mapped as u64 };
    if let Err(e) = write_arg(arg, &result) {
        // SAFETY: undoing the mapping made above, in the same process.
        unsafe { bindings::vm_munmap(mapped, size as usize) };
        return Err(e);
    }
    Ok(0)
}

/// `struct mshare_detach { __u64 addr; __u64 size; }`: a whole window, nothing else.
fn detach(arg: usize) -> Result<isize> {
    let MshareDetach { addr, size } = read_arg(arg)?;
    let (addr, size) = (usize::try_from(addr).map_err(|_| EINVAL)?, usize::try_from(size).map_err(|_| EINVAL)?);
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
    kernel::error::to_result(unsafe { bindings::vm_munmap(addr, size) })?;
    Ok(0)
}

/// `struct mshare_map { __s32 fd; __u32 prot; __u64 offset; __u64 size; __s32 object_fd;
/// __u32 flags; }`: gives `[offset, offset + size)` of the region memory: anonymous
/// (`object_fd` -1), or the pages of the shmem file `object_fd` from its start (without
/// `MAP_ANONYMOUS`).
fn map(arg: usize) -> Result<isize> {
    let MshareMap { fd, prot, offset, size, object_fd, flags } = read_arg(arg)?;
    if prot != PROT_READ | PROT_WRITE || flags & !(MAP_SHARED | MAP_ANONYMOUS) != 0 {
        return Err(EINVAL);
    }
    let region = RegionFd::get(fd as u32)?;
    region.check_writable()?;
    match (object_fd, flags & MAP_ANONYMOUS != 0) {
        (-1, _) => region.region().create_mapping(offset, size)?,
        // The object's pages from its start.
        (object_fd, false) => region.region().create_file_mapping(offset, size, &MappedFile::get(object_fd)?, 0)?,
        (_, true) => return Err(EINVAL),
    }
    Ok(0)
}

/// `struct mshare_range { __s32 fd; __u32 pad; __u64 offset; __u64 size; }`.
fn unmap(arg: usize) -> Result<isize> {
    let MshareRange { fd, pad, offset, size } = read_arg(arg)?;
    if pad != 0 {
        return Err(EINVAL);
    }
    let region = RegionFd::get(fd as u32)?;
    region.check_writable()?;
    region.region().unmap(offset, size)?;
    Ok(0)
}

/// `struct mshare_protect { __s32 fd; __u32 prot; }`.
fn protect(arg: usize) -> Result<isize> {
    let MshareProtect { fd, prot } = read_arg(arg)?;
    let region = RegionFd::get(fd as u32)?;
    region.check_writable()?;
    msharefs::set_prot(region.region(), u64::from(prot))?;
    Ok(0)
}

/// The `/dev/mshare` device.
pub(crate) struct DevMshare;

impl DevMshare {
    /// Registers `/dev/mshare`.
    pub(crate) fn register() -> impl PinInit<MiscDeviceRegistration<Self>, Error> {
        MiscDeviceRegistration::register(MiscDeviceOptions { name: c"mshare" })
    }
}

#[vtable]
impl MiscDevice for DevMshare {
    type Ptr = ();

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<()> {
        Ok(())
    }

    fn ioctl(_device: (), _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            MSHARE_CREATE => create(arg),
            MSHARE_ATTACH => attach(arg),
            MSHARE_DETACH => detach(arg),
            MSHARE_MAP => map(arg),
            MSHARE_UNMAP => unmap(arg),
            MSHARE_PROTECT => protect(arg),
            _ => Err(ENOTTY),
        }
    }
}
