// SPDX-License-Identifier: GPL-2.0

//! Shared PTE tables (mode B): one table per granule of a region that has memory, filled
//! once when it is made, linked by the core into every process that maps the granule
//! (`vm_operations_struct::shared_pgtable`, from the core-mm patch) and unlinked, never
//! zapped, when a process unmaps it. A fault on a granule is therefore taken once per
//! window by each process, to link all its tables, and never per page.
//!
//! The tables of a region live as long as the region: freeing one while a fault may be
//! about to link it would take a lock every fault path would have to share.

use crate::granule::Frames;
use crate::GRANULE_PAGES;
use crate::stats;
use core::ffi::{c_uint, c_ulong, c_void};
use kernel::prelude::*;

extern "C" {
    fn mshare_kernel_shares_tables() -> bool;
    fn mshare_table_alloc() -> *mut c_void;
    fn mshare_table_free(table: *mut c_void);
    fn mshare_table_grace_period();
    fn mshare_table_map(table: *mut c_void, first: c_ulong, each: *const usize, writable: bool, special: bool);
    fn mshare_table_entry(table: *mut c_void, index: c_uint, writable: *mut bool) -> c_ulong;
}

/// Whether the running kernel can share tables (it has `CONFIG_SHARED_PGTABLE`).
pub(crate) fn kernel_shares_tables() -> bool {
    // SAFETY: reads a compile-time constant of the kernel.
    unsafe { mshare_kernel_shares_tables() }
}

/// The shared tables of one region, by granule.
pub(crate) struct Tables {
    /// The table of each granule (a `struct ptdesc`), null while it has none.
    tables: KVVec<*mut c_void>,
    /// The memory has no struct pages (a device's): special entries, which GUP refuses.
    special: bool,
}

// SAFETY: the tables are page-table pages owned by this set; they are changed only under
// their own page-table lock (in `mshare_table_map`) and freed once, in `drop`.
unsafe impl Send for Tables {}

impl Tables {
    /// No tables for a region of `granules` granules; `special` for memory without
    /// struct pages.
    pub(crate) fn new(granules: usize, special: bool) -> Result<Self> {
        Ok(Self { tables: KVVec::from_elem(core::ptr::null_mut(), granules, GFP_KERNEL)?, special })
    }

    /// An empty set, for a region of folios with no size yet.
    pub(crate) fn empty() -> Self {
        Self { tables: KVVec::new(), special: false }
    }

    /// The table of granule `index`, made and pointed at `frames` if it has none yet.
    pub(crate) fn get_or_make(&mut self, index: usize, frames: Frames<'_>, writable: bool) -> Result<*mut c_void> {
        let special = self.special;
        let slot = self.tables.get_mut(index).ok_or(EINVAL)?;
        if slot.is_null() {
            // SAFETY: plain allocation call into the core.
            let table = unsafe { mshare_table_alloc() };
            if table.is_null() {
                return Err(ENOMEM);
            }
            // SAFETY: a fresh table, not linked anywhere yet.
            unsafe { map_table(table, Some(frames), writable, special) };
            *slot = table;
            stats::table_made();
        }
        Ok(*slot)
    }

    /// Points granule `index`'s table, if it has one, at `frames` (`None`: maps nothing).
    /// Taking access away is only complete once every sharer's TLB is flushed.
    pub(crate) fn map(&self, index: usize, frames: Option<Frames<'_>>, writable: bool) {
        if let Some(&table) = self.tables.get(index).filter(|table| !table.is_null()) {
            // SAFETY: a table of this set; the call takes the table's lock.
            unsafe { map_table(table, frames, writable, self.special) };
        }
    }

    /// How many tables exist.
    pub(crate) fn count(&self) -> usize {
        self.tables.iter().filter(|table| !table.is_null()).count()
    }

    /// Entry `page` of granule `index`'s table: its page frame and whether it is writable;
    /// `None` without a table or an entry.
    pub(crate) fn entry(&self, index: usize, page: usize) -> Option<(usize, bool)> {
        let &table = self.tables.get(index).filter(|table| !table.is_null())?;
        if page >= GRANULE_PAGES {
            return None;
        }
        let mut writable = false;
        // SAFETY: a table of this set; `page` is inside it.
        let pfn = unsafe { mshare_table_entry(table, page as c_uint, &mut writable) };
        (pfn != 0).then_some((pfn as usize, writable))
    }
}

/// Fills `table`'s entries from `frames` (or clears them).
///
/// # Safety
///
/// `table` is a live table from `mshare_table_alloc`.
unsafe fn map_table(table: *mut c_void, frames: Option<Frames<'_>>, writable: bool, special: bool) {
    let (first, each) = match frames {
        None => (0, core::ptr::null()),
        Some(Frames::Contiguous(first)) => (first, core::ptr::null()),
        // A granule's frames: `GRANULE_PAGES` of them, one per entry.
        Some(Frames::Each(each)) if each.len() == GRANULE_PAGES => (0, each.as_ptr()),
        Some(Frames::Each(_)) => (0, core::ptr::null()),
    };
    // SAFETY: per the function's contract; `each` is null or has an entry per PTE.
    unsafe { mshare_table_map(table, first as c_ulong, each, writable, special) };
}

impl Drop for Tables {
    fn drop(&mut self) {
        if self.count() == 0 {
            return;
        }
        // No process links the tables any more (the region outlives its windows), but a
        // lockless walker (GUP-fast) may still be reading one: one grace period for all.
        // SAFETY: plain call; may sleep, as dropping a region may.
        unsafe { mshare_table_grace_period() };
        for table in self.tables.iter_mut().filter(|table| !table.is_null()) {
            // SAFETY: made by `get_or_make`, unlinked everywhere, freed once.
            unsafe { mshare_table_free(core::mem::replace(table, core::ptr::null_mut())) };
            stats::table_freed();
        }
    }
}
