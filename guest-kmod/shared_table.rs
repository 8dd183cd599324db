// SPDX-License-Identifier: GPL-2.0

//! Shared PTE tables (mode B): one table per granule of a region that has memory, filled
//! once when it is made, linked by the core into every process that maps the granule
//! (`vm_operations_struct::shared_pgtable`, from the core-mm patch) and unlinked, never
//! zapped, when a process unmaps it. A fault on a granule is therefore taken once per
//! window by each process, to link all its tables, and never per page.
//!
//! One level up, a window of whole, aligned GiBs shares the region's PMD tables
//! ([`PmdTables`], `vm_operations_struct::shared_pmd_table`): one per GiB of the region,
//! linked into each process's PUD entry, whose entries are the region's too: a 2 MiB leaf
//! for a granule of physically contiguous memory (no PTE table at all), the granule's
//! shared PTE table otherwise (a file's pages), none for a hole. A process then pays no
//! page table of its own for the window and takes one fault per window.
//!
//! The tables of a region live as long as the region: freeing one while a fault may be
//! about to link it would take a lock every fault path would have to share.

use crate::granule::Frames;
use crate::GRANULE_PAGES;
use crate::stats;
use core::ffi::{c_int, c_uint, c_ulong};
use kernel::bindings;
use kernel::prelude::*;

// Typed pointers to C structs (bindgen's layouts, which improper_ctypes flags for a
// zero-length array deep inside): only the pointers cross.
#[allow(improper_ctypes)]
extern "C" {
    fn mshare_kernel_shares_tables() -> bool;
    fn mshare_table_alloc() -> *mut bindings::ptdesc;
    fn mshare_table_free(table: *mut bindings::ptdesc);
    fn mshare_table_map(table: *mut bindings::ptdesc, first: c_ulong, each: *const usize, writable: bool, special: bool);
    fn mshare_table_entry(table: *mut bindings::ptdesc, index: c_uint, writable: *mut bool) -> c_ulong;
    fn mshare_pmd_table_alloc() -> *mut bindings::ptdesc;
    fn mshare_pmd_table_set(
        table: *mut bindings::ptdesc,
        index: c_uint,
        leaf: c_ulong,
        pte_table: *mut bindings::ptdesc,
        writable: bool,
        special: bool,
    );
    fn mshare_pmd_table_entry(table: *mut bindings::ptdesc, index: c_uint, pfn: *mut c_ulong, writable: *mut bool) -> c_int;
}

/// Granules per PMD table: the entries of one (512 x 2 MiB = 1 GiB on x86-64).
pub(crate) const PMD_TABLE_GRANULES: usize = 512;

/// The reach of one PMD table in bytes: windows of whole, aligned multiples share them.
pub(crate) const PMD_TABLE_REACH: u64 = PMD_TABLE_GRANULES as u64 * crate::GRANULE_SIZE;

/// Whether the running kernel can share tables (it has `CONFIG_SHARED_PGTABLE`).
pub(crate) fn kernel_shares_tables() -> bool {
    // SAFETY: reads a compile-time constant of the kernel.
    unsafe { mshare_kernel_shares_tables() }
}

/// Which level a set of shared tables is at (for the statistics).
#[derive(Clone, Copy)]
enum Level {
    Pte,
    Pmd,
}

/// A region's page-table pages of one level, by index (granule or GiB): each made once,
/// all freed with the set.
///
/// # Invariants
///
/// Each non-null entry is a table this set made, linked by processes only while the region
/// lives, and freed once, in `drop`, after every process unlinked it.
struct TablePages {
    tables: KVVec<*mut bindings::ptdesc>,
    level: Level,
}

// SAFETY: the tables are page-table pages owned by this set; they are changed only under
// their own page-table lock (in the glue's `mshare_table_map` and `mshare_pmd_table_set`)
// and freed once, in `drop`.
unsafe impl Send for TablePages {}

impl TablePages {
    fn new(count: usize, level: Level) -> Result<Self> {
        Ok(Self { tables: KVVec::from_elem(core::ptr::null_mut(), count, GFP_KERNEL_ACCOUNT)?, level })
    }

    fn empty(level: Level) -> Self {
        Self { tables: KVVec::new(), level }
    }

    /// Table `index`, if made.
    fn get(&self, index: usize) -> Option<*mut bindings::ptdesc> {
        self.tables.get(index).copied().filter(|table| !table.is_null())
    }

