// SPDX-License-Identifier: GPL-2.0

//! A region: its size (set once, whole granules) and its memory. An anonymous region's
//! memory is what `CREATE_MAPPING` fills and `UNMAP` empties granule by granule: one
//! zeroed, physically contiguous chunk per granule, or a shmem file's pages
//! ([`Memory`]); a granule without memory is a hole (touching it is SIGSEGV). A device
//! region is the BAR2 of an ivshmem device: its size and memory are the device's, fixed,
//! and read-only when the VMM attached it so.
//!
//! A device region lives as long as its last user: the driver and each msharefs inode
//! made for it hold a reference ([`kernel::sync::Arc`]). When the device unbinds, the region
//! is *unplugged*: it keeps no memory (faults are SIGBUS, calls ENODEV, as on a DRM device
//! that went away) and every process's mapping of the device's memory is removed first.
//!
//! In mode B each granule with memory also has a shared PTE table ([`Tables`]) whose
//! entries follow the granule's memory and the region's protection: filled when the table
//! is made or the granule gets memory, cleared before the memory is freed, rewritten when
//! the protection changes. Whoever takes access away then unlinks the tables from every
//! process (`unmap_mapping_range`), which flushes their TLBs. Each GiB of the region that a
//! window of whole, aligned GiBs maps has a shared PMD table too ([`PmdTables`]), whose
//! entries (2 MiB leaves, or the PTE tables) follow the same rules.
//!
//! A window at a GiB-aligned offset may reach past the region's end to the next GiB
//! boundary (so that a region smaller than a GiB can share a PMD table): that part is a
//! hole, SIGSEGV, like any hole.

use crate::file_pages::{FilePages, MappedFile};
use crate::granule::Memory;
use crate::shared_table::{PmdEntry, PmdTables, Tables, PMD_TABLE_GRANULES, PMD_TABLE_REACH};
use crate::{granule_align, stats, GRANULE_PAGES, GRANULE_SIZE, MAX_REGION_SIZE};
use kernel::page::PAGE_SIZE;
use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{new_mutex, prelude::*, sync::Arc, sync::Mutex};

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

struct State {
    size: u64,
    /// The address every window maps the region at (the v1 API's `start`); 0 for anywhere.
    start: u64,
    /// Each granule's memory.
    memory: KVVec<Memory>,
    /// The shared PTE tables (mode B).
    tables: Tables,
    /// The shared PMD tables (mode B, windows of whole GiBs).
    pmd_tables: PmdTables,
    /// Processes may write (the region's protection, `MSHAREFS_SET_PROT`).
    writable: bool,
    /// The device behind a device region went away: nothing of it may be mapped again.
    unplugged: bool,
}

impl State {
    fn new(writable: bool) -> Self {
        Self {
            size: 0,
            start: 0,
            memory: KVVec::new(),
            tables: Tables::empty(),
            pmd_tables: PmdTables::empty(),
            writable,
            unplugged: false,
        }
    }

    /// Points granule `index`'s shared tables (its PTE table, and its entry in its GiB's
    /// PMD table) at its memory, with the region's protection. ENOMEM only when the
    /// granule needs a PTE table it has none of yet (a file's pages under a PMD table).
    fn sync(&mut self, index: usize) -> Result {
        let entry = self.prepare(index)?;
        self.publish(index, entry);
        Ok(())
    }

    /// What granule `index`'s entry in its GiB's PMD table must become (`None` without
    /// that PMD table), making its PTE table if it needs one it has none of yet (ENOMEM).
    /// Changes nothing a process can reach: a table made here is linked nowhere yet.
    fn prepare(&mut self, index: usize) -> Result<Option<PmdEntry>> {
        let Self { memory, tables, pmd_tables, writable, .. } = self;
        if pmd_tables.get(index / PMD_TABLE_GRANULES).is_none() {
            return Ok(None);
        }
        pmd_entry(&memory[index], tables, index, *writable).map(Some)
    }

