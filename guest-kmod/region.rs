// SPDX-License-Identifier: GPL-2.0

//! A region: its size (set once, whole granules) and its memory. An anonymous region's
//! memory is what `CREATE_MAPPING` fills and `UNMAP` empties granule by granule: one
//! zeroed, physically contiguous chunk per granule, or a shmem file's pages
//! ([`Memory`]); a granule without memory is a hole (touching it is SIGSEGV). A device
//! region ([`device`]) is the BAR2 of an ivshmem device: its size and memory are the
//! device's, fixed, and read-only when the VMM attached it so.
//!
//! In mode B each granule with memory also has a shared PTE table, and each GiB of the
//! region that a window of whole, aligned GiBs maps a shared PMD table
//! ([`SharedTables`]), whose entries follow the granule's memory and the region's
//! protection ([`protection`]): filled when a table is made or the granule gets memory,
//! cleared before the memory is freed, rewritten when the protection changes. Whoever
//! takes access away then unlinks the tables from every process (`unmap_mapping_range`),
//! which flushes their TLBs.
//!
//! A window at a GiB-aligned offset may reach past the region's end to the next GiB
//! boundary (so that a region smaller than a GiB can share a PMD table): that part is a
//! hole, SIGSEGV, like any hole.
//!
//! One lock, the memory lock ([`Contents`], a reader-writer semaphore), covers what a
//! fault reads: the size, the memory, the protection and the shared tables. Every fault
//! of every process holds it shared, and finds or makes its shared table with no other
//! lock; only what changes the memory (`SET_SIZE`, `CREATE_MAPPING`, `UNMAP`, unplugging)
//! or takes access away from every process (`SET_PROT`) holds it exclusively, until the
//! processes' mappings are gone. So faults never wait for each other, and no fault maps
//! memory between its change and the zap. A device region's list of inodes has a mutex of
//! its own, taken after the memory lock.

mod device;
mod io;
mod protection;

use crate::file_pages::{FilePages, MappedFile};
use crate::granule::Memory;
use crate::inode::Inode;
use crate::rwsem::{new_rwsem, RwSem};
use crate::shared_table::{PmdEntry, SharedTables, PMD_TABLE_GRANULES};
use crate::window::{gib_reach, Window};
use crate::{granule_align, stats, GRANULE_PAGES, GRANULE_SIZE, MAX_REGION_SIZE};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::bindings::vm_fault_t;
use kernel::page::PAGE_SIZE;
use kernel::{bindings, new_mutex, prelude::*, sync::Arc, sync::Mutex};

/// What backs one page of a region.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Page {
    /// This page frame.
    Frame(usize),
    /// Inside the region, in a granule with no memory.
    Hole,
    /// Past the region's end.
    Outside,
}

impl Page {
    /// How a fault that found no memory ends: SIGSEGV in a hole (no CREATE_MAPPING there,
    /// or UNMAPped), SIGBUS past the end or once the device went away.
    fn fault_without_memory(&self) -> vm_fault_t {
        match self {
            Page::Hole => bindings::vm_fault_reason_VM_FAULT_SIGSEGV,
            _ => bindings::vm_fault_reason_VM_FAULT_SIGBUS,
        }
    }
}

/// What faults read, under the memory lock.
struct Contents {
    size: u64,
    /// The address every window maps the region at (the v1 API's `start`); 0 for anywhere.
    start: u64,
    /// Each granule's memory.
    memory: KVVec<Memory>,
    /// The shared PTE and PMD tables (mode B).
    tables: SharedTables,
    /// Processes may write (the region's protection, `MSHAREFS_SET_PROT`).
    writable: bool,
    /// The device behind a device region went away: nothing of it may be mapped again.
    unplugged: bool,
}

impl Contents {
    /// A region with no size yet.
    fn empty() -> Self {
        Self {
            size: 0,
            start: 0,
            memory: KVVec::new(),
            tables: SharedTables::empty(),
            writable: true,
            unplugged: false,
        }
    }

    /// ENODEV once the device behind the region went away.
    fn check_present(&self) -> Result {
        if self.unplugged {
            return Err(ENODEV);
        }
        Ok(())
    }