    /// The place of table `index` (null until made); EINVAL past the end.
    fn slot(&mut self, index: usize) -> Result<&mut *mut bindings::ptdesc> {
        self.tables.get_mut(index).ok_or(EINVAL)
    }

    fn count(&self) -> usize {
        self.tables.iter().filter(|table| !table.is_null()).count()
    }
}

impl Drop for TablePages {
    fn drop(&mut self) {
        if self.count() == 0 {
            return;
        }
        // No process links the tables any more (the region outlives its windows), but a
        // lockless walker (GUP-fast) may still be reading one: one grace period for all.
        // Sleeps, as dropping a region may.
        kernel::sync::rcu::synchronize_rcu();
        for table in self.tables.iter_mut().filter(|table| !table.is_null()) {
            // SAFETY: made by this set, unlinked everywhere (per the type's invariants),
            // freed once.
            unsafe { mshare_table_free(core::mem::replace(table, core::ptr::null_mut())) };
            match self.level {
                Level::Pte => stats::table_freed(),
                Level::Pmd => stats::pmd_table_freed(),
            }
        }
    }
}

/// The shared PTE tables of one region, by granule.
pub(crate) struct Tables {
    pages: TablePages,
    /// The memory has no struct pages (a device's): special entries, which GUP refuses.
    special: bool,
}

impl Tables {
    /// No tables for a region of `granules` granules; `special` for memory without
    /// struct pages.
    pub(crate) fn new(granules: usize, special: bool) -> Result<Self> {
        Ok(Self { pages: TablePages::new(granules, Level::Pte)?, special })
    }

    /// An empty set, for a region of folios with no size yet.
    pub(crate) fn empty() -> Self {
        Self { pages: TablePages::empty(Level::Pte), special: false }
    }

    /// The table of granule `index`, made and pointed at `frames` if it has none yet.
    pub(crate) fn get_or_make(&mut self, index: usize, frames: Frames<'_>, writable: bool) -> Result<*mut bindings::ptdesc> {
        let special = self.special;
        let slot = self.pages.slot(index)?;
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
        if let Some(table) = self.pages.get(index) {
            // SAFETY: a table of this set; the call takes the table's lock.
            unsafe { map_table(table, frames, writable, self.special) };
        }
    }

    /// How many tables exist.
    pub(crate) fn count(&self) -> usize {
        self.pages.count()
    }

    /// Entry `page` of granule `index`'s table: its page frame and whether it is writable;
    /// `None` without a table or an entry.
    pub(crate) fn entry(&self, index: usize, page: usize) -> Option<(usize, bool)> {
        let table = self.pages.get(index)?;
        if page >= GRANULE_PAGES {
            return None;
        }
        let mut writable = false;
        // SAFETY: a table of this set; `page` is inside it.
        let pfn = unsafe { mshare_table_entry(table, page as c_uint, &mut writable) };
        (pfn != 0).then_some((pfn as usize, writable))
    }
}

/// What a granule's entry in a shared PMD table points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PmdEntry {
    /// Nothing: a hole.
    None,
    /// A 2 MiB leaf over `GRANULE_PAGES` frames from this one (2 MiB aligned) on.
    Leaf(usize),
    /// The granule's shared PTE table (4 KiB leaves).
    Table(*mut bindings::ptdesc),
}

impl PmdEntry {
    /// The entry for a granule's `frames` (`None`: a hole), with `table` giving the
    /// granule's PTE table for frames a leaf cannot map (not contiguous, or not aligned).
    pub(crate) fn for_frames<'a>(
        frames: Option<Frames<'a>>,
        table: impl FnOnce(Frames<'a>) -> Result<*mut bindings::ptdesc>,
    ) -> Result<Self> {
        match frames {
            None => Ok(Self::None),
            Some(Frames::Contiguous(first)) if first % GRANULE_PAGES == 0 => Ok(Self::Leaf(first)),
            Some(frames) => table(frames).map(Self::Table),
        }
    }
}

/// The shared PMD tables of one region, by GiB, made when a whole-GiB window first
/// faults on that GiB.
pub(crate) struct PmdTables {
    pages: TablePages,
    /// The memory has no struct pages (a device's): special leaves, which GUP refuses.
    special: bool,
}