    /// Points granule `index`'s shared tables at its memory: its PTE table, and its PMD
    /// table entry with `entry`, which [`State::prepare`] gave. Cannot fail.
    fn publish(&mut self, index: usize, entry: Option<PmdEntry>) {
        let Self { memory, tables, pmd_tables, writable, .. } = self;
        tables.map(index, memory[index].frames(), *writable);
        if let Some(entry) = entry {
            pmd_tables.set(index, entry, *writable);
        }
    }

    /// Takes granule `index`'s memory away, leaving a hole, and empties its shared tables
    /// (which allocates nothing, so cannot fail). Returns the memory taken.
    fn empty(&mut self, index: usize) -> Memory {
        let memory = core::mem::take(&mut self.memory[index]);
        let _ = self.sync(index);
        memory
    }
}

/// Granule `index`'s entry in its GiB's PMD table, from its `memory`, with its PTE table
/// (made if need be) where a 2 MiB leaf cannot map the memory.
fn pmd_entry(memory: &Memory, tables: &mut Tables, index: usize, writable: bool) -> Result<PmdEntry> {
    PmdEntry::for_frames(memory.frames(), |frames| tables.get_or_make(index, frames, writable))
}

/// How a window (one process's mapping of a region) maps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Window {
    /// Through the region's shared PTE tables (mode B): the window has the region's
    /// protection, whatever it changes to.
    Shared,
    /// Through the region's shared PMD tables too (mode B, a window of whole, aligned
    /// GiBs): no page table of its own below its PUD table, 2 MiB leaves where the memory
    /// allows.
    SharedPmd,
    /// With mappings of its own (mode C, and read-only windows of a writable region in
    /// mode B): its own faults and permissions.
    Private,
}