    /// What backs page `pgoff`: nothing (SIGBUS) once the device went away.
    fn page(&self, pgoff: usize) -> Page {
        let reach = gib_reach(self.size) / PAGE_SIZE as u64;
        match self.memory.get(pgoff / GRANULE_PAGES) {
            _ if self.unplugged => Page::Outside,
            Some(memory) => memory.frame(pgoff % GRANULE_PAGES).map_or(Page::Hole, Page::Frame),
            // The rest of the last GiB, which a window of whole GiBs maps.
            None if (pgoff as u64) < reach => Page::Hole,
            None => Page::Outside,
        }
    }

    /// Points granule `index`'s shared tables at its memory, with the region's protection.
    fn sync(&mut self, index: usize) -> Result {
        self.tables.sync(&self.memory, index, self.writable)
    }

    /// Takes granule `index`'s memory away, leaving a hole, and empties its shared tables
    /// (which allocates nothing, so cannot fail). Returns the memory taken.
    fn empty_granule(&mut self, index: usize) -> Memory {
        let taken = core::mem::take(&mut self.memory[index]);
        let _ = self.sync(index);
        taken
    }

    /// Whether every granule of `range` is a hole (EINVAL otherwise).
    fn check_holes(&self, range: &core::ops::Range<usize>) -> Result {
        if self.memory[range.clone()].iter().any(|memory| !memory.is_hole()) {
            return Err(EINVAL);
        }
        Ok(())
    }
}

/// Where a region's memory comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Chunks this module allocates and frees (msharefs files): folios of `inode`'s mapping
    /// (none in KUnit, where there is no file).
    Anonymous {
        /// The region's inode, whose mapping each chunk's folio carries.
        inode: Option<Inode>,
    },
    /// A device's memory (an ivshmem BAR2): never freed here, its size fixed.
    Device {
        /// The VMM attached it read-only.
        read_only: bool,
        /// Its kernel mapping (write-back), for read and write; 0 for none.
        base: usize,
    },
}

/// One msharefs region.
///
/// # Invariants
///
/// A region is shared through `Arc`: each msharefs inode showing it holds one reference
/// (taken when the file is created, or when a mount shows a device region; given back
/// when the inode is evicted), and the ivshmem driver holds one for its device's region
/// until it unbinds. A window (VMA) holds its file and so the inode: no mapping outlives
/// the region. `inodes` lists exactly the inodes of a device region that are not evicted.
/// `contents` changes only with its lock held exclusively, except that a fault holding it
/// shared may make a shared table (see the module documentation).
#[pin_data(PinnedDrop)]
pub(crate) struct Region {
    #[pin]
    contents: RwSem<Contents>,
    kind: Kind,
    /// Mapped windows (VMAs) of the region in all processes.
    windows: AtomicU64,
    /// Faults that mapped memory of the region (mode C).
    faults: AtomicU64,
    /// Times a shared table was linked into a process (mode B).
    links: AtomicU64,
    /// Times a shared PMD table was linked into a process (mode B).
    pmd_links: AtomicU64,
    /// The msharefs inodes of a device region (one per msharefs instance that showed it),
    /// whose mappings UNMAP, SET_PROT and unplugging remove. Taken after `contents`.
    #[pin]
    inodes: Mutex<KVVec<Inode>>,
}

/// How a region is used (`MSHAREFS_GET_STATS`).
pub(crate) struct Stats {
    /// Mapped windows.
    pub(crate) windows: u64,
    /// Faults served.
    pub(crate) faults: u64,
    /// Bytes with memory.
    pub(crate) backed: u64,
    /// Shared PTE tables (each one page, counted once in PageTables).
    pub(crate) tables: u64,
    /// Times a shared table was linked into a process.
    pub(crate) links: u64,
    /// Shared PMD tables (each one page, counted once in PageTables).
    pub(crate) pmd_tables: u64,
    /// Times a shared PMD table was linked into a process.
    pub(crate) pmd_links: u64,
    /// Bytes mapped by 2 MiB leaves in the shared PMD tables.
    pub(crate) huge_leaf_bytes: u64,
    /// Bytes with a file's pages (`CREATE_MAPPING` with a descriptor).
    pub(crate) file_backed: u64,
    /// Shared tables linked now, summed over processes.
    pub(crate) links_now: u64,
}