impl PmdTables {
    /// No tables for a region of `granules` granules.
    pub(crate) fn new(granules: usize, special: bool) -> Result<Self> {
        Ok(Self { pages: TablePages::new(granules.div_ceil(PMD_TABLE_GRANULES), Level::Pmd)?, special })
    }

    /// An empty set, for a region with no size yet.
    pub(crate) fn empty() -> Self {
        Self { pages: TablePages::empty(Level::Pmd), special: false }
    }

    /// The table of GiB `index`, if made.
    pub(crate) fn get(&self, index: usize) -> Option<*mut bindings::ptdesc> {
        self.pages.get(index)
    }

    /// The table of GiB `index`, made with `entry(granule)` for each of its granules (by
    /// region granule index) if it has none yet.
    pub(crate) fn get_or_make(
        &mut self,
        index: usize,
        granules: usize,
        writable: bool,
        mut entry: impl FnMut(usize) -> Result<PmdEntry>,
    ) -> Result<*mut bindings::ptdesc> {
        let special = self.special;
        let slot = self.pages.slot(index)?;
        if !slot.is_null() {
            return Ok(*slot);
        }
        // SAFETY: plain allocation call into the core.
        let table = unsafe { mshare_pmd_table_alloc() };
        if table.is_null() {
            return Err(ENOMEM);
        }
        let first = index * PMD_TABLE_GRANULES;
        for granule in first..granules.min(first + PMD_TABLE_GRANULES) {
            match entry(granule) {
                // SAFETY: a fresh table, not linked anywhere yet.
                Ok(value) => unsafe { set_entry(table, granule % PMD_TABLE_GRANULES, value, writable, special) },
                Err(e) => {
                    // SAFETY: made above and never linked: no walker can be in it.
                    unsafe { mshare_table_free(table) };
                    return Err(e);
                }
            }
        }
        *slot = table;
        stats::pmd_table_made();
        Ok(table)
    }

    /// Points region granule `granule`'s entry at `entry`, if its GiB has a table. Taking
    /// access away is only complete once every sharer's TLB is flushed.
    pub(crate) fn set(&self, granule: usize, entry: PmdEntry, writable: bool) {
        if let Some(table) = self.get(granule / PMD_TABLE_GRANULES) {
            // SAFETY: a table of this set; the call takes the table's lock.
            unsafe { set_entry(table, granule % PMD_TABLE_GRANULES, entry, writable, self.special) };
        }
    }

    /// How many tables exist.
    pub(crate) fn count(&self) -> usize {
        self.pages.count()
    }

    /// Region granule `granule`'s entry: a leaf's first frame and whether it is writable,
    /// `Table` with a null table for a PTE table; `None` without a table or an entry.
    pub(crate) fn entry(&self, granule: usize) -> Option<(PmdEntry, bool)> {
        let table = self.get(granule / PMD_TABLE_GRANULES)?;
        let (mut pfn, mut writable) = (0, false);
        // SAFETY: a table of this set; the index is inside it.
        let kind = unsafe {
            mshare_pmd_table_entry(table, (granule % PMD_TABLE_GRANULES) as c_uint, &mut pfn, &mut writable)
        };
        match kind {
            1 => Some((PmdEntry::Leaf(pfn as usize), writable)),
            2 => Some((PmdEntry::Table(core::ptr::null_mut()), false)),
            _ => None,
        }
    }
}

/// Sets entry `index` of PMD table `table`.
///
/// # Safety
///
/// `table` is a live table from `mshare_pmd_table_alloc`; a `PmdEntry::Table` is a live
/// PTE table of the same region.
unsafe fn set_entry(table: *mut bindings::ptdesc, index: usize, entry: PmdEntry, writable: bool, special: bool) {
    let (leaf, pte_table) = match entry {
        PmdEntry::None => (0, core::ptr::null_mut()),
        PmdEntry::Leaf(first) => (first as c_ulong, core::ptr::null_mut()),
        PmdEntry::Table(pte_table) => (0, pte_table),
    };
    // SAFETY: per the function's contract; `index` < PMD_TABLE_GRANULES.
    unsafe { mshare_pmd_table_set(table, index as c_uint, leaf, pte_table, writable, special) };
}

/// Fills `table`'s entries from `frames` (or clears them).
///
/// # Safety
///
/// `table` is a live table from `mshare_table_alloc`.
unsafe fn map_table(table: *mut bindings::ptdesc, frames: Option<Frames<'_>>, writable: bool, special: bool) {
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
