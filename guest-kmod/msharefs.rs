// SPDX-License-Identifier: GPL-2.0

//! msharefs regions, the Rust side of `msharefs_glue.c`: a region per file of
//! /sys/fs/mshare, its size (set once, in whole granules, by `MSHAREFS_SET_SIZE` or
//! `ftruncate`), and the msharefs ioctls of the January 2025 series.

use crate::{granule_align, GRANULE_SIZE};
use core::ffi::{c_int, c_long, c_uint, c_ulong, c_void};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{
    bindings,
    error::to_result,
    fs::file,
    ioctl::{_IOR, _IOW},
    prelude::*,
    str::CString,
    uaccess::{UserPtr, UserSlice},
};

/// `struct mshare_info { __u64 start; __u64 size; }`.
const MSHARE_INFO_SIZE: usize = 16;

/// `MSHAREFS_GET_SIZE`: `_IOR('x', 0, struct mshare_info)`.
pub(crate) const MSHAREFS_GET_SIZE: u32 = _IOR::<[u64; 2]>(b'x' as u32, 0);
/// `MSHAREFS_SET_SIZE`: `_IOW('x', 1, struct mshare_info)`.
pub(crate) const MSHAREFS_SET_SIZE: u32 = _IOW::<[u64; 2]>(b'x' as u32, 1);

extern "C" {
    fn msharefs_register() -> c_int;
    fn msharefs_unregister();
    fn msharefs_inode_set_size(inode: *mut c_void, size: bindings::loff_t);
}

/// A region: for now its size; mappings and shared tables come next.
pub(crate) struct Region {
    /// Size in bytes, 0 until set.
    size: AtomicU64,
}

/// Checks a size request against the region's current size: a region's size is set once,
/// to a whole number of granules; setting the same size again is allowed.
pub(crate) fn check_new_size(current: u64, requested: u64) -> Result<u64> {
    if requested == 0 || requested % GRANULE_SIZE != 0 || granule_align(requested)? != requested {
        return Err(EINVAL);
    }
    if current != 0 && current != requested {
        return Err(EINVAL);
    }
    Ok(requested)
}

impl Region {
    fn set_size(&self, inode: *mut c_void, requested: u64) -> Result {
        let size = check_new_size(self.size.load(Ordering::Acquire), requested)?;
        match self.size.compare_exchange(0, size, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {}
            // Another caller set it meanwhile: fine only if to the same size.
            Err(current) if current == size => {}
            Err(_) => return Err(EINVAL),
        }
        // SAFETY: `inode` is the live inode of this region, passed by the VFS callback.
        unsafe { msharefs_inode_set_size(inode, size as bindings::loff_t) };
        Ok(())
    }

    fn ioctl(&self, inode: *mut c_void, cmd: u32, arg: usize) -> Result<c_long> {
        let user = UserSlice::new(UserPtr::from_addr(arg), MSHARE_INFO_SIZE);
        match cmd {
            MSHAREFS_GET_SIZE => {
                let mut info = [0u8; MSHARE_INFO_SIZE];
                info[8..].copy_from_slice(&self.size.load(Ordering::Acquire).to_ne_bytes());
                user.writer().write_slice(&info)?;
                Ok(0)
            }
            MSHAREFS_SET_SIZE => {
                let mut info = [0u8; MSHARE_INFO_SIZE];
                user.reader().read_slice(&mut info)?;
                let mut size = [0u8; 8];
                size.copy_from_slice(&info[8..]);
                self.set_size(inode, u64::from_ne_bytes(size))?;
                Ok(0)
            }
            _ => Err(ENOTTY),
        }
    }
}

/// msharefs and its mount point /sys/fs/mshare, registered for as long as this lives.
pub(crate) struct Registration;

impl Registration {
    /// Registers the filesystem.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: plain call into the C glue; undone once, in `drop`.
        to_result(unsafe { msharefs_register() })?;
        Ok(Self)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: registered in `new`.
        unsafe { msharefs_unregister() }
    }
}

#[no_mangle]
extern "C" fn mshare_region_new() -> *mut c_void {
    match KBox::new(Region { size: AtomicU64::new(0) }, GFP_KERNEL) {
        Ok(region) => KBox::into_raw(region).cast(),
        Err(_) => core::ptr::null_mut(),
    }
}

/// # Safety
///
/// `region` comes from `mshare_region_new` and is dropped once, when its inode is evicted.
#[no_mangle]
unsafe extern "C" fn mshare_region_drop(region: *mut c_void) {
    if !region.is_null() {
        // SAFETY: per the function's contract, `region` is an owned `KBox<Region>`.
        drop(unsafe { KBox::from_raw(region.cast::<Region>()) });
    }
}

/// # Safety
///
/// `region` is the live region of `inode`.
#[no_mangle]
unsafe extern "C" fn mshare_region_ioctl(region: *mut c_void, inode: *mut c_void, cmd: c_uint, arg: c_ulong) -> c_long {
    // SAFETY: per the function's contract.
    let region = unsafe { &*region.cast::<Region>() };
    match region.ioctl(inode, cmd, arg as usize) {
        Ok(ret) => ret,
        Err(e) => e.to_errno() as c_long,
    }
}

/// ftruncate: sets the size like `MSHAREFS_SET_SIZE`.
///
/// # Safety
///
/// `region` is the live region of `inode`.
#[no_mangle]
unsafe extern "C" fn mshare_region_truncate(region: *mut c_void, inode: *mut c_void, size: bindings::loff_t) -> c_int {
    // SAFETY: per the function's contract.
    let region = unsafe { &*region.cast::<Region>() };
    let Ok(size) = u64::try_from(size) else { return EINVAL.to_errno() };
    match region.set_size(inode, size) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// `mshare_info`: the alignment and size granule of regions, in bytes.
///
/// # Safety
///
/// `pos` is the file position the VFS passed.
#[no_mangle]
unsafe extern "C" fn mshare_info_read(buf: *mut c_void, len: usize, pos: *mut bindings::loff_t) -> isize {
    let Ok(text) = CString::try_from_fmt(fmt!("{}\n", GRANULE_SIZE)) else { return ENOMEM.to_errno() as isize };
    let mut writer = UserSlice::new(UserPtr::from_ptr(buf), len).writer();
    // SAFETY: `pos` is valid for the duration of the read callback.
    let offset: &mut file::Offset = unsafe { &mut *pos };
    match writer.write_slice_file(text.to_bytes(), offset) {
        Ok(written) => written as isize,
        Err(e) => e.to_errno() as isize,
    }
}

#[kunit_tests(mshare_region_size)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_whole_granules_set_once() {
        assert_eq!(check_new_size(0, GRANULE_SIZE), Ok(GRANULE_SIZE));
        assert_eq!(check_new_size(0, 1 << 30), Ok(1 << 30));
        assert_eq!(check_new_size(4 << 20, 4 << 20), Ok(4 << 20));
    }

    #[test]
    fn bad_sizes_are_einval() {
        assert_eq!(check_new_size(0, 0), Err(EINVAL));
        assert_eq!(check_new_size(0, GRANULE_SIZE + 4096), Err(EINVAL));
        assert_eq!(check_new_size(0, u64::MAX), Err(EINVAL));
        assert_eq!(check_new_size(4 << 20, 8 << 20), Err(EINVAL));
    }
}