/// Checks a size request against the region's current size: a region's size is set once,
/// to a whole number of granules, at most [`MAX_REGION_SIZE`] (EFBIG, as for a file too
/// large); setting the same size again is allowed.
pub(crate) fn check_new_size(current: u64, requested: u64) -> Result<u64> {
    if granule_align(requested)? != requested {
        return Err(EINVAL);
    }
    if requested > MAX_REGION_SIZE {
        return Err(EFBIG);
    }
    if current != 0 && current != requested {
        return Err(EINVAL);
    }
    Ok(requested)
}

/// Checks a region's fixed start address: granule aligned, and the region below
/// `user_end` (the end of user address space); 0 (no fixed address) always passes.
pub(crate) fn check_start(start: u64, size: u64, user_end: u64) -> Result {
    if start == 0 {
        return Ok(());
    }
    if start % GRANULE_SIZE != 0 || start.checked_add(size).is_none_or(|end| end > user_end) {
        return Err(EINVAL);
    }
    Ok(())
}

/// The offset inside a region of `size` bytes starting at `start` of the address `addr`
/// (v1's CREATE_MAPPING and UNMAP): with no start, `addr` is already an offset; with one,
/// `[addr, addr + len)` must lie inside `[start, start + size)`.
pub(crate) fn offset_of(start: u64, size: u64, addr: u64, len: u64) -> Result<u64> {
    if start == 0 {
        return Ok(addr);
    }
    let inside = addr >= start && addr.checked_add(len).is_some_and(|end| end <= start + size);
    if !inside {
        return Err(EINVAL);
    }
    Ok(addr - start)
}

/// Checks a `[offset, offset + len)` part of a region of `size` bytes: whole granules, not
/// empty, inside. Returns the granule indices.
pub(crate) fn check_range(size: u64, offset: u64, len: u64) -> Result<core::ops::Range<usize>> {
    if len == 0 || offset % GRANULE_SIZE != 0 || len % GRANULE_SIZE != 0 {
        return Err(EINVAL);
    }
    let end = offset.checked_add(len).ok_or(EINVAL)?;
    if end > size {
        return Err(EINVAL);
    }
    Ok((offset / GRANULE_SIZE) as usize..(end / GRANULE_SIZE) as usize)
}

impl Region {
    /// A region of `kind` with `contents`: counted as made once in its memory (nothing
    /// after can fail), so that every count has its drop.
    fn with(kind: Kind, contents: Contents) -> impl PinInit<Self> {
        pin_init!(Self {
            contents <- new_rwsem!(contents, "Region::contents"),
            kind,
            windows: {
                stats::region_made();
                AtomicU64::new(0)
            },
            faults: AtomicU64::new(0),
            links: AtomicU64::new(0),
            pmd_links: AtomicU64::new(0),
            inodes <- new_mutex!(KVVec::new(), "Region::inodes"),
        })
    }

    /// An empty region of `inode` (none in KUnit): no size, no memory.
    pub(crate) fn new(inode: Option<Inode>) -> impl PinInit<Self> {
        Self::with(Kind::Anonymous { inode }, Contents::empty())
    }

    /// Removes `[offset, offset + len)` from every process that maps the region, through
    /// each inode that shows it: a device region shows as one inode per msharefs instance
    /// (an api=v1 and an api=v3 mount), whose processes hold the same shared tables.
    fn zap(&self, offset: u64, len: u64) -> Result {
        match self.kind {
            Kind::Anonymous { inode } => inode.map_or(Ok(()), |inode| inode.zap(offset, len)),
            // Every inode's processes, whatever one of them gives: the first error is kept.
            Kind::Device { .. } => {
                self.inodes.lock().iter().fold(Ok(()), |zapped, inode| zapped.and(inode.zap(offset, len)))
            }
        }
    }

    /// Whether the region's memory is folios of its own (not a device's page frames).
    pub(crate) fn has_pages(&self) -> bool {
        matches!(self.kind, Kind::Anonymous { .. })
    }

    /// The size in bytes, 0 until set.
    pub(crate) fn size(&self) -> u64 {
        self.contents.read().size
    }

    /// The address every window maps the region at; 0 for anywhere.
    pub(crate) fn start(&self) -> u64 {
        self.contents.read().start
    }

