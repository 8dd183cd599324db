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
//! about to link it would take a lock every fault path would have to share. So a fault
//! finds its table with one atomic load ([`TablePages`]), and only the first fault on a
//! table makes it, with no lock but the region's memory lock, held shared.

use crate::granule::{Frames, Memory};
use crate::stats;
use crate::GRANULE_PAGES;
use core::ffi::{c_int, c_uint, c_ulong};
use core::ops::Range;
use core::sync::atomic::{AtomicPtr, Ordering};
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
    fn mshare_table_hold_links(table: *mut bindings::ptdesc);
    fn mshare_table_set_mapped(table: *mut bindings::ptdesc, pages: c_uint);
    fn mshare_table_sharers(table: *mut bindings::ptdesc) -> c_uint;
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
/// A fault finds a table that exists with one load and no lock: a slot goes from null to
/// its table once ([`TablePages::install`]) and stays so while the set lives. Two faults
/// that both found no table both make one; the first to install it wins and the other
/// frees its own, which nothing linked.
///
/// # Invariants
///
/// Each non-null slot is a table this set made, filled before it was installed (the
/// installing compare-exchange publishes its entries), linked by processes only while the
/// region lives, and freed once, in `drop`, after every process unlinked it.
struct TablePages {
    tables: KVVec<AtomicPtr<bindings::ptdesc>>,
    level: Level,
}

impl TablePages {
    fn new(count: usize, level: Level) -> Result<Self> {
        let mut tables = KVVec::with_capacity(count, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..count {
            tables.push(AtomicPtr::new(core::ptr::null_mut()), GFP_KERNEL_ACCOUNT)?;
        }
        Ok(Self { tables, level })
    }

    fn empty(level: Level) -> Self {
        Self { tables: KVVec::new(), level }
    }

    /// Table `index`, if made.
    fn get(&self, index: usize) -> Option<*mut bindings::ptdesc> {
        // Acquire: pairs with `install`'s release, so the table's entries are seen filled.
        let table = self.tables.get(index)?.load(Ordering::Acquire);
        (!table.is_null()).then_some(table)
    }

    /// Installs `table`, made and filled by the caller, as table `index` unless another
    /// was installed first: returns the table installed. EINVAL past the end; the caller's
    /// table is freed unless it was installed.
    ///
    /// # Safety
    ///
    /// `table` is a table of this set's level, filled and linked nowhere, which the set
    /// then owns.
    unsafe fn install(&self, index: usize, table: *mut bindings::ptdesc) -> Result<*mut bindings::ptdesc> {
        let installed = self.tables.get(index).map(|slot| {
            slot.compare_exchange(core::ptr::null_mut(), table, Ordering::AcqRel, Ordering::Acquire)
        });
        match installed {
            Some(Ok(_)) => {
                match self.level {
                    Level::Pte => stats::table_made(),
                    Level::Pmd => stats::pmd_table_made(),
                }
                Ok(table)
            }
            lost => {
                // SAFETY: the caller's table, which no process linked (only installed
                // tables are handed out): no walker can be in it.
                unsafe { mshare_table_free(table) };
                match lost {
                    Some(Err(winner)) => Ok(winner),
                    _ => Err(EINVAL),
                }
            }
        }
    }

    fn count(&self) -> usize {
        self.tables.iter().filter(|table| !table.load(Ordering::Relaxed).is_null()).count()
    }

    /// Holds off new links of table `index`, if made (`true`), until
    /// [`TablePages::set_mapped`].
    fn hold_links(&self, index: usize) -> bool {
        let Some(table) = self.get(index) else { return false };
        // SAFETY: a table of this set.
        unsafe { mshare_table_hold_links(table) };
        true
    }

    /// Sets the pages table `index`, if made, maps: what each process that links it is
    /// charged. Only while no process links it: see [`SharedTables::hold_links`].
    fn set_mapped(&self, index: usize, pages: usize) {
        if let Some(table) = self.get(index) {
            // SAFETY: a table of this set; the caller unlinked it everywhere.
            unsafe { mshare_table_set_mapped(table, pages as c_uint) };
        }
    }

    /// The links of all the tables, every process's.
    fn links_now(&self) -> u64 {
        let tables = self.tables.iter().map(|table| table.load(Ordering::Acquire)).filter(|t| !t.is_null());
        // SAFETY: tables of this set, alive while it is.
        tables.map(|table| u64::from(unsafe { mshare_table_sharers(table) })).sum()
    }
}

/// The pages with struct pages that a granule (`present`: not a hole) gives a table: what
/// a process that links the table is charged for them. Device memory has none.
fn mapped_pages(present: bool, special: bool) -> usize {
    if present && !special {
        GRANULE_PAGES
    } else {
        0
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
        for slot in self.tables.iter_mut() {
            let table = core::mem::replace(slot.get_mut(), core::ptr::null_mut());
            if table.is_null() {
                continue;
            }
            // SAFETY: made by this set, unlinked everywhere (per the type's invariants),
            // freed once.
            unsafe { mshare_table_free(table) };
            match self.level {
                Level::Pte => stats::table_freed(),
                Level::Pmd => stats::pmd_table_freed(),
            }
        }
    }
}

/// The shared PTE tables of one region, by granule.
struct Tables {
    pages: TablePages,
    /// The memory has no struct pages (a device's): special entries, which GUP refuses.
    special: bool,
}

impl Tables {
    fn new(granules: usize, special: bool) -> Result<Self> {
        Ok(Self { pages: TablePages::new(granules, Level::Pte)?, special })
    }

