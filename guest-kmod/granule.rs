// SPDX-License-Identifier: GPL-2.0

//! What backs one granule (2 MiB) of a region: nothing (a hole), a physically contiguous
//! chunk (a 2 MiB folio of this module, or 2 MiB of a device's memory), or the pinned
//! pages of a file ([`FilePages`]).
//!
//! A chunk of this module is a folio whose mapping and index are the region file's, so
//! GUP and futexes take its pages as they take a shmem file's; it is on no LRU list and in
//! no page-cache xarray, and the region holds its reference until the chunk is dropped.

use crate::file_pages::FilePages;
use crate::inode::Inode;
use crate::{stats, GRANULE_PAGES, GRANULE_SHIFT};
use core::ffi::{c_long, c_uint, c_void};
use kernel::bindings;
use kernel::prelude::*;

// Typed pointers to C structs (bindgen's layouts, which improper_ctypes flags for a
// zero-length array deep inside) and to `Region` (which C never reads, only passes back):
// only the pointers cross.
#[allow(improper_ctypes)]
extern "C" {
    fn msharefs_alloc_chunk(order: c_uint, inode: *mut bindings::inode, index: usize) -> c_long;
    fn msharefs_free_chunk(pfn: usize);
    fn msharefs_page_address(pfn: usize) -> *mut c_void;
    fn msharefs_folio_settle(pfn: usize);
    fn msharefs_page_lock(pfn: usize);
    #[cfg(CONFIG_KUNIT)]
    fn msharefs_page_unlock(pfn: usize);
}

/// Unlocks what [`lock_page`] locked (KUnit stands in for the core).
///
/// # Safety
///
/// The folio of `pfn` is locked by the caller, and alive.
#[cfg(CONFIG_KUNIT)]
pub(crate) unsafe fn unlock_page(pfn: usize) {
    // SAFETY: per the function's contract.
    unsafe { msharefs_page_unlock(pfn) }
}

/// Locks the folio of page frame `pfn`, as a fault that found it does before it lets go of
/// the memory lock ([`Memory::settle`] waits for it).
///
/// # Safety
///
/// The caller holds a reference on the page.
pub(crate) unsafe fn lock_page(pfn: usize) {
    // SAFETY: per the function's contract, the page and its folio are alive.
    unsafe { msharefs_page_lock(pfn) }
}

/// The page order of a granule's chunk of memory.
const CHUNK_ORDER: c_uint = GRANULE_SHIFT - kernel::page::PAGE_SHIFT as u32;

const PAGE_SIZE: usize = kernel::page::PAGE_SIZE;

/// The page frames of a granule, as its shared table maps them.
#[derive(Clone, Copy)]
pub(crate) enum Frames<'a> {
    /// `GRANULE_PAGES` frames from this one on.
    Contiguous(usize),
    /// Each page's frame.
    Each(&'a [usize]),
}

/// The memory of one granule. Dropping it frees what the region owned.
#[derive(Default)]
pub(crate) enum Memory {
    /// No memory: an access is SIGSEGV.
    #[default]
    Hole,
    /// `GRANULE_PAGES` page frames from `first` on: this module's folio when `owned`, else
    /// a device's memory (never freed here).
    Chunk { first: usize, owned: bool },
    /// A file's pages.
    File(KBox<FilePages>),
}

impl Memory {
    /// A zeroed chunk for the granule at page offset `index` of the region of `inode`
    /// (none in KUnit, where there is no file): ENOMEM when the memory cgroup or the
    /// system has none, ENOSPC past the mount's `size=`.
    pub(crate) fn allocate(inode: Option<Inode>, index: usize) -> Result<Self> {
        let inode = inode.map_or(core::ptr::null_mut(), Inode::as_raw);
        // SAFETY: `inode` outlives the chunk (its region frees it first) or is null.
        let first = unsafe { msharefs_alloc_chunk(CHUNK_ORDER, inode, index) };
        let first = usize::try_from(first).map_err(|_| Error::from_errno(first as i32))?;
        stats::chunk_allocated();
        Ok(Self::Chunk { first, owned: true })
    }

    /// A device's memory from page frame `first` on.
    pub(crate) fn device(first: usize) -> Self {
        Self::Chunk { first, owned: false }
    }

    pub(crate) fn is_hole(&self) -> bool {
        matches!(self, Self::Hole)
    }