    /// Sets the size (once; a device region's is the device's) and, with `start`, the
    /// address windows map it at (v1's `MSHAREFS_SET_SIZE`; once, like the size). A start
    /// must be granule aligned and leave the region below `user_end`.
    pub(crate) fn set_size(&self, requested: u64, start: Option<u64>, user_end: u64) -> Result<u64> {
        let mut contents = self.contents.write();
        if !self.has_pages() && requested != contents.size {
            return Err(EINVAL);
        }
        let size = check_new_size(contents.size, requested)?;
        if let Some(start) = start {
            check_start(start, size, user_end)?;
            if contents.size != 0 && start != contents.start {
                return Err(EINVAL);
            }
        }
        if contents.size == 0 {
            let count = usize::try_from(size / GRANULE_SIZE).map_err(|_| EINVAL)?;
            // Charged to the caller's memory cgroup, like the memory itself: a huge size
            // costs its metadata before any memory.
            let mut memory = KVVec::with_capacity(count, GFP_KERNEL_ACCOUNT)?;
            for _ in 0..count {
                memory.push(Memory::Hole, GFP_KERNEL_ACCOUNT)?;
            }
            contents.tables = SharedTables::new(count, false)?;
            contents.memory = memory;
            contents.start = start.unwrap_or(0);
            contents.size = size;
        }
        Ok(size)
    }

    /// Gives memory to `[offset, offset + len)`: every granule of it must be a hole.
    pub(crate) fn create_mapping(&self, offset: u64, len: u64) -> Result {
        let Kind::Anonymous { inode } = self.kind else {
            return Err(EINVAL);
        };
        self.fill(offset, len, |i| Memory::allocate(inode, i * GRANULE_PAGES))
    }

    /// Gives `[offset, offset + len)` the pages of the shmem file `file` from byte
    /// `file_offset` on (granule aligned: EINVAL otherwise, or past the file's end).
    pub(crate) fn create_file_mapping(&self, offset: u64, len: u64, file: &Arc<MappedFile>, file_offset: u64) -> Result {
        if !self.has_pages() || file_offset % GRANULE_SIZE != 0 {
            return Err(EINVAL);
        }
        let first = offset / GRANULE_SIZE;
        self.fill(offset, len, |i| {
            let at = (i as u64 - first).checked_mul(GRANULE_SIZE).and_then(|d| d.checked_add(file_offset));
            Ok(Memory::File(FilePages::pin(file, at.ok_or(EINVAL)?)?))
        })
    }

    /// Gives each granule `i` of `[offset, offset + len)`, all holes, the memory `make(i)`
    /// makes; on failure the range is all holes again.
    fn fill(&self, offset: u64, len: u64, mut make: impl FnMut(usize) -> Result<Memory>) -> Result {
        let range = {
            let contents = self.contents.read();
            let range = check_range(contents.size, offset, len)?;
            contents.check_holes(&range)?;
            range
        };
        // The memory is made (allocated and zeroed, or pinned) before the memory lock is
        // taken, so faults elsewhere in the region do not wait for it. A size is set once,
        // so the range stays inside; another CREATE_MAPPING of the same granules may win
        // meanwhile, and this one is then EINVAL, its memory freed unused.
        let mut made = KVVec::with_capacity(range.len(), GFP_KERNEL)?;
        for i in range.clone() {
            made.push(make(i)?, GFP_KERNEL)?;
        }
        let mut contents = self.contents.write();
        contents.check_holes(&range)?;
        for (i, made) in range.clone().zip(made) {
            contents.memory[i] = made;
        }
        // A granule that had memory before keeps its tables, maybe still linked: no fault
        // would fill them, so they are pointed at the new memory here. Everything that can
        // fail is done before the first of them changes: a process that reached the new
        // memory of one granule might hold it in its TLB, and taking it back then would
        // need the zap and flush of `unmap`.
        let prepared = (|| -> Result<KVVec<Option<PmdEntry>>> {
            let mut entries = KVVec::with_capacity(range.len(), GFP_KERNEL)?;
            for i in range.clone() {
                entries.push(contents.tables.prepare(&contents.memory, i, contents.writable)?, GFP_KERNEL)?;
            }
            Ok(entries)
        })();
        let Contents { memory, tables, writable, .. } = &mut *contents;
        match prepared {
            Ok(entries) => {
                // Tables that now map more pages are unlinked first: each process that
                // linked one was charged what it mapped then (see `hold_links`). It
                // links them again on its next touch, one fault. Without such tables
                // (mode C, or a range no table covers) no process maps the holes.
                let held = tables.hold_links(range.clone());
                for (i, entry) in range.clone().zip(entries) {
                    tables.publish(memory, i, entry, *writable);
                }
                let zapped = if held { self.zap(offset, len) } else { Ok(()) };
                tables.count_mapped(memory, range);
                zapped
            }
            Err(e) => {
                // No process reached this memory: the memory lock kept faults out, and no
                // table entry points at it yet.
                for i in range {
                    drop(contents.empty_granule(i));
                }
                Err(e)
            }
        }
    }

