// SPDX-License-Identifier: GPL-2.0

//! A region: its size (set once, whole granules) and its memory. An anonymous region's
//! memory is what `CREATE_MAPPING` fills and `UNMAP` empties granule by granule: one
//! zeroed, physically contiguous chunk per granule; a granule without one is a hole
//! (touching it is SIGSEGV). A device region is the BAR2 of an ivshmem device: its size
//! and memory are the device's, fixed, and read-only when the VMM attached it so.

use crate::{granule_align, GRANULE_SHIFT, GRANULE_SIZE};
use core::ffi::c_uint;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{new_mutex, prelude::*, sync::Mutex};

extern "C" {
    fn msharefs_alloc_chunk(order: c_uint) -> usize;
    fn msharefs_free_chunk(pfn: usize, order: c_uint);
}

const PAGE_SHIFT: u32 = 12;
/// Pages per granule.
pub(crate) const GRANULE_PAGES: usize = 1 << (GRANULE_SHIFT - PAGE_SHIFT);
const CHUNK_ORDER: c_uint = GRANULE_SHIFT - PAGE_SHIFT;

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

#[derive(Default)]
struct State {
    size: u64,
    /// First page frame of each granule's chunk; 0 for a hole.
    chunks: KVec<usize>,
}

/// Where a region's memory comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Chunks this module allocates and frees (msharefs files).
    Anonymous,
    /// A device's memory (an ivshmem BAR2): never freed here, its size fixed.
    Device {
        /// The VMM attached it read-only.
        read_only: bool,
    },
}

/// One msharefs region.
#[pin_data(PinnedDrop)]
pub(crate) struct Region {
    #[pin]
    state: Mutex<State>,
    kind: Kind,
    /// Mapped windows (VMAs) of the region in all processes.
    windows: AtomicU64,
    /// Faults that mapped memory of the region.
    faults: AtomicU64,
}

/// How a region is used (`MSHAREFS_GET_STATS`).
pub(crate) struct Stats {
    /// Mapped windows.
    pub(crate) windows: u64,
    /// Faults served.
    pub(crate) faults: u64,
    /// Bytes with memory.
    pub(crate) backed: u64,
}

