// SPDX-License-Identifier: GPL-2.0

//! An msharefs inode, as the Rust side holds it: a typed handle, never dereferenced here,
//! only handed back to the C glue (7.3 has no Rust VFS) for what the inode does for a
//! region: carry its size, and be the `address_space` whose mappings are its windows.

use core::ptr::NonNull;
use kernel::bindings;
use kernel::prelude::*;

// Typed pointers to C structs (bindgen's layouts, which improper_ctypes flags for a
// zero-length array deep inside) and to `Region` (which C never reads, only passes back):
// only the pointers cross.
#[allow(improper_ctypes)]
extern "C" {
    fn msharefs_inode_set_size(inode: *mut bindings::inode, size: bindings::loff_t);
    fn msharefs_zap(inode: *mut bindings::inode, offset: bindings::loff_t, len: bindings::loff_t);
}

/// An msharefs inode.
///
/// # Invariants
///
/// `0` is an msharefs inode that is not evicted while anything holds this handle: a
/// region's own inode (which holds the region, so outlives it) or an inode on a device
/// region's list (removed before the inode is evicted).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inode(NonNull<bindings::inode>);

// SAFETY: the handle is a pointer the C glue takes from any task; the inode's own locks
// guard what the glue does with it.
unsafe impl Send for Inode {}
// SAFETY: as above.
unsafe impl Sync for Inode {}

impl Inode {
    /// The handle of `inode`; `None` for null.
    ///
    /// # Safety
    ///
    /// `inode` is null or an msharefs inode that the caller keeps from being evicted for as
    /// long as the handle is used (the type's invariant).
    pub(crate) unsafe fn from_raw(inode: *mut bindings::inode) -> Option<Self> {
        NonNull::new(inode).map(Self)
    }

    /// The inode, for the C glue.
    pub(crate) fn as_raw(self) -> *mut bindings::inode {
        self.0.as_ptr()
    }

    /// Sets the size `stat` shows.
    pub(crate) fn set_size(self, size: u64) {
        // SAFETY: a live msharefs inode (type invariant).
        unsafe { msharefs_inode_set_size(self.0.as_ptr(), size as bindings::loff_t) };
    }

    /// Removes `[offset, offset + len)` of the region from every process that maps it
    /// through this inode: their entries, and their links to shared tables (whose TLB
    /// entries are flushed).
    pub(crate) fn zap(self, offset: u64, len: u64) -> Result {
        let (offset, len) = (i64::try_from(offset).map_err(|_| EINVAL)?, i64::try_from(len).map_err(|_| EINVAL)?);
        // SAFETY: a live msharefs inode (type invariant).
        unsafe { msharefs_zap(self.0.as_ptr(), offset, len) };
        Ok(())
    }
}