    /// Takes the memory of `[offset, offset + len)` away from every process, leaving
    /// holes: its shared tables are emptied, every mapping of the range removed (which
    /// flushes the TLBs), and only then the memory freed, all under the memory lock, so a
    /// process that links a table or faults after the zap finds nothing.
    pub(crate) fn unmap(&self, offset: u64, len: u64) -> Result {
        if !self.has_pages() {
            return Err(EINVAL);
        }
        let mut contents = self.contents.write();
        let range = check_range(contents.size, offset, len)?;
        let mut taken = KVVec::with_capacity(range.len(), GFP_KERNEL)?;
        // What the range's tables map changes: no process may link one meanwhile.
        contents.tables.hold_links(range.clone());
        for i in range.clone() {
            // Room was made above: this push does not fail, nor drop the memory.
            taken.push(contents.empty_granule(i), GFP_KERNEL)?;
        }
        // A mode C fault that found the memory before it was taken maps it after
        // returning, with its folio locked: wait for it, so that the zap finds its mapping.
        taken.iter_mut().for_each(Memory::settle);
        let zapped = self.zap(offset, len);
        contents.tables.count_mapped(&contents.memory, range);
        drop(taken);
        zapped
    }

    /// EINVAL unless `[offset, offset + len)` is whole granules inside the region.
    pub(crate) fn check_in_range(&self, offset: u64, len: u64) -> Result {
        check_range(self.contents.read().size, offset, len).map(drop)
    }

    /// Removes every process's mappings of `[offset, offset + len)`, keeping the memory:
    /// each maps it again on its next access (through the same shared tables in mode B,
    /// which this unlinks). A fault racing with it maps the same memory, so no lock is
    /// held across the zap.
    pub(crate) fn remove_mappings(&self, offset: u64, len: u64) -> Result {
        self.check_in_range(offset, len)?;
        self.zap(offset, len)
    }

    /// The shared table of the granule holding page `pgoff`, made on first use; null for
    /// a hole (the fault then finds nothing and gives SIGSEGV); ENODEV (SIGBUS) once the
    /// device went away. Takes no lock but the memory lock, shared.
    pub(crate) fn table(&self, pgoff: usize) -> Result<*mut bindings::ptdesc> {
        let contents = self.contents.read();
        contents.check_present()?;
        let index = pgoff / GRANULE_PAGES;
        let memory = contents.memory.get(index).ok_or(EINVAL)?;
        if memory.is_hole() {
            return Ok(core::ptr::null_mut());
        }
        let table = contents.tables.pte_table(memory, index, contents.writable)?;
        self.links.fetch_add(1, Ordering::Relaxed);
        stats::table_linked();
        Ok(table)
    }

    /// The shared PMD table of the GiB holding page `pgoff`, made on first use (see
    /// [`SharedTables::pmd_table`]); never null; ENODEV (SIGBUS) once the device went
    /// away. Takes no lock but the memory lock, shared.
    pub(crate) fn pmd_table(&self, pgoff: usize) -> Result<*mut bindings::ptdesc> {
        let contents = self.contents.read();
        contents.check_present()?;
        let gib = pgoff / (GRANULE_PAGES * PMD_TABLE_GRANULES);
        let table = contents.tables.pmd_table(&contents.memory, gib, contents.writable)?;
        self.pmd_links.fetch_add(1, Ordering::Relaxed);
        stats::pmd_table_linked();
        Ok(table)
    }