    fn empty() -> Self {
        Self { pages: TablePages::empty(Level::Pte), special: false }
    }

    /// The table of granule `index`, made and pointed at `frames` if it has none yet.
    fn get_or_make(&self, index: usize, frames: Frames<'_>, writable: bool) -> Result<*mut bindings::ptdesc> {
        if let Some(table) = self.pages.get(index) {
            return Ok(table);
        }
        // SAFETY: plain allocation call into the core.
        let table = unsafe { mshare_table_alloc() };
        if table.is_null() {
            return Err(ENOMEM);
        }
        let pages = mapped_pages(true, self.special);
        // SAFETY: a fresh table, not linked anywhere yet.
        unsafe { map_table(table, Some(frames), writable, self.special) };
        // SAFETY: as above.
        unsafe { mshare_table_set_mapped(table, pages as c_uint) };
        // SAFETY: filled above, linked nowhere.
        unsafe { self.pages.install(index, table) }
    }

    /// Points granule `index`'s table, if it has one, at `frames` (`None`: maps nothing).
    /// Taking access away is only complete once every sharer's TLB is flushed. `&mut`:
    /// only with the region's memory lock held exclusively, so no fault makes the table
    /// meanwhile from what is being changed.
    fn map(&mut self, index: usize, frames: Option<Frames<'_>>, writable: bool) {
        if let Some(table) = self.pages.get(index) {
            // SAFETY: a table of this set; the call takes the table's lock.
            unsafe { map_table(table, frames, writable, self.special) };
        }
    }