/// Where a region's memory comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Chunks this module allocates and frees (msharefs files): folios of `inode`'s mapping
    /// (0 in KUnit, where there is no file).
    Anonymous {
        /// The region's inode, whose mapping each chunk's folio carries.
        inode: usize,
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
#[pin_data(PinnedDrop)]
pub(crate) struct Region {
    #[pin]
    state: Mutex<State>,
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
    /// whose mappings unplugging removes. Taken before an inode's invalidate lock, which
    /// is taken before `state`.
    #[pin]
    inodes: Mutex<KVVec<usize>>,
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

/// The bytes a window may map of a region of `size` bytes at `offset`, for `len` bytes: up
/// to its end, or up to the next GiB boundary for a window of whole GiBs at a GiB-aligned
/// offset (the rest of the GiB a hole).
pub(crate) fn window_reach(size: u64, offset: u64, len: u64) -> u64 {
    let whole_gibs = offset % PMD_TABLE_REACH == 0 && len % PMD_TABLE_REACH == 0;
    if whole_gibs {
        gib_reach(size)
    } else {
        size
    }
}

/// A region of `size` bytes rounded up to whole GiBs: the most any window of it maps.
fn gib_reach(size: u64) -> u64 {
    size.next_multiple_of(PMD_TABLE_REACH)
}

/// Checks an mmap of a region of `size` bytes: shared only, the window granule aligned in
/// address and offset, and inside the region's reach ([`window_reach`]).
pub(crate) fn check_mapping(size: u64, start: u64, end: u64, offset: u64, shared: bool) -> Result {
    if !shared || size == 0 || start % GRANULE_SIZE != 0 || end <= start {
        return Err(EINVAL);
    }
    check_range(window_reach(size, offset, end - start), offset, end - start).map(|_| ())
}

/// Whether a window at `start` (address) and `offset` of `len` bytes can share PMD tables:
/// whole, aligned GiBs in both.
pub(crate) fn spans_pmd_tables(start: u64, offset: u64, len: u64) -> bool {
    (start | offset | len) % PMD_TABLE_REACH == 0 && len != 0
}

/// Where a window of `len` bytes goes when the kernel picks its address, given the free
/// range `[found, found + len + PMD_TABLE_REACH)` the glue found for it: granule aligned,
/// as THP placement would put it (a window's offset is whole granules, so this is the
/// congruence with the offset THP keeps), and across as few GiBs as its length allows,
/// `at % GiB + len` at most `len` rounded up to whole GiBs: a window of at most a GiB lies
/// inside one. Each GiB a window spans is one more PMD table of every sharer's own (in mode
/// B, the table the shared PTE tables are linked into).
///
/// The first granule boundary from `found` on, unless a window there would span one GiB
/// more than it must; then the first GiB boundary from `found` on, from which a window
/// spans exactly `len` rounded up to whole GiBs. Both keep the window inside the range:
/// each is at most `found + PMD_TABLE_REACH - 1` (a granule divides a GiB, so rounding
/// `found` up to either never passes the GiB boundary at or above it), so the window ends
/// before `found + len + PMD_TABLE_REACH`.
pub(crate) fn window_address(found: u64, len: u64) -> u64 {
    let at = found.next_multiple_of(GRANULE_SIZE);
    if at % PMD_TABLE_REACH + len <= len.next_multiple_of(PMD_TABLE_REACH) {
        at
    } else {
        found.next_multiple_of(PMD_TABLE_REACH)
    }
}

impl Region {
    /// An empty region of `inode` (0 for none): no size, no memory.
    pub(crate) fn new(inode: usize) -> impl PinInit<Self> {
        pin_init!(Self {
            state <- new_mutex!(State::new(true)),
            kind: Kind::Anonymous { inode },
            // Counted as the region is made in its memory (nothing after can fail), so
            // that every count has its drop.
            windows: {
                stats::region_made();
                AtomicU64::new(0)
            },
            faults: AtomicU64::new(0),
            links: AtomicU64::new(0),
            pmd_links: AtomicU64::new(0),
            inodes <- new_mutex!(KVVec::new()),
        })
    }

    /// A region over a device's memory: `size` bytes (whole granules) of page frames from
    /// `first_pfn` on, mapped for the kernel at `base` (0: not mapped).
    pub(crate) fn device(
        size: u64,
        first_pfn: usize,
        read_only: bool,
        base: usize,
    ) -> Result<impl PinInit<Self, Error>> {
        if size == 0 || size % GRANULE_SIZE != 0 {
            return Err(EINVAL);
        }
        let granules = usize::try_from(size / GRANULE_SIZE).map_err(|_| EINVAL)?;
        let mut memory = KVVec::with_capacity(granules, GFP_KERNEL)?;
        for i in 0..granules {
            memory.push(Memory::device(first_pfn + i * GRANULE_PAGES), GFP_KERNEL)?;
        }
        let tables = Tables::new(granules, true)?;
        let pmd_tables = PmdTables::new(granules, true)?;
        Ok(try_pin_init!(Self {
            state <- new_mutex!(State {
                size,
                start: 0,
                memory,
                tables,
                pmd_tables,
                writable: !read_only,
                unplugged: false,
            }),
            kind: Kind::Device { read_only, base },
            // As in `new`: counted once the region is made.
            windows: {
                stats::region_made();
                AtomicU64::new(0)
            },
            faults: AtomicU64::new(0),
            links: AtomicU64::new(0),
            pmd_links: AtomicU64::new(0),
            inodes <- new_mutex!(KVVec::new()),
        }? Error))
    }

    /// An msharefs inode now shows this device region.
    pub(crate) fn inode_attached(&self, inode: usize) -> Result {
        self.inodes.lock().push(inode, GFP_KERNEL)?;
        Ok(())
    }

    /// An inode of this device region was evicted.
    pub(crate) fn inode_evicted(&self, inode: usize) {
        self.inodes.lock().retain(|x| *x != inode);
    }

    /// Calls `f` with each inode showing this device region, with no inode evicted
    /// meanwhile.
    pub(crate) fn for_each_inode(&self, mut f: impl FnMut(usize)) {
        self.inodes.lock().iter().for_each(|&inode| f(inode));
    }

    /// The device went away: the region keeps no memory, its shared tables are emptied.
    /// As with [`Region::take`], the caller then removes every mapping of it.
    pub(crate) fn unplug(&self) {
        let mut state = self.state.lock();
        state.unplugged = true;
        for i in 0..state.memory.len() {
            drop(state.empty(i));
        }
    }

    /// ENODEV once the device behind the region went away.
    pub(crate) fn check_present(&self) -> Result {
        if self.state.lock().unplugged {
            return Err(ENODEV);
        }
        Ok(())
    }

    /// Calls `copy(address, at, len)` for each piece of `[offset, offset + len)` that is
    /// contiguous in the kernel's view (a granule of a chunk or a device, a page of a
    /// file), with the piece's kernel address (`None`: a hole), under the state lock. The
    /// range must be inside the region.
    fn each_piece(&self, offset: u64, len: usize, mut copy: impl FnMut(Option<*mut u8>, usize, usize)) -> Result {
        let state = self.state.lock();
        if state.unplugged {
            return Err(ENODEV);
        }
        let end = offset.checked_add(len as u64).ok_or(EINVAL)?;
        if end > state.size {
            return Err(EINVAL);
        }
        let mut done = 0;
        while done < len {
            let at = offset + done as u64;
            let (index, within) = ((at / GRANULE_SIZE) as usize, (at % GRANULE_SIZE) as usize);
            let device_base = match self.kind {
                Kind::Device { base, .. } if base != 0 => Some(base + index * GRANULE_SIZE as usize),
                _ => None,
            };
            let piece = state.memory.get(index).and_then(|memory| memory.address(within, device_base));
            let n = (len - done).min(piece.map_or(GRANULE_SIZE as usize - within, |(_, room)| room));
            // SAFETY (for the callers' copies): the address has `room >= n` bytes of the
            // granule's memory, alive while the state lock is held.
            copy(piece.map(|(address, _)| address), done, n);
            done += n;
        }
        Ok(())
    }

    /// Copies `out.len()` bytes from `offset` (inside the region) into `out`; a hole reads
    /// as zeros. The caller holds the region's invalidate lock shared, so no chunk is freed
    /// meanwhile.
    pub(crate) fn read_at(&self, offset: u64, out: &mut [u8]) -> Result {
        self.each_piece(offset, out.len(), |address, done, n| match address {
            // SAFETY: `address` has `n` readable bytes (see `each_piece`), kept alive by the
            // state lock and the caller's invalidate lock; `out[done..done + n]` is ours.
            // Processes writing through their mappings meanwhile only mix old and new bytes.
            Some(address) => unsafe { core::ptr::copy_nonoverlapping(address, out[done..].as_mut_ptr(), n) },
            None => out[done..done + n].fill(0),
        })
    }

    /// Copies `data` to `offset` (inside the region): EIO if any of it falls in a hole
    /// (a write gives no memory: nothing is written then), EACCES while the region is
    /// read-only (`SET_PROT`), EPERM on a device attached read-only. The caller holds the
    /// invalidate lock shared, as for [`Region::read_at`].
    pub(crate) fn write_at(&self, offset: u64, data: &[u8]) -> Result {
        if self.read_only() {
            return Err(EPERM);
        }
        if !self.writable() {
            return Err(EACCES);
        }
        let mut hole = false;
        self.each_piece(offset, data.len(), |address, _, _| hole |= address.is_none())?;
        if hole {
            return Err(EIO);
        }
        self.each_piece(offset, data.len(), |address, done, n| {
            if let Some(address) = address {
                // SAFETY: as in `read_at`, `address` has `n` writable bytes.
                unsafe { core::ptr::copy_nonoverlapping(data[done..].as_ptr(), address, n) };
            }
        })
    }

    /// Whether processes may never write (the VMM attached it read-only).
    pub(crate) fn read_only(&self) -> bool {
        matches!(self.kind, Kind::Device { read_only: true, .. })
    }

    /// The size in bytes, 0 until set.
    pub(crate) fn size(&self) -> u64 {
        self.state.lock().size
    }

    /// The address every window maps the region at; 0 for anywhere.
    pub(crate) fn start(&self) -> u64 {
        self.state.lock().start
    }

    /// Sets the size (once; a device region's is the device's) and, with `start`, the
    /// address windows map it at (v1's `MSHAREFS_SET_SIZE`; once, like the size). A start
    /// must be granule aligned and leave the region below `user_end`.
    pub(crate) fn set_size(&self, requested: u64, start: Option<u64>, user_end: u64) -> Result<u64> {
        let mut state = self.state.lock();
        if !self.has_pages() && requested != state.size {
            return Err(EINVAL);
        }
        let size = check_new_size(state.size, requested)?;
        if let Some(start) = start {
            check_start(start, size, user_end)?;
            if state.size != 0 && start != state.start {
                return Err(EINVAL);
            }
        }
        if state.size == 0 {
            let granules = usize::try_from(size / GRANULE_SIZE).map_err(|_| EINVAL)?;
            // Charged to the caller's memory cgroup, like the memory itself: a huge size
            // costs its metadata before any memory.
            let mut memory = KVVec::with_capacity(granules, GFP_KERNEL_ACCOUNT)?;
            for _ in 0..granules {
                memory.push(Memory::Hole, GFP_KERNEL_ACCOUNT)?;
            }
            state.tables = Tables::new(granules, false)?;
            state.pmd_tables = PmdTables::new(granules, false)?;
            state.memory = memory;
            state.size = size;
            state.start = start.unwrap_or(0);
        }
        Ok(size)
    }

    /// Gives memory to `[offset, offset + len)`: every granule of it must be a hole.
    pub(crate) fn create_mapping(&self, offset: u64, len: u64) -> Result {
        let Kind::Anonymous { inode } = self.kind else {
            return Err(EINVAL);
        };
        self.fill(offset, len, |i| Memory::allocate(inode as *mut c_void, i * GRANULE_PAGES))
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
        let mut state = self.state.lock();
        let granules = check_range(state.size, offset, len)?;
        if state.memory[granules.clone()].iter().any(|memory| !memory.is_hole()) {
            return Err(EINVAL);
        }
        for i in granules.clone() {
            match make(i) {
                Ok(memory) => state.memory[i] = memory,
                Err(e) => {
                    // Give back what this call took.
                    for j in granules.start..i {
                        drop(state.empty(j));
                    }
                    return Err(e);
                }
            }
        }
        // A granule that had memory before keeps its tables, maybe still linked: no fault
        // would fill them, so they are pointed at the new memory here. Everything that can
        // fail is done before the first of them changes: a process that reached the new
        // memory of one granule might hold it in its TLB, and taking it back then would
        // need the zap and flush of `take`.
        let prepared = (|| -> Result<KVVec<Option<PmdEntry>>> {
            let mut entries = KVVec::with_capacity(granules.len(), GFP_KERNEL)?;
            for i in granules.clone() {
                entries.push(state.prepare(i)?, GFP_KERNEL)?;
            }
            Ok(entries)
        })();
        match prepared {
            Ok(entries) => {
                for (i, entry) in granules.zip(entries) {
                    state.publish(i, entry);
                }
                Ok(())
            }
            Err(e) => {
                for j in granules {
                    drop(state.empty(j));
                }
                Err(e)
            }
        }
    }

    /// Takes the memory of `[offset, offset + len)` away, leaving holes, and empties its
    /// shared tables. The caller then removes every mapping of the range (which flushes
    /// the TLBs) before it frees what this returns, all under the region's invalidate
    /// lock: a process that links a table after the zap finds it empty.
    pub(crate) fn take(&self, offset: u64, len: u64) -> Result<Taken> {
        if !self.has_pages() {
            return Err(EINVAL);
        }
        let mut state = self.state.lock();
        let granules = check_range(state.size, offset, len)?;
        let mut taken = KVVec::with_capacity(granules.len(), GFP_KERNEL)?;
        for i in granules {
            taken.push(state.empty(i), GFP_KERNEL)?;
        }
        drop(state);
        // A mode C fault that found the memory before it was taken maps it after
        // returning, with its folio locked: wait for it, so that the caller's zap finds
        // its mapping.
        taken.iter().for_each(Memory::settle);
        Ok(Taken { _memory: taken })
    }

    /// Sets the region's protection and rewrites its shared tables to match. Like `take`,
    /// taking write access away is complete once the caller has unlinked every process.
    pub(crate) fn set_writable(&self, writable: bool) -> Result {
        if writable && self.read_only() {
            return Err(EACCES);
        }
        let mut state = self.state.lock();
        state.writable = writable;
        for i in 0..state.memory.len() {
            // Every granule with memory under a PMD table got its PTE table, if it needs
            // one, when the PMD table was made: this allocates nothing.
            state.sync(i)?;
        }
        Ok(())
    }

    /// Whether the region's memory is folios of its own (not a device's page frames).
    pub(crate) fn has_pages(&self) -> bool {
        matches!(self.kind, Kind::Anonymous { .. })
    }

    /// Whether processes may write now.
    pub(crate) fn writable(&self) -> bool {
        self.state.lock().writable
    }

    /// How a new window that asks for write access (`write`) or not maps the region, or
    /// why it may not: EACCES for write access to a region that does not allow it, ENODEV
    /// once its device went away. A shared window also shares PMD tables when
    /// `pmd_tables` (it spans whole, aligned GiBs: [`spans_pmd_tables`]).
    pub(crate) fn window(&self, write: bool, pmd_tables: bool) -> Result<Window> {
        self.check_present()?;
        let writable = self.writable();
        if write && !writable {
            return Err(EACCES);
        }
        // A shared table carries the region's protection, so only windows asking for all
        // of it share: read-only windows of a writable region keep their own mappings.
        if stats::shared_tables() && write != self.read_only() {
            Ok(if pmd_tables { Window::SharedPmd } else { Window::Shared })
        } else {
            Ok(Window::Private)
        }
    }

    /// The shared table of the granule holding page `pgoff`, made on first use; null for
    /// a hole (the fault then finds nothing and gives SIGSEGV); ENODEV (SIGBUS) once the
    /// device went away.
    pub(crate) fn table(&self, pgoff: usize) -> Result<*mut c_void> {
        let mut state = self.state.lock();
        if state.unplugged {
            return Err(ENODEV);
        }
        let index = pgoff / GRANULE_PAGES;
        let State { memory, tables, writable, .. } = &mut *state;
        let Some(frames) = memory.get(index).ok_or(EINVAL)?.frames() else {
            return Ok(core::ptr::null_mut());
        };
        let table = tables.get_or_make(index, frames, *writable)?;
        self.links.fetch_add(1, Ordering::Relaxed);
        stats::table_linked();
        Ok(table)
    }

    /// The shared PMD table of the GiB holding page `pgoff`, made on first use with an
    /// entry for each granule (and a PTE table for each granule a leaf cannot map); never
    /// null (a GiB of holes, or past the region's end, has a table of empty entries);
    /// ENODEV (SIGBUS) once the device went away.
    pub(crate) fn pmd_table(&self, pgoff: usize) -> Result<*mut c_void> {
        let mut state = self.state.lock();
        if state.unplugged {
            return Err(ENODEV);
        }
        let index = pgoff / (GRANULE_PAGES * PMD_TABLE_GRANULES);
        let State { memory, tables, pmd_tables, writable, .. } = &mut *state;
        let granules = memory.len();
        let table = pmd_tables.get_or_make(index, granules, *writable, |granule| {
            pmd_entry(&memory[granule], tables, granule, *writable)
        })?;
        self.pmd_links.fetch_add(1, Ordering::Relaxed);
        stats::pmd_table_linked();
        Ok(table)
    }

    /// Granule `index`'s entry in its shared PMD table (tests).
    pub(crate) fn pmd_table_entry(&self, index: usize) -> Option<(PmdEntry, bool)> {
        self.state.lock().pmd_tables.entry(index)
    }

    /// Entry `page` of granule `index`'s shared table (tests).
    pub(crate) fn table_entry(&self, index: usize, page: usize) -> Option<(usize, bool)> {
        self.state.lock().tables.entry(index, page)
    }

    /// What backs page `pgoff` of the region: nothing (SIGBUS) once its device went away.
    pub(crate) fn page(&self, pgoff: usize) -> Page {
        let state = self.state.lock();
        let reach = gib_reach(state.size) / PAGE_SIZE as u64;
        match state.memory.get(pgoff / GRANULE_PAGES) {
            _ if state.unplugged => Page::Outside,
            Some(memory) => memory.frame(pgoff % GRANULE_PAGES).map_or(Page::Hole, Page::Frame),
            // The rest of the last GiB, which a window of whole GiBs maps.
            None if (pgoff as u64) < reach => Page::Hole,
            None => Page::Outside,
        }
    }

    /// A fault mapped memory of the region into one process (mode C).
    pub(crate) fn fault_mapped(&self) {
        self.faults.fetch_add(1, Ordering::Relaxed);
        stats::fault();
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
        let state = self.state.lock();
        let backed = state.memory.iter().filter(|memory| !memory.is_hole()).count() as u64 * GRANULE_SIZE;
        let file_backed = state.memory.iter().filter(|memory| memory.is_file()).count() as u64 * GRANULE_SIZE;
        let huge_leaves = (0..state.memory.len())
            .filter(|&i| matches!(state.pmd_tables.entry(i), Some((PmdEntry::Leaf(_), _))))
            .count() as u64;
        Stats {
            windows: self.windows.load(Ordering::Relaxed),
            faults: self.faults.load(Ordering::Relaxed),
            backed,
            tables: state.tables.count() as u64,
            links: self.links.load(Ordering::Relaxed),
            pmd_tables: state.pmd_tables.count() as u64,
            pmd_links: self.pmd_links.load(Ordering::Relaxed),
            huge_leaf_bytes: huge_leaves * GRANULE_SIZE,
            file_backed,
        }
    }
}

/// Memory taken from a region by [`Region::take`], freed (or unpinned) when dropped.
pub(crate) struct Taken {
    _memory: KVVec<Memory>,
}

#[pinned_drop]
impl PinnedDrop for Region {
    fn drop(self: Pin<&mut Self>) {
        stats::region_dropped();
        // No mapping outlives the region (every VMA of it holds the region's file): its
        // memory goes with `state`.
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
        // whole GiBs at a GiB-aligned offset reach the end of the region's last GiB
        let gib = PMD_TABLE_REACH;
        assert_eq!(check_mapping(4 * g, gib, 2 * gib, 0, true), Ok(()));
        assert_eq!(check_mapping(4 * g, gib, 3 * gib, 0, true), Err(EINVAL));
        assert_eq!(check_mapping(gib + 4 * g, gib, 3 * gib, 0, true), Ok(()));
        assert_eq!(check_mapping(gib + 4 * g, gib, 2 * gib, gib, true), Ok(()));
        assert_eq!(check_mapping(4 * g, gib, 2 * gib - g, 0, true), Err(EINVAL));
        // no size yet
        assert_eq!(check_mapping(0, 8 * g, 9 * g, 0, true), Err(EINVAL));
    }

    #[test]
    fn only_whole_aligned_gibs_share_pmd_tables() {
        let (g, gib) = (GRANULE_SIZE, PMD_TABLE_REACH);
        assert!(spans_pmd_tables(gib, 0, gib));
        assert!(spans_pmd_tables(4 * gib, gib, 2 * gib));
        assert!(!spans_pmd_tables(gib + g, 0, gib));
        assert!(!spans_pmd_tables(gib, g, gib));
        assert!(!spans_pmd_tables(gib, 0, gib - g));
        assert!(!spans_pmd_tables(0, 0, 0));
        assert_eq!(window_reach(4 * g, 0, gib), gib);
        assert_eq!(window_reach(4 * g, 0, 4 * g), 4 * g);
        assert_eq!(window_reach(gib, 0, gib), gib);
    }

    #[test]
    fn a_window_the_kernel_places_spans_the_fewest_gibs() {
        let (g, gib, page) = (GRANULE_SIZE, PMD_TABLE_REACH, PAGE_SIZE as u64);
        let mib = 1u64 << 20;
        // 256 MiB: up to the next granule where it fits before the GiB boundary...
        assert_eq!(window_address(gib + page, 256 * mib), gib + g);
        assert_eq!(window_address(2 * gib - 256 * mib, 256 * mib), 2 * gib - 256 * mib);
        // ...and on to the boundary where it would cross it
        assert_eq!(window_address(2 * gib - 256 * mib + page, 256 * mib), 2 * gib);
        assert_eq!(window_address(2 * gib - 128 * mib, 256 * mib), 2 * gib);
        // a GiB only at a GiB boundary; more than a GiB across no more GiBs than it must
        assert_eq!(window_address(gib, gib), gib);
        assert_eq!(window_address(gib + page, gib), 2 * gib);
        assert_eq!(window_address(gib + gib / 2, gib + gib / 2), gib + gib / 2);
        assert_eq!(window_address(gib + gib / 2 + page, gib + gib / 2), 2 * gib);
        assert_eq!(window_address(gib + page, 3 * gib), 2 * gib);
        // Everywhere: granule aligned, inside the free range, across the fewest GiBs, and
        // moved only when the granule boundary would cross one too many.
        for len in [g, 256 * mib, gib - g, gib, gib + g, 3 * gib / 2, 3 * gib] {
            let mut found = 0;
            while found < 3 * gib {
                let at = window_address(found, len);
                assert_eq!(at % g, 0);
                assert!(at >= found && at + len <= found + len + gib);
                assert!(at % gib + len <= len.next_multiple_of(gib));
                if found.next_multiple_of(g) != at {
                    assert_eq!(at % gib, 0);
                }
                found += 37 * mib + page;
            }
        }
    }

    /// An unplugged device region maps nothing: faults find nothing (SIGBUS), new windows
    /// and tables are ENODEV. The page frames are made up: nothing here touches them.
    #[test]
    fn an_unplugged_device_region_maps_nothing() {
        let g = GRANULE_SIZE;
        let init = Region::device(2 * g, 0x40000, false, 0).expect("device region");
        let region = KBox::pin_init(init, GFP_KERNEL).expect("region");
        assert_eq!(region.page(GRANULE_PAGES + 3), Page::Frame(0x40000 + GRANULE_PAGES + 3));
        assert_eq!(region.check_present(), Ok(()));
        region.unplug();
        assert_eq!(region.page(GRANULE_PAGES + 3), Page::Outside);
        assert_eq!(region.page(0), Page::Outside);
        assert_eq!(region.table(0).err(), Some(ENODEV));
        assert_eq!(region.window(false, false).err(), Some(ENODEV));
        assert_eq!(region.pmd_table(0).err(), Some(ENODEV));
        assert_eq!(region.check_present(), Err(ENODEV));
        assert_eq!(region.stats().backed, 0);
    }

    /// A region of 4 granules with memory in the first two, or `None` (the test skipped) on
    /// a kernel that cannot share page tables.
    fn region_with_two_granules() -> Option<Pin<KBox<Region>>> {
        if !crate::shared_table::kernel_shares_tables() {
            crate::kunit_skip(c"this kernel cannot share page tables (no CONFIG_SHARED_PGTABLE)");
            return None;
        }
        let g = GRANULE_SIZE;
        let region = KBox::pin_init(Region::new(0), GFP_KERNEL).expect("region");
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

        assert_eq!(region.set_writable(false), Ok(()));
        assert_eq!(region.table_entry(1, 7), Some((pfn, false)));
        assert_eq!(region.window(true, false), Err(EACCES));
        assert_eq!(region.set_writable(true), Ok(()));
        assert_eq!(region.table_entry(1, 7), Some((pfn, true)));

        let taken = region.take(g, g).expect("take");
        assert_eq!(region.table_entry(1, 7), None);
        drop(taken);
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

        assert_eq!(region.set_writable(false), Ok(()));
        assert_eq!(region.pmd_table_entry(1), Some((PmdEntry::Leaf(first), false)));
        assert_eq!(region.set_writable(true), Ok(()));

        let taken = region.take(g, g).expect("take");
        assert_eq!(region.pmd_table_entry(1), None);
        drop(taken);
        assert_eq!(region.create_mapping(g, 3 * g), Ok(()));
        let Page::Frame(again) = region.page(GRANULE_PAGES) else { panic!("no memory after CREATE_MAPPING") };
        assert_eq!(region.pmd_table_entry(1), Some((PmdEntry::Leaf(again), true)));
        assert!(matches!(region.pmd_table_entry(3), Some((PmdEntry::Leaf(_), true))));
        assert_eq!(region.stats().huge_leaf_bytes, 4 * g);
    }
}