    /// Granule `index`'s entry in its shared PMD table (tests).
    pub(crate) fn pmd_table_entry(&self, index: usize) -> Option<(PmdEntry, bool)> {
        self.contents.read().tables.pmd_entry_of(index)
    }

    /// Entry `page` of granule `index`'s shared table (tests).
    pub(crate) fn table_entry(&self, index: usize, page: usize) -> Option<(usize, bool)> {
        self.contents.read().tables.pte_entry(index, page)
    }

    /// What backs page `pgoff` of the region: nothing (SIGBUS) once its device went away.
    pub(crate) fn page(&self, pgoff: usize) -> Page {
        self.contents.read().page(pgoff)
    }

    /// A fault at page `pgoff` of a window: `map(frame)` maps the page found there (and
    /// says how the fault ends), with the memory lock held shared so that UNMAP cannot free
    /// the page in between; a write (`write`) while the region is read-only is SIGSEGV.
    /// `map` is also told whether the region allows writes, so that a leaf may be mapped
    /// writable at once. A fault at the PMD level (`leaf`) maps a granule whose memory is
    /// one 2 MiB chunk by one leaf, and is `VM_FAULT_FALLBACK` for any other (a file's
    /// pages), which the core then faults page by page. A fault that mapped memory is
    /// counted (`map` returns `NOPAGE` or `LOCKED`); `map` may return anything else (an
    /// error of the core's).
    pub(crate) fn fault(
        &self,
        pgoff: usize,
        write: bool,
        leaf: bool,
        map: impl FnOnce(usize, bool) -> vm_fault_t,
    ) -> vm_fault_t {
        let contents = self.contents.read();
        let page = contents.page(pgoff);
        let Page::Frame(frame) = page else { return page.fault_without_memory() };
        if write && !contents.writable {
            return bindings::vm_fault_reason_VM_FAULT_SIGSEGV;
        }
        if leaf && !contents.memory.get(pgoff / GRANULE_PAGES).is_some_and(Memory::is_chunk) {
            return bindings::vm_fault_reason_VM_FAULT_FALLBACK;
        }
        let done = map(frame, contents.writable);
        if done == bindings::vm_fault_reason_VM_FAULT_NOPAGE || done == bindings::vm_fault_reason_VM_FAULT_LOCKED {
            self.faults.fetch_add(1, Ordering::Relaxed);
            stats::fault();
        }
        done
    }

    /// A write to page `pgoff` (frame `pfn`) that a window with mappings of its own maps
    /// read-only: SIGSEGV while the region is read-only; a retry if the page is no longer
    /// the region's there (UNMAP took it); else the page's folio is locked before the
    /// memory lock is let go, as a fault's is, and the core makes the entry writable. A
    /// SET_PROT or UNMAP after this waits for that folio lock before it zaps
    /// (`Memory::settle`), so the zap removes the writable entry.
    pub(crate) fn page_mkwrite(&self, pgoff: usize, pfn: usize) -> vm_fault_t {
        let contents = self.contents.read();
        if !contents.writable {
            return bindings::vm_fault_reason_VM_FAULT_SIGSEGV;
        }
        match contents.page(pgoff) {
            Page::Frame(frame) if frame == pfn => {
                // SAFETY: the core holds a reference on the faulting page.
                unsafe { crate::granule::lock_page(pfn) };
                bindings::vm_fault_reason_VM_FAULT_LOCKED
            }
            _ => bindings::vm_fault_reason_VM_FAULT_NOPAGE,
        }
    }

    /// A fault in a window that shares the region's tables (mode B) and found no entry:
    /// where there is memory, the table was unlinked under the fault (UNMAP or SET_PROT of
    /// another part) and retrying links it again; otherwise a hole or past the end.
    pub(crate) fn shared_fault(&self, pgoff: usize) -> vm_fault_t {
        match self.page(pgoff) {
            Page::Frame(_) => bindings::vm_fault_reason_VM_FAULT_NOPAGE,
            page => page.fault_without_memory(),
        }
    }

    /// A window of the region was mapped (mmap, or a fork copying it).
    pub(crate) fn window_opened(&self, window: Window) {
        self.windows.fetch_add(1, Ordering::Relaxed);
        stats::window_opened(window != Window::Private);
    }

