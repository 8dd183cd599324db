// SPDX-License-Identifier: GPL-2.0

//! Shared PTE tables (mode B): one table per granule of a region that has memory, filled
//! once when it is made, linked by the core into every process that maps the granule
//! (`vm_operations_struct::shared_pgtable`, from the core-mm patch) and unlinked, never
//! zapped, when a process unmaps it. A fault on a granule is therefore taken once per
//! window by each process, to link all its tables, and never per page.
//!
//! The tables of a region live as long as the region: freeing one while a fault may be
//! about to link it would take a lock every fault path would have to share.

use crate::GRANULE_PAGES;
use crate::stats;
use core::ffi::{c_uint, c_ulong, c_void};
use kernel::prelude::*;

extern "C" {
    fn mshare_kernel_shares_tables() -> bool;
    fn mshare_table_alloc() -> *mut c_void;
    fn mshare_table_free(table: *mut c_void);
    fn mshare_table_grace_period();
    fn mshare_table_map(table: *mut c_void, pfn: c_ulong, writable: bool);
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
}

// SAFETY: the tables are page-table pages owned by this set; they are changed only under
// their own page-table lock (in `mshare_table_map`) and freed once, in `drop`.
unsafe impl Send for Tables {}

impl Tables {
    /// No tables for a region of `granules` granules.
    pub(crate) fn new(granules: usize) -> Result<Self> {
        Ok(Self { tables: KVVec::from_elem(core::ptr::null_mut(), granules, GFP_KERNEL)? })
    }

    /// An empty set, for a region with no size yet.
    pub(crate) fn empty() -> Self {
        Self { tables: KVVec::new() }
    }

    /// The table of granule `index`, made and pointed at `first_pfn` if it has none yet.
    pub(crate) fn get_or_make(&mut self, index: usize, first_pfn: usize, writable: bool) -> Result<*mut c_void> {
        let slot = self.tables.get_mut(index).ok_or(EINVAL)?;
        if slot.is_null() {
            // SAFETY: plain allocation call into the core.
            let table = unsafe { mshare_table_alloc() };
            if table.is_null() {
                return Err(ENOMEM);
            }
            // SAFETY: a fresh table, not linked anywhere yet.
            unsafe { mshare_table_map(table, first_pfn as c_ulong, writable) };
            *slot = table;
            stats::table_made();
        }
        Ok(*slot)
    }

    /// Points granule `index`'s table, if it has one, at `first_pfn` (0: maps nothing).
    /// Taking access away is only complete once every sharer's TLB is flushed.
    pub(crate) fn map(&self, index: usize, first_pfn: usize, writable: bool) {
        if let Some(&table) = self.tables.get(index).filter(|table| !table.is_null()) {
            // SAFETY: a table of this set; the call takes the table's lock.
            unsafe { mshare_table_map(table, first_pfn as c_ulong, writable) };
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
