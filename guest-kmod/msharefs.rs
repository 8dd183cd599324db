// SPDX-License-Identifier: GPL-2.0

//! msharefs regions, the Rust side of `msharefs_glue.c`: a region per file of
//! /sys/fs/mshare, its size (set once, in whole granules, by `MSHAREFS_SET_SIZE` or
//! `ftruncate`), its backing memory (one zeroed contiguous chunk per granule, allocated
//! when the size is set), the msharefs ioctls of the January 2025 series, and the checks
//! and page lookups behind `mmap` of a region.

use crate::{granule_align, GRANULE_SIZE};
use core::ffi::{c_int, c_long, c_uint, c_ulong, c_void};
use kernel::{
    bindings,
    error::to_result,
    fs::file,
    ioctl::{_IOR, _IOW},
    prelude::*,
    str::CString,
    sync::SetOnce,
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
    fn msharefs_alloc_chunk(order: c_uint) -> usize;
    fn msharefs_free_chunk(pfn: usize, order: c_uint);
}

/// Pages per granule, and the allocation order of one granule's chunk.
const PAGE_SHIFT: u32 = 12;
const GRANULE_PAGES: usize = 1 << (crate::GRANULE_SHIFT - PAGE_SHIFT);
const CHUNK_ORDER: c_uint = crate::GRANULE_SHIFT - PAGE_SHIFT;

/// A region's memory: one chunk per granule, freed with the region.
struct Backing {
    size: u64,
    /// First page frame of each granule's chunk.
    pfns: KVec<usize>,
}

impl Backing {
    /// Allocates `size` bytes (whole granules) of zeroed, per-granule contiguous memory.
    fn allocate(size: u64) -> Result<Self> {
        let granules = usize::try_from(size / GRANULE_SIZE).map_err(|_| EINVAL)?;
        let mut backing = Backing { size, pfns: KVec::with_capacity(granules, GFP_KERNEL)? };
        for _ in 0..granules {
            // SAFETY: plain allocation call into the C glue.
            let pfn = unsafe { msharefs_alloc_chunk(CHUNK_ORDER) };
            if pfn == 0 {
                return Err(ENOMEM);
            }
            backing.pfns.push(pfn, GFP_KERNEL)?;
        }
        Ok(backing)
    }

    /// The page frame at page `pgoff` of the region, if inside it.
    fn pfn(&self, pgoff: usize) -> Option<usize> {
        Some(self.pfns.get(pgoff / GRANULE_PAGES)? + pgoff % GRANULE_PAGES)
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        for &pfn in self.pfns.iter() {
            // SAFETY: each pfn is a chunk of this order that `allocate` got and nobody else
            // frees; no mapping outlives the region (a VMA holds the region's file).
            unsafe { msharefs_free_chunk(pfn, CHUNK_ORDER) };
        }
    }
}

/// Checks an mmap of a region of `size` bytes: shared only, the window granule aligned in
/// address and offset, and inside the region.
pub(crate) fn check_mapping(size: u64, start: u64, end: u64, offset: u64, shared: bool) -> Result {
    if !shared || size == 0 || start % GRANULE_SIZE != 0 || offset % GRANULE_SIZE != 0 || end <= start {
        return Err(EINVAL);
    }
    let last = offset.checked_add(end - start).ok_or(EINVAL)?;
    if last > size {
        return Err(EINVAL);
    }
    Ok(())
}

/// A region: its size and memory, set once; shared page tables come next.
pub(crate) struct Region {
    backing: SetOnce<Backing>,
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
    fn size(&self) -> u64 {
        self.backing.as_ref().map_or(0, |b| b.size)
    }

    fn set_size(&self, inode: *mut c_void, requested: u64) -> Result {
        let size = check_new_size(self.size(), requested)?;
        if self.backing.as_ref().is_none() && !self.backing.populate(Backing::allocate(size)?) {
            // Another caller got there first (its memory is freed with the region, ours now).
            match self.backing.as_ref() {
                Some(b) if b.size == size => {}
                Some(_) => return Err(EINVAL),
                None => return Err(EBUSY),
            }
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
                info[8..].copy_from_slice(&self.size().to_ne_bytes());
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
    match KBox::new(Region { backing: SetOnce::new() }, GFP_KERNEL) {
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

/// mmap of a region: 0 or a negative errno.
///
/// # Safety
///
/// `region` is the live region of the file being mapped.
#[no_mangle]
unsafe extern "C" fn mshare_region_mmap_check(region: *mut c_void, start: c_ulong, end: c_ulong, pgoff: c_ulong, shared: bool) -> c_int {
    // SAFETY: per the function's contract.
    let region = unsafe { &*region.cast::<Region>() };
    let offset = (pgoff as u64).checked_mul(1 << PAGE_SHIFT).unwrap_or(u64::MAX);
    match check_mapping(region.size(), start as u64, end as u64, offset, shared) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// The page frame behind page `pgoff` of a region, 0 outside it.
///
/// # Safety
///
/// `region` is the live region of the faulting mapping.
#[no_mangle]
unsafe extern "C" fn mshare_region_pfn(region: *mut c_void, pgoff: c_ulong) -> c_ulong {
    // SAFETY: per the function's contract.
    let region = unsafe { &*region.cast::<Region>() };
    region.backing.as_ref().and_then(|b| b.pfn(pgoff as usize)).unwrap_or(0) as c_ulong
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

#[kunit_tests(mshare_region)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_whole_granules_set_once() {
        assert_eq!(check_new_size(0, GRANULE_SIZE), Ok(GRANULE_SIZE));
        assert_eq!(check_new_size(0, 1 << 30), Ok(1 << 30));
        assert_eq!(check_new_size(4 << 20, 4 << 20), Ok(4 << 20));
    }

    #[test]
    fn mappings_are_shared_aligned_and_inside() {
        let g = GRANULE_SIZE;
        assert_eq!(check_mapping(4 * g, 8 * g, 12 * g, 0, true), Ok(()));
        assert_eq!(check_mapping(4 * g, 8 * g, 10 * g, 2 * g, true), Ok(()));
        // MAP_PRIVATE
        assert_eq!(check_mapping(4 * g, 8 * g, 12 * g, 0, false), Err(EINVAL));
        // unaligned address
        assert_eq!(check_mapping(4 * g, 8 * g + 4096, 12 * g, 0, true), Err(EINVAL));
        // unaligned offset
        assert_eq!(check_mapping(4 * g, 8 * g, 10 * g, 4096, true), Err(EINVAL));
        // past the end
        assert_eq!(check_mapping(4 * g, 8 * g, 13 * g, 0, true), Err(EINVAL));
        // no size yet
        assert_eq!(check_mapping(0, 8 * g, 9 * g, 0, true), Err(EINVAL));
        // overflow
        assert_eq!(check_mapping(4 * g, 8 * g, 9 * g, u64::MAX - 1, true), Err(EINVAL));
    }

    #[test]
    fn bad_sizes_are_einval() {
        assert_eq!(check_new_size(0, 0), Err(EINVAL));
        assert_eq!(check_new_size(0, GRANULE_SIZE + 4096), Err(EINVAL));
        assert_eq!(check_new_size(0, u64::MAX), Err(EINVAL));
        assert_eq!(check_new_size(4 << 20, 8 << 20), Err(EINVAL));
    }
}