    /// A window of the region went away.
    pub(crate) fn window_closed(&self, window: Window) {
        self.windows.fetch_sub(1, Ordering::Relaxed);
        stats::window_closed(window != Window::Private);
    }

    /// Current statistics.
    pub(crate) fn stats(&self) -> Stats {
        let contents = self.contents.read();
        let memory = &contents.memory;
        let backed = memory.iter().filter(|memory| !memory.is_hole()).count() as u64 * GRANULE_SIZE;
        let file_backed = memory.iter().filter(|memory| memory.is_file()).count() as u64 * GRANULE_SIZE;
        let huge_leaves = (0..memory.len())
            .filter(|&i| matches!(contents.tables.pmd_entry_of(i), Some((PmdEntry::Leaf(_), _))))
            .count() as u64;
        Stats {
            windows: self.windows.load(Ordering::Relaxed),
            faults: self.faults.load(Ordering::Relaxed),
            backed,
            tables: contents.tables.pte_count() as u64,
            links: self.links.load(Ordering::Relaxed),
            pmd_tables: contents.tables.pmd_count() as u64,
            pmd_links: self.pmd_links.load(Ordering::Relaxed),
            huge_leaf_bytes: huge_leaves * GRANULE_SIZE,
            links_now: contents.tables.links_now(),
            file_backed,
        }
    }
}

