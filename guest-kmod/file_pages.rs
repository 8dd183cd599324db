// SPDX-License-Identifier: GPL-2.0

//! A file inside a region: `CREATE_MAPPING` / `MSHARE_MAP` with the descriptor of a shmem
//! file or memfd gives part of a region the file's pages, which the region's windows then
//! show (writes reach the file) through the same shared tables as anonymous memory.
//!
//! Each granule of such a mapping pins its 512 pages (`memfd_pin_folios`, the long-term
//! FOLL_PIN that udmabuf takes): reclaim, migration and compaction leave pinned folios
//! where they are, so the entries of the shared tables stay valid without the core
//! knowing about them. The region holds the file too, with a writable-mapping count as a
//! shared writable `mmap` does: the file lives while the region shows it (a closed memfd
//! keeps its memory), futexes key its pages by the file as for any mapping of it, and
//! `F_SEAL_WRITE` is refused meanwhile. A truncate or hole punch of the file does not reach
//! the region: it keeps the pages it pinned until `UNMAP`.

use crate::GRANULE_PAGES;
use core::ffi::{c_int, c_long, c_uint};
use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::Arc;

// Typed pointers to C structs (bindgen's layouts, which improper_ctypes flags for a
// zero-length array deep inside) and to `Region` (which C never reads, only passes back):
// only the pointers cross.
#[allow(improper_ctypes)]
extern "C" {
    fn msharefs_file_get(fd: c_int, file: *mut *mut bindings::file) -> c_int;
    fn msharefs_file_put(file: *mut bindings::file);
    fn msharefs_file_pin(file: *mut bindings::file, offset: i64, frames: *mut usize, folios: *mut *mut bindings::folio) -> c_long;
    fn msharefs_file_unpin(folios: *mut *mut bindings::folio, nr: c_uint);
    fn msharefs_folios_settle(folios: *mut *mut bindings::folio, nr: c_uint);
}

/// A shmem file taken by a mapping: a reference and a writable-mapping count.
///
/// # Invariants
///
/// `0` is a `struct file *` from `msharefs_file_get`, given back once, in `drop`.
pub(crate) struct MappedFile(*mut bindings::file);

// SAFETY: the file reference may be dropped from any thread; nothing else is done with it
// but passing it to the C glue, which takes the file's own locks.
unsafe impl Send for MappedFile {}
// SAFETY: as above; shared use only reads the pointer.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// The shmem file open at `fd` for writing: EBADF for no file, EOPNOTSUPP for a file
    /// of another filesystem, EACCES when not open for writing, EPERM when write-sealed.
    pub(crate) fn get(fd: i32) -> Result<Arc<Self>> {
        let mut file = core::ptr::null_mut();
        // SAFETY: `file` is written only on success.
        kernel::error::to_result(unsafe { msharefs_file_get(fd, &mut file) })?;
        // On failure, the `MappedFile` dropped gives the file back.
        Ok(Arc::new(Self(file), GFP_KERNEL)?)
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: per the type's invariants.
        unsafe { msharefs_file_put(self.0) };
    }
}

/// The pinned pages of one granule of a file.
pub(crate) struct FilePages {
    /// Held, not read: the file lives as long as the granule shows its pages.
    _file: Arc<MappedFile>,
    /// The page frame of each of the granule's pages.
    frames: KVVec<usize>,
    /// The folios pinned (each once, however many of its pages the granule uses).
    folios: KVVec<*mut bindings::folio>,
}

// SAFETY: the pinned folios are released once, in `drop`, from whichever thread drops
// the granule; the frames are plain numbers.
unsafe impl Send for FilePages {}

// SAFETY: a shared reference only reads the frame numbers; what touches the folios
// (`settle`, `drop`) takes `&mut self`.
unsafe impl Sync for FilePages {}

impl FilePages {
    /// Pins the granule of `file` at byte `offset` (granule aligned): its pages are
    /// allocated if the file has none there yet. EINVAL past the file's end.
    pub(crate) fn pin(file: &Arc<MappedFile>, offset: u64) -> Result<KBox<Self>> {
        let mut frames = KVVec::from_elem(0usize, GRANULE_PAGES, GFP_KERNEL_ACCOUNT)?;
        let mut folios = KVVec::from_elem(core::ptr::null_mut(), GRANULE_PAGES, GFP_KERNEL_ACCOUNT)?;
        let at = i64::try_from(offset).map_err(|_| EINVAL)?;
        // SAFETY: the file is held by `file`; both arrays have room for a granule's pages.
        let pinned = unsafe { msharefs_file_pin(file.0, at, frames.as_mut_ptr(), folios.as_mut_ptr()) };
        let pinned = usize::try_from(pinned).map_err(|_| Error::from_errno(pinned as c_int))?;
        folios.truncate(pinned);
        Ok(KBox::new(Self { _file: file.clone(), frames, folios }, GFP_KERNEL_ACCOUNT)?)
    }

    /// The page frame of page `page` (< `GRANULE_PAGES`) of the granule.
    pub(crate) fn frame(&self, page: usize) -> Option<usize> {
        self.frames.get(page).copied()
    }

    /// The page frames of the granule, in order.
    pub(crate) fn frames(&self) -> &[usize] {
        &self.frames
    }

    /// Waits for every fault that holds one of the granule's folios locked (one that found
    /// it and is mapping it): once per folio, however many of its pages the granule has.
    pub(crate) fn settle(&mut self) {
        // SAFETY: the folios this granule pinned, alive until `drop`.
        unsafe { msharefs_folios_settle(self.folios.as_mut_ptr(), self.folios.len() as c_uint) };
    }
}

impl Drop for FilePages {
    fn drop(&mut self) {
        // SAFETY: the folios `msharefs_file_pin` pinned, released once (the file reference
        // goes after them, with the fields).
        unsafe { msharefs_file_unpin(self.folios.as_mut_ptr(), self.folios.len() as c_uint) };
    }
}