    /// Entry `page` of granule `index`'s table: its page frame and whether it is writable;
    /// `None` without a table or an entry.
    fn entry(&self, index: usize, page: usize) -> Option<(usize, bool)> {
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
    fn for_frames<'a>(
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
struct PmdTables {
    pages: TablePages,
    /// The memory has no struct pages (a device's): special leaves, which GUP refuses.
    special: bool,
}

impl PmdTables {
    fn new(granules: usize, special: bool) -> Result<Self> {
        Ok(Self { pages: TablePages::new(granules.div_ceil(PMD_TABLE_GRANULES), Level::Pmd)?, special })
    }

    fn empty() -> Self {
        Self { pages: TablePages::empty(Level::Pmd), special: false }
    }

    /// The table of GiB `index`, if made.
    fn get(&self, index: usize) -> Option<*mut bindings::ptdesc> {
        self.pages.get(index)
    }

    /// The table of GiB `index`, made with `entry(granule)` for each of its granules (by
    /// region granule index) if it has none yet.
    fn get_or_make(
        &self,
        index: usize,
        granules: usize,
        writable: bool,
        mut entry: impl FnMut(usize) -> Result<PmdEntry>,
    ) -> Result<*mut bindings::ptdesc> {
        if let Some(table) = self.get(index) {
            return Ok(table);
        }
        // SAFETY: plain allocation call into the core.
        let table = unsafe { mshare_pmd_table_alloc() };
        if table.is_null() {
            return Err(ENOMEM);
        }
        let first = index * PMD_TABLE_GRANULES;
        let mut pages = 0;
        for granule in first..granules.min(first + PMD_TABLE_GRANULES) {
            match entry(granule) {
                Ok(value) => {
                    pages += mapped_pages(value != PmdEntry::None, self.special);
                    // SAFETY: a fresh table, not linked anywhere yet.
                    unsafe { set_entry(table, granule % PMD_TABLE_GRANULES, value, writable, self.special) };
                }
                Err(e) => {
                    // SAFETY: made above and never linked: no walker can be in it.
                    unsafe { mshare_table_free(table) };
                    return Err(e);
                }
            }
        }
        // SAFETY: filled above, linked nowhere.
        unsafe { mshare_table_set_mapped(table, pages as c_uint) };
        // SAFETY: filled above, linked nowhere.
        unsafe { self.pages.install(index, table) }
    }

    /// Points region granule `granule`'s entry at `entry`, if its GiB has a table. Taking
    /// access away is only complete once every sharer's TLB is flushed. `&mut` as for
    /// [`Tables::map`].
    fn set(&mut self, granule: usize, entry: PmdEntry, writable: bool) {
        if let Some(table) = self.get(granule / PMD_TABLE_GRANULES) {
            // SAFETY: a table of this set; the call takes the table's lock.
            unsafe { set_entry(table, granule % PMD_TABLE_GRANULES, entry, writable, self.special) };
        }
    }

    /// Region granule `granule`'s entry: a leaf's first frame and whether it is writable,
    /// `Table` with a null table for a PTE table; `None` without a table or an entry.
    fn entry(&self, granule: usize) -> Option<(PmdEntry, bool)> {
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

/// A region's shared tables, PTE and PMD, and the rule that binds them to its memory:
/// every entry of every table that exists maps what the granule has now, with the
/// region's protection.
///
/// Tables are made by faults holding the region's memory lock shared (`&self`: lock-free
/// among themselves, see [`TablePages`]) and rewritten only by those holding it
/// exclusively (`&mut self`): a table is thus made from memory and protection that cannot
/// change under it, and a rewrite meets no table being made.
pub(crate) struct SharedTables {
    ptes: Tables,
    pmds: PmdTables,
}

impl SharedTables {
    /// No tables yet for a region of `granules` granules; `special` for memory without
    /// struct pages (a device's).
    pub(crate) fn new(granules: usize, special: bool) -> Result<Self> {
        Ok(Self { ptes: Tables::new(granules, special)?, pmds: PmdTables::new(granules, special)? })
    }

    /// An empty set, for a region of folios with no size yet.
    pub(crate) fn empty() -> Self {
        Self { ptes: Tables::empty(), pmds: PmdTables::empty() }
    }

    /// The PTE table of granule `index`, whose `memory` has page frames, made on first
    /// use with the protection `writable`.
    pub(crate) fn pte_table(&self, memory: &Memory, index: usize, writable: bool) -> Result<*mut bindings::ptdesc> {
        let frames = memory.frames().ok_or(EINVAL)?;
        self.ptes.get_or_make(index, frames, writable)
    }

    /// The PMD table of GiB `gib` of a region whose granules have `memory`, made on first
    /// use with an entry for each granule (and a PTE table for each granule a leaf cannot
    /// map); never null: a GiB of holes, or past the region's end, has empty entries.
    pub(crate) fn pmd_table(&self, memory: &[Memory], gib: usize, writable: bool) -> Result<*mut bindings::ptdesc> {
        self.pmds.get_or_make(gib, memory.len(), writable, |granule| self.pmd_entry(&memory[granule], granule, writable))
    }

    /// Granule `index`'s entry in its GiB's PMD table, from its `memory`, with its PTE
    /// table (made if need be) where a 2 MiB leaf cannot map the memory.
    fn pmd_entry(&self, memory: &Memory, index: usize, writable: bool) -> Result<PmdEntry> {
        PmdEntry::for_frames(memory.frames(), |frames| self.ptes.get_or_make(index, frames, writable))
    }

    /// Points granule `index`'s tables (its PTE table, and its entry in its GiB's PMD
    /// table) at its memory, `memory[index]`, with the protection `writable`. ENOMEM only
    /// when the granule needs a PTE table it has none of yet (a file's pages under a PMD
    /// table).
    pub(crate) fn sync(&mut self, memory: &[Memory], index: usize, writable: bool) -> Result {
        let entry = self.prepare(memory, index, writable)?;
        self.publish(memory, index, entry, writable);
        Ok(())
    }

    /// What granule `index`'s entry in its GiB's PMD table must become (`None` without
    /// that PMD table), making its PTE table if it needs one it has none of yet (ENOMEM).
    /// Changes nothing a process can reach: a table made here is linked nowhere yet.
    pub(crate) fn prepare(&self, memory: &[Memory], index: usize, writable: bool) -> Result<Option<PmdEntry>> {
        if self.pmds.get(index / PMD_TABLE_GRANULES).is_none() {
            return Ok(None);
        }
        self.pmd_entry(&memory[index], index, writable).map(Some)
    }

    /// Points granule `index`'s tables at its memory: its PTE table, and its PMD table
    /// entry with `entry`, which [`SharedTables::prepare`] gave. Cannot fail.
    pub(crate) fn publish(&mut self, memory: &[Memory], index: usize, entry: Option<PmdEntry>, writable: bool) {
        self.ptes.map(index, memory[index].frames(), writable);
        if let Some(entry) = entry {
            self.pmds.set(index, entry, writable);
        }
    }

    /// Holds off processes' links to the tables of granules `range` (their PTE tables and
    /// their GiBs' PMD tables) while the pages those map change: each process that links a
    /// table is charged the pages it maps, and given them back when it unlinks it, so the
    /// number must not change under a link. The caller then unlinks the tables from every
    /// process (a zap of the range), changes them, and ends with
    /// [`SharedTables::count_mapped`]; faults that would link one meanwhile retry, and wait
    /// for the memory lock the caller holds exclusively. `true` if any of the tables exists
    /// (else there is nothing to unlink).
    pub(crate) fn hold_links(&self, range: Range<usize>) -> bool {
        let pmds = gibs_of(&range).fold(false, |held, gib| self.pmds.pages.hold_links(gib) | held);
        range.fold(pmds, |held, index| self.ptes.pages.hold_links(index) | held)
    }

    /// Ends [`SharedTables::hold_links`]: sets what the tables of granules `range` map,
    /// from their `memory` (the whole region's), and lets processes link them again.
    pub(crate) fn count_mapped(&self, memory: &[Memory], range: Range<usize>) {
        for gib in gibs_of(&range) {
            let first = gib * PMD_TABLE_GRANULES;
            let granules = &memory[first..memory.len().min(first + PMD_TABLE_GRANULES)];
            let pages = granules.iter().map(|m| mapped_pages(!m.is_hole(), self.pmds.special)).sum();
            self.pmds.pages.set_mapped(gib, pages);
        }
        for index in range {
            self.ptes.pages.set_mapped(index, mapped_pages(!memory[index].is_hole(), self.ptes.special));
        }
    }

    /// The links of all the tables now, every process's: a process that touched a window
    /// over the whole region links each table once.
    pub(crate) fn links_now(&self) -> u64 {
        self.ptes.pages.links_now() + self.pmds.pages.links_now()
    }

    /// How many PTE tables exist.
    pub(crate) fn pte_count(&self) -> usize {
        self.ptes.pages.count()
    }

    /// How many PMD tables exist.
    pub(crate) fn pmd_count(&self) -> usize {
        self.pmds.pages.count()
    }

    /// Entry `page` of granule `index`'s PTE table: its page frame and whether it is
    /// writable; `None` without a table or an entry.
    pub(crate) fn pte_entry(&self, index: usize, page: usize) -> Option<(usize, bool)> {
        self.ptes.entry(index, page)
    }

    /// Granule `index`'s entry in its GiB's PMD table (see [`PmdTables::entry`]).
    pub(crate) fn pmd_entry_of(&self, index: usize) -> Option<(PmdEntry, bool)> {
        self.pmds.entry(index)
    }
}

/// The GiBs (PMD tables) that granules `range` are in.
fn gibs_of(range: &Range<usize>) -> Range<usize> {
    if range.is_empty() {
        return 0..0;
    }
    range.start / PMD_TABLE_GRANULES..(range.end - 1) / PMD_TABLE_GRANULES + 1
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

#[kunit_tests(mshare_shared_table)]
mod tests {
    use super::*;

    /// Two faults that both found no table both make one: the first installed is the
    /// table of the slot for both, the other is freed, and the set frees the survivor once.
    #[test]
    fn a_table_made_twice_is_installed_once() {
        if !kernel_shares_tables() {
            crate::kunit_skip(c"this kernel cannot share page tables (no CONFIG_SHARED_PGTABLE)");
            return;
        }
        let pages = TablePages::new(2, Level::Pte).expect("slots");
        // SAFETY: plain allocation calls into the core.
        let (first, second, third) = unsafe { (mshare_table_alloc(), mshare_table_alloc(), mshare_table_alloc()) };
        assert!(!first.is_null() && !second.is_null() && !third.is_null());
        assert_eq!(pages.get(1), None);
        // SAFETY (the three installs): fresh tables, linked nowhere, given to the set.
        assert_eq!(unsafe { pages.install(1, first) }, Ok(first));
        assert_eq!(unsafe { pages.install(1, second) }, Ok(first));
        assert_eq!(unsafe { pages.install(2, third) }, Err(EINVAL));
        assert_eq!((pages.get(1), pages.get(0), pages.count()), (Some(first), None, 1));
    }
}