/// Checks a size request against the region's current size: a region's size is set once,
/// to a whole number of granules; setting the same size again is allowed.
pub(crate) fn check_new_size(current: u64, requested: u64) -> Result<u64> {
    if granule_align(requested)? != requested {
        return Err(EINVAL);
    }
    if current != 0 && current != requested {
        return Err(EINVAL);
    }
    Ok(requested)
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

/// Checks an mmap of a region of `size` bytes: shared only, the window granule aligned in
/// address and offset, and inside the region.
pub(crate) fn check_mapping(size: u64, start: u64, end: u64, offset: u64, shared: bool) -> Result {
    if !shared || size == 0 || start % GRANULE_SIZE != 0 || end <= start {
        return Err(EINVAL);
    }
    check_range(size, offset, end - start).map(|_| ())
}

impl Region {
    /// An empty region: no size, no memory.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            state <- new_mutex!(State::default()),
            kind: Kind::Anonymous,
            windows: AtomicU64::new(0),
            faults: AtomicU64::new(0),
        })
    }

    /// A region over a device's memory: `size` bytes (whole granules) of page frames from
    /// `first_pfn` on.
    pub(crate) fn device(size: u64, first_pfn: usize, read_only: bool) -> Result<impl PinInit<Self, Error>> {
        if size == 0 || size % GRANULE_SIZE != 0 {
            return Err(EINVAL);
        }
        let granules = usize::try_from(size / GRANULE_SIZE).map_err(|_| EINVAL)?;
        let mut chunks = KVec::with_capacity(granules, GFP_KERNEL)?;
        for i in 0..granules {
            chunks.push(first_pfn + i * GRANULE_PAGES, GFP_KERNEL)?;
        }
        Ok(try_pin_init!(Self {
            state <- new_mutex!(State { size, chunks }),
            kind: Kind::Device { read_only },
            windows: AtomicU64::new(0),
            faults: AtomicU64::new(0),
        }? Error))
    }

    /// Whether processes may only map it read-only.
    pub(crate) fn read_only(&self) -> bool {
        self.kind == Kind::Device { read_only: true }
    }

    /// The size in bytes, 0 until set.
    pub(crate) fn size(&self) -> u64 {
        self.state.lock().size
    }

    /// Sets the size (once; a device region's is the device's).
    pub(crate) fn set_size(&self, requested: u64) -> Result<u64> {
        let mut state = self.state.lock();
        if self.kind != Kind::Anonymous && requested != state.size {
            return Err(EINVAL);
        }
        let size = check_new_size(state.size, requested)?;
        if state.size == 0 {
            let granules = usize::try_from(size / GRANULE_SIZE).map_err(|_| EINVAL)?;
            let mut chunks = KVec::with_capacity(granules, GFP_KERNEL)?;
            for _ in 0..granules {
                chunks.push(0, GFP_KERNEL)?;
            }
            state.chunks = chunks;
            state.size = size;
        }
        Ok(size)
    }

    /// Gives memory to `[offset, offset + len)`: every granule of it must be a hole.
    pub(crate) fn create_mapping(&self, offset: u64, len: u64) -> Result {
        if self.kind != Kind::Anonymous {
            return Err(EINVAL);
        }
        let mut state = self.state.lock();
        let granules = check_range(state.size, offset, len)?;
        if state.chunks[granules.clone()].iter().any(|&pfn| pfn != 0) {
            return Err(EINVAL);
        }
        for i in granules.clone() {
            // SAFETY: plain allocation call into the C glue.
            let pfn = unsafe { msharefs_alloc_chunk(CHUNK_ORDER) };
            if pfn == 0 {
                // Give back what this call took: the range is all holes again.
                for j in granules.start..i {
                    free_chunk(core::mem::take(&mut state.chunks[j]));
                }
                return Err(ENOMEM);
            }
            state.chunks[i] = pfn;
        }
        Ok(())
    }

    /// Checks an unmap request without changing anything.
    pub(crate) fn check_unmap(&self, offset: u64, len: u64) -> Result {
        if self.kind != Kind::Anonymous {
            return Err(EINVAL);
        }
        check_range(self.state.lock().size, offset, len).map(|_| ())
    }

    /// Takes the memory of `[offset, offset + len)` away, leaving holes. The caller has
    /// removed every mapping of the range first, under the region's invalidate lock.
    pub(crate) fn unmap(&self, offset: u64, len: u64) -> Result {
        let mut state = self.state.lock();
        let granules = check_range(state.size, offset, len)?;
        for i in granules {
            free_chunk(core::mem::take(&mut state.chunks[i]));
        }
        Ok(())
    }

    /// What backs page `pgoff` of the region, for a fault (counted when it finds memory).
    pub(crate) fn page(&self, pgoff: usize) -> Page {
        let state = self.state.lock();
        match state.chunks.get(pgoff / GRANULE_PAGES) {
            Some(0) => Page::Hole,
            Some(pfn) => {
                self.faults.fetch_add(1, Ordering::Relaxed);
                Page::Frame(pfn + pgoff % GRANULE_PAGES)
            }
            None => Page::Outside,
        }
    }

    /// A window of the region was mapped (mmap, or a fork copying it).
    pub(crate) fn window_opened(&self) {
        self.windows.fetch_add(1, Ordering::Relaxed);
    }

    /// A window of the region went away.
    pub(crate) fn window_closed(&self) {
        self.windows.fetch_sub(1, Ordering::Relaxed);
    }

    /// Current statistics.
    pub(crate) fn stats(&self) -> Stats {
        let backed = self.state.lock().chunks.iter().filter(|&&pfn| pfn != 0).count() as u64 * GRANULE_SIZE;
        Stats { windows: self.windows.load(Ordering::Relaxed), faults: self.faults.load(Ordering::Relaxed), backed }
    }
}

fn free_chunk(pfn: usize) {
    if pfn != 0 {
        // SAFETY: `pfn` is a chunk of this order from `msharefs_alloc_chunk`, freed once:
        // callers take it out of the region's table first.
        unsafe { msharefs_free_chunk(pfn, CHUNK_ORDER) };
    }
}

#[pinned_drop]
impl PinnedDrop for Region {
    fn drop(self: Pin<&mut Self>) {
        if self.kind != Kind::Anonymous {
            return;
        }
        // No mapping outlives the region: every VMA of it holds the region's file.
        let mut state = self.state.lock();
        for pfn in state.chunks.iter_mut() {
            free_chunk(core::mem::take(pfn));
        }
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
    }
}