#[pinned_drop]
impl PinnedDrop for Region {
    fn drop(self: Pin<&mut Self>) {
        stats::region_dropped();
        // No mapping outlives the region (every VMA of it holds the region's file): its
        // memory and tables go with `contents`.
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
    fn bad_sizes_are_einval() {
        assert_eq!(check_new_size(0, 0), Err(EINVAL));
        assert_eq!(check_new_size(0, GRANULE_SIZE + 4096), Err(EINVAL));
        assert_eq!(check_new_size(0, u64::MAX), Err(EINVAL));
        assert_eq!(check_new_size(4 << 20, 8 << 20), Err(EINVAL));
        assert_eq!(check_new_size(0, MAX_REGION_SIZE + GRANULE_SIZE), Err(EFBIG));
        assert_eq!(check_new_size(0, 1 << 63), Err(EFBIG));
    }

    #[test]
    fn ranges_are_whole_granules_inside() {
        let g = GRANULE_SIZE;
        assert_eq!(check_range(4 * g, g, 2 * g), Ok(1..3));
        assert_eq!(check_range(4 * g, 0, 0), Err(EINVAL));
        assert_eq!(check_range(4 * g, 4096, g), Err(EINVAL));
        assert_eq!(check_range(4 * g, 3 * g, 2 * g), Err(EINVAL));
        assert_eq!(check_range(4 * g, u64::MAX - g + 1, g), Err(EINVAL));
    }

    #[test]
    fn a_fixed_start_is_aligned_and_leaves_the_region_in_user_space() {
        let (g, end) = (GRANULE_SIZE, 1u64 << 47);
        assert_eq!(check_start(0, 4 * g, end), Ok(()));
        assert_eq!(check_start(2 << 40, 4 * g, end), Ok(()));
        assert_eq!(check_start((2 << 40) + 4096, 4 * g, end), Err(EINVAL));
        assert_eq!(check_start(end - 2 * g, 4 * g, end), Err(EINVAL));
        assert_eq!(check_start(u64::MAX - g + 1, 4 * g, end), Err(EINVAL));
    }

    #[test]
    fn v1_addresses_are_inside_the_region() {
        let (g, start) = (GRANULE_SIZE, 2u64 << 40);
        assert_eq!(offset_of(0, 4 * g, 2 * g, g), Ok(2 * g));
        assert_eq!(offset_of(start, 4 * g, start + g, 2 * g), Ok(g));
        assert_eq!(offset_of(start, 4 * g, start + 3 * g, 2 * g), Err(EINVAL));
        assert_eq!(offset_of(start, 4 * g, start - g, g), Err(EINVAL));
        assert_eq!(offset_of(start, 4 * g, u64::MAX - 4095, 8192), Err(EINVAL));
    }

    /// A region of 4 granules with memory in the first two, or `None` (the test skipped) on
    /// a kernel that cannot share page tables.
    fn region_with_two_granules() -> Option<Pin<KBox<Region>>> {
        if !crate::shared_table::kernel_shares_tables() {
            crate::kunit_skip(c"this kernel cannot share page tables (no CONFIG_SHARED_PGTABLE)");
            return None;
        }
        let g = GRANULE_SIZE;
        let region = KBox::pin_init(Region::new(None), GFP_KERNEL).expect("region");
        assert_eq!(region.set_size(4 * g, None, 1 << 47), Ok(4 * g));
        assert_eq!(region.create_mapping(0, 2 * g), Ok(()));
        Some(region)
    }

    /// A granule's shared table maps its memory with the region's protection, is emptied
    /// before its memory goes, and does not exist for a hole.
    #[test]
    fn shared_tables_follow_memory_and_protection() {
        let Some(region) = region_with_two_granules() else { return };
        let g = GRANULE_SIZE;
        let page = GRANULE_PAGES + 7;
        let Page::Frame(pfn) = region.page(page) else { panic!("no memory at page {page}") };
        assert_eq!(region.table_entry(1, 7), None);
        assert!(!region.table(page).expect("table").is_null());
        assert_eq!(region.table_entry(1, 7), Some((pfn, true)));
        assert_eq!(region.table_entry(1, 0), Some((pfn - 7, true)));
        assert_eq!(region.stats().tables, 1);
        // A hole has no table: the fault finds nothing and is SIGSEGV.
        assert!(region.table(3 * GRANULE_PAGES).expect("hole").is_null());

        assert_eq!(region.set_prot(false), Ok(()));
        assert_eq!(region.table_entry(1, 7), Some((pfn, false)));
        assert_eq!(region.window(true, false), Err(EACCES));
        assert_eq!(region.set_prot(true), Ok(()));
        assert_eq!(region.table_entry(1, 7), Some((pfn, true)));

        assert_eq!(region.unmap(g, g), Ok(()));
        assert_eq!(region.table_entry(1, 7), None);
        assert_eq!(region.page(page), Page::Hole);
        // New memory in the granule shows through the table that is still there.
        assert_eq!(region.create_mapping(g, g), Ok(()));
        let Page::Frame(again) = region.page(page) else { panic!("no memory after CREATE_MAPPING") };
        assert_eq!(region.table_entry(1, 7), Some((again, true)));
    }

    /// A GiB's shared PMD table maps each granule's chunk by a 2 MiB leaf with the
    /// region's protection, has no entry for a hole (nor past the region's end, where the
    /// region's pages are holes too), and follows UNMAP and CREATE_MAPPING.
    #[test]
    fn shared_pmd_tables_follow_memory_and_protection() {
        let Some(region) = region_with_two_granules() else { return };
        let g = GRANULE_SIZE;
        let Page::Frame(first) = region.page(GRANULE_PAGES) else { panic!("no memory in granule 1") };
        assert_eq!(region.pmd_table_entry(1), None);
        assert!(!region.pmd_table(0).expect("PMD table").is_null());
        assert_eq!(region.pmd_table_entry(1), Some((PmdEntry::Leaf(first), true)));
        assert_eq!(region.pmd_table_entry(3), None);
        assert_eq!(region.page(4 * GRANULE_PAGES), Page::Hole);
        let stats = region.stats();
        assert_eq!((stats.pmd_tables, stats.tables, stats.huge_leaf_bytes), (1, 0, 2 * g));

        assert_eq!(region.set_prot(false), Ok(()));
        assert_eq!(region.pmd_table_entry(1), Some((PmdEntry::Leaf(first), false)));
        assert_eq!(region.set_prot(true), Ok(()));

        assert_eq!(region.unmap(g, g), Ok(()));
        assert_eq!(region.pmd_table_entry(1), None);
        assert_eq!(region.create_mapping(g, 3 * g), Ok(()));
        let Page::Frame(again) = region.page(GRANULE_PAGES) else { panic!("no memory after CREATE_MAPPING") };
        assert_eq!(region.pmd_table_entry(1), Some((PmdEntry::Leaf(again), true)));
        assert!(matches!(region.pmd_table_entry(3), Some((PmdEntry::Leaf(_), true))));
        assert_eq!(region.stats().huge_leaf_bytes, 4 * g);
    }
}