    /// Whether the granule is one physically contiguous 2 MiB chunk (a PMD leaf maps it).
    pub(crate) fn is_chunk(&self) -> bool {
        matches!(self, Self::Chunk { .. })
    }

    pub(crate) fn is_file(&self) -> bool {
        matches!(self, Self::File(_))
    }

    /// The page frame of page `page` (< `GRANULE_PAGES`) of the granule.
    pub(crate) fn frame(&self, page: usize) -> Option<usize> {
        match self {
            Self::Hole => None,
            Self::Chunk { first, .. } => (page < GRANULE_PAGES).then_some(first + page),
            Self::File(pages) => pages.frame(page),
        }
    }

    /// Waits for every fault that holds one of the granule's folios locked (one that
    /// found the memory and is mapping it). Device memory has no folios.
    pub(crate) fn settle(&mut self) {
        match self {
            // SAFETY: this module's folio, alive while the granule is.
            Self::Chunk { first, owned: true } => unsafe { msharefs_folio_settle(*first) },
            Self::File(pages) => pages.settle(),
            _ => {}
        }
    }

    /// The frames a shared table maps; `None` for a hole.
    pub(crate) fn frames(&self) -> Option<Frames<'_>> {
        match self {
            Self::Hole => None,
            Self::Chunk { first, .. } => Some(Frames::Contiguous(*first)),
            Self::File(pages) => Some(Frames::Each(pages.frames())),
        }
    }

    /// The kernel address of the granule's byte `at` and how many bytes from there are
    /// contiguous in the kernel's view: through the direct map for pages of this module or
    /// a file, `device_base` (the granule's start in the device's kernel mapping; `None`
    /// for none) for a device. `None` for a hole.
    pub(crate) fn address(&self, at: usize, device_base: Option<usize>) -> Option<(*mut u8, usize)> {
        let granule = GRANULE_PAGES * PAGE_SIZE;
        match self {
            Self::Hole => None,
            Self::Chunk { owned: false, .. } => device_base.map(|base| ((base + at) as *mut u8, granule - at)),
            Self::Chunk { first, owned: true } => {
                // SAFETY: a chunk of this module, alive while the region holds it.
                let base = unsafe { msharefs_page_address(*first) }.cast::<u8>();
                Some((base.wrapping_add(at), granule - at))
            }
            Self::File(pages) => {
                let frame = pages.frame(at / PAGE_SIZE)?;
                // SAFETY: a pinned page of the file, alive while the region holds it.
                let base = unsafe { msharefs_page_address(frame) }.cast::<u8>();
                Some((base.wrapping_add(at % PAGE_SIZE), PAGE_SIZE - at % PAGE_SIZE))
            }
        }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        if let Self::Chunk { first, owned: true } = *self {
            // SAFETY: a chunk from `msharefs_alloc_chunk`, freed once: it leaves the region
            // by being dropped, after every mapping of it is gone.
            unsafe { msharefs_free_chunk(first) };
            stats::chunk_freed();
        }
    }
}

#[kunit_tests(mshare_memory)]
mod tests {
    use super::*;

    /// A device's chunk gives its frames in order and is read through the device's kernel
    /// mapping; a hole gives nothing. (Chunks and files need a running allocator and a
    /// file: the boot tests cover them.)
    #[test]
    fn a_granules_frames_and_kernel_view_follow_its_memory() {
        let device = Memory::device(0x40000);
        assert_eq!(device.frame(0), Some(0x40000));
        assert_eq!(device.frame(GRANULE_PAGES - 1), Some(0x40000 + GRANULE_PAGES - 1));
        assert_eq!(device.frame(GRANULE_PAGES), None);
        assert!(matches!(device.frames(), Some(Frames::Contiguous(0x40000))));
        let granule = GRANULE_PAGES * PAGE_SIZE;
        assert_eq!(device.address(4096, Some(0x1000_0000)), Some((0x1000_1000 as *mut u8, granule - 4096)));
        assert_eq!(device.address(0, None), None);
        assert!(!device.is_hole() && !device.is_file());
        let hole = Memory::Hole;
        assert!(hole.is_hole() && hole.frame(0).is_none() && hole.frames().is_none());
        assert_eq!(hole.address(0, Some(0x1000_0000)), None);
    }
}
