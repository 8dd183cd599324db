// SPDX-License-Identifier: GPL-2.0

//! A window: one process's mapping of a region (a VMA). Where it may go, where it goes
//! and what it may cover (`get_unmapped_area` and `mmap` hand all three to Rust before
//! anything of the caller's is unmapped; the glue only runs the core's searches for free
//! room, [`AddressSpace`]), how it maps the region (through shared PTE or PMD tables, or
//! with mappings of its own: [`Window`], which [`Region::window`] picks), and the count of
//! windows the statistics show. A fault in a window is the region's ([`Region::fault`]).

use crate::msharefs_api::Api;
use crate::region::{check_range, Region};
use crate::shared_table::PMD_TABLE_REACH;
use crate::GRANULE_SIZE;
use core::ffi::{c_int, c_long, c_ulong};
use kernel::bindings;
use kernel::error::to_result;
use kernel::mm::virt::{flags as vm_flags, VmaNew};
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;

// Typed pointers to C structs (bindgen's layouts, which improper_ctypes flags for a
// zero-length array deep inside) and to `Region` (which C never reads, only passes back):
// only the pointers cross.
#[allow(improper_ctypes)]
extern "C" {
    fn msharefs_task_size() -> c_ulong;
    fn msharefs_first_fit_area(file: *mut bindings::file, len: c_ulong, pgoff: c_ulong, flags: c_ulong) -> c_ulong;
    fn msharefs_thp_area(
        file: *mut bindings::file,
        addr: c_ulong,
        len: c_ulong,
        pgoff: c_ulong,
        flags: c_ulong,
    ) -> c_ulong;
    fn msharefs_range_free(start: c_ulong, len: c_ulong) -> bool;
    fn msharefs_vma_set_pfnmap(vma: *mut bindings::vm_area_struct);
    fn msharefs_vma_set_ops(vma: *mut bindings::vm_area_struct, ops: WindowOps, region: *const Region) -> c_int;
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
pub(crate) fn gib_reach(size: u64) -> u64 {
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

/// Where a window of `len` bytes at page `pgoff` of the region goes, decided before mmap
/// unmaps anything of the caller's (a refusal later, in `->mmap`, would come after a
/// `MAP_FIXED` call had already cleared what was at `addr`): the region's start plus the
/// offset for a v1 region with a start (`addr`, with `MAP_FIXED` or as a hint, must be that
/// or 0), 0 for anywhere; EINVAL for a window that cannot be (private, outside the region's
/// reach, unaligned, not the whole region under v3, `MAP_FIXED` elsewhere than the start),
/// ENODEV once the device went away. Under v3 the whole region may also be mapped with its
/// size rounded up to whole GiBs, to share PMD tables.
fn place(region: &Region, api: Api, addr: u64, len: u64, pgoff: u64, fixed: bool, shared: bool) -> Result<u64> {
    region.check_present()?;
    let offset = pgoff.checked_mul(PAGE_SIZE as u64).ok_or(EINVAL)?;
    let size = region.size();
    if !shared || size == 0 {
        return Err(EINVAL);
    }
    let reach = window_reach(size, offset, len);
    check_range(reach, offset, len)?;
    if api == Api::V3 && (offset != 0 || len != size && len != reach) {
        return Err(EINVAL);
    }
    let start = region.start();
    if start == 0 {
        if fixed && addr % GRANULE_SIZE != 0 {
            return Err(EINVAL);
        }
        return Ok(0);
    }
    let at = start.checked_add(offset).filter(|at| *at <= i64::MAX as u64).ok_or(EINVAL)?;
    if addr != 0 && addr != at || fixed && addr != at {
        return Err(EINVAL);
    }
    Ok(at)
}

/// The core's searches for room in the caller's address space, which placing a window ends
/// with and 7.3's Rust cannot call (the caller holds its mmap lock, so what they find free
/// stays free until the window is mapped).
pub(crate) trait AddressSpace {
    /// The end of the caller's address space (`TASK_SIZE`: lower for a 32-bit task).
    fn task_size(&self) -> u64;
    /// The core's first fit for `len` bytes of the file (`mm_get_unmapped_area`, no hint).
    fn first_fit(&self, len: u64) -> Result<u64>;
    /// Where THP would put `len` bytes of the file, near `hint` unless it is 0.
    fn thp_area(&self, hint: u64, len: u64) -> Result<u64>;
    /// Whether nothing of the caller's is mapped in `[start, start + len)`.
    fn range_free(&self, start: u64, len: u64) -> bool;
}

/// Where a window of `len` bytes at byte `offset` of the region goes, once [`place`] said
/// where it may (`placed`, 0 for anywhere).
///
/// With `MAP_FIXED`, at `addr`, which [`place`] allowed. At a region's start (v1), there
/// if the range is inside the caller's address space and free: the call must not unmap
/// what is there. With a hint and no start, where THP would put it. Anywhere else, the
/// kernel picks, in the first fit for the window and a GiB more: a GiB-aligned address
/// for whole GiBs at a GiB-aligned offset, where it can share the region's PMD tables
/// (ENOMEM without such a fit); else [`window_address`], across the fewest GiBs (in mode
/// B each GiB of a window is a PMD table of every sharer's own, under which the shared
/// PTE tables are linked, so a window across a GiB boundary costs each sharer twice), or
/// where THP would put it when there is no such fit.
fn address(placed: u64, addr: u64, len: u64, offset: u64, fixed: bool, mm: &impl AddressSpace) -> Result<u64> {
    if fixed {
        return Ok(addr);
    }
    if placed != 0 {
        let end = mm.task_size();
        if len > end || placed > end - len || !mm.range_free(placed, len) {
            return Err(ENOMEM);
        }
        return Ok(placed);
    }
    if addr != 0 {
        return mm.thp_area(addr, len);
    }
    let gib = PMD_TABLE_REACH;
    let room = if len <= mm.task_size().saturating_sub(gib) { Some(mm.first_fit(len + gib)) } else { None };
    if (len | offset) % gib == 0 {
        return match room {
            Some(found) => found.map(|found| found.next_multiple_of(gib)),
            None => Err(ENOMEM),
        };
    }
    match room {
        Some(Ok(found)) => Ok(window_address(found, len)),
        _ => mm.thp_area(0, len),
    }
}

/// [`AddressSpace`] through the glue, for the file being mapped at page `pgoff` with
/// mmap's `flags` (the core's, handed back as they came).
///
/// # Invariants
///
/// `file` is the file being mapped, by the current task, which holds its mmap lock.
struct CoreAddressSpace {
    file: *mut bindings::file,
    pgoff: c_ulong,
    flags: c_ulong,
}

/// An address or, as `IS_ERR_VALUE()` tells, a negative errno.
fn area(value: c_ulong) -> Result<u64> {
    let errno = value as c_long;
    if (-c_long::from(bindings::MAX_ERRNO)..0).contains(&errno) {
        Err(Error::from_errno(errno as c_int))
    } else {
        Ok(value as u64)
    }
}

impl AddressSpace for CoreAddressSpace {
    fn task_size(&self) -> u64 {
        // SAFETY: no arguments; reads the current task's limit.
        unsafe { msharefs_task_size() as u64 }
    }

    fn first_fit(&self, len: u64) -> Result<u64> {
        // SAFETY: the file being mapped, under the mmap lock (type invariant).
        area(unsafe { msharefs_first_fit_area(self.file, len as c_ulong, self.pgoff, self.flags) })
    }

    fn thp_area(&self, hint: u64, len: u64) -> Result<u64> {
        // SAFETY: as in `first_fit`.
        area(unsafe { msharefs_thp_area(self.file, hint as c_ulong, len as c_ulong, self.pgoff, self.flags) })
    }

    fn range_free(&self, start: u64, len: u64) -> bool {
        // SAFETY: the current task's mm, whose mmap lock it holds (type invariant).
        unsafe { msharefs_range_free(start as c_ulong, len as c_ulong) }
    }
}

/// `get_unmapped_area` of a region file: [`place`], then [`address`]; the address or a
/// negative errno.
///
/// # Safety
///
/// `region` is the live region of `file`, which the current task is mapping with its mmap
/// lock held (`pgoff` and `flags` are the call's).
#[no_mangle]
unsafe extern "C" fn mshare_window_place(
    region: *const Region,
    api: c_int,
    file: *mut bindings::file,
    addr: c_ulong,
    len: c_ulong,
    pgoff: c_ulong,
    flags: c_ulong,
    fixed: bool,
    shared: bool,
) -> c_ulong {
    // SAFETY: per the function's contract.
    let region = unsafe { &*region };
    // INVARIANT: per the function's contract.
    let mm = CoreAddressSpace { file, pgoff, flags };
    let (addr, len) = (addr as u64, len as u64);
    let at = place(region, Api::from_glue(api), addr, len, pgoff as u64, fixed, shared).and_then(|placed| {
        // `place` refuses an offset that overflows.
        let offset = (pgoff as u64).wrapping_mul(PAGE_SIZE as u64);
        address(placed, addr, len, offset, fixed, &mm)
    });
    match at {
        Ok(at) => at as c_ulong,
        Err(e) => c_long::from(e.to_errno()) as c_ulong,
    }
}

/// Which family of operations serves a window (`window_glue.c` has one per value).
#[repr(C)]
#[derive(Clone, Copy)]
enum WindowOps {
    /// Mode C over a device's page frames.
    Device = 0,
    /// Mode C over a region's own pages.
    Pages = 1,
    /// Mode B: the region's shared PTE tables.
    Shared = 2,
    /// Mode B: the region's shared PMD tables.
    SharedPmd = 3,
}

/// mmap of a region: checks the window, then sets it up to map the region as
/// [`Region::window`] says. Where the window may go (the v1 start, v3's whole region) was
/// decided by [`place`] before mmap unmapped anything.
fn map_window(region: &Region, vma: &VmaNew) -> Result {
    let (start, end) = (vma.start() as u64, vma.end() as u64);
    // SAFETY: a field of the VMA being set up, which nothing else reads or writes yet.
    let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff } as u64;
    let offset = pgoff.checked_mul(PAGE_SIZE as u64).unwrap_or(u64::MAX);
    let shared = vma.flags() & vm_flags::MAYSHARE != 0;
    let window = region.window(vma.writable(), spans_pmd_tables(start, offset, end.wrapping_sub(start)))?;
    check_mapping(region.size(), start, end, offset, shared)?;
    // A device's memory has no struct pages (VM_PFNMAP). A region's own pages are normal
    // pages, which GUP and futexes take: through shared tables the window is VM_MIXEDMAP
    // (which also keeps NUMA balancing away), but a window of its own (mode C) is not, for
    // a chunk is mapped there as a page-cache folio is (vmf_insert_folio_pmd(): rmap, RSS,
    // a reference), and in a VM_MIXEDMAP file VMA splitting such a leaf (a partial
    // MADV_DONTNEED) only clears it, as for a PFN leaf, leaking all three.
    let pages = region.has_pages();
    if !pages {
        // SAFETY: the VMA being set up, never VM_MIXEDMAP too.
        unsafe { msharefs_vma_set_pfnmap(vma.as_ptr()) };
    } else if window != Window::Private {
        vma.set_mixedmap();
    }
    let ops = match window {
        Window::Shared => WindowOps::Shared,
        Window::SharedPmd => WindowOps::SharedPmd,
        Window::Private if pages => WindowOps::Pages,
        Window::Private => WindowOps::Device,
    };
    // VM_DONTEXPAND (in VM_SPECIAL) keeps mlock, khugepaged and KSM away; core dumps leave
    // the region out, as they do device memory.
    vma.set_dontexpand();
    vma.set_dontdump();
    // A window mapped read-only stays so: write access is the region's to give.
    if !vma.writable() {
        vma.try_clear_maywrite()?;
    }
    // SAFETY: the VMA being set up; `region` outlives it (the VMA holds the region's file).
    to_result(unsafe { msharefs_vma_set_ops(vma.as_ptr(), ops, region) })?;
    region.window_opened(window);
    Ok(())
}

/// `mmap` of a region file: [`map_window`]; 0 or a negative errno.
///
/// # Safety
///
/// `region` is the live region of the file being mapped; `vma` is the VMA mmap is setting
/// up for it.
#[no_mangle]
unsafe extern "C" fn mshare_region_mmap(region: *const Region, vma: *mut bindings::vm_area_struct) -> c_int {
    // SAFETY: per the function's contract.
    let (region, vma) = unsafe { (&*region, VmaNew::from_raw(vma)) };
    match map_window(region, vma) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// A window (VMA) of the region was created or copied.
///
/// # Safety
///
/// `region` is the live region of the window.
#[no_mangle]
unsafe extern "C" fn mshare_region_window_opened(region: *const Region, shared: bool) {
    // SAFETY: per the function's contract.
    unsafe { &*region }.window_opened(window_kind(shared));
}

fn window_kind(shared: bool) -> Window {
    if shared {
        Window::Shared
    } else {
        Window::Private
    }
}

/// A window of the region went away.
///
/// # Safety
///
/// `region` is the live region of the window (the window holds its file).
#[no_mangle]
unsafe extern "C" fn mshare_region_window_closed(region: *const Region, shared: bool) {
    // SAFETY: per the function's contract.
    unsafe { &*region }.window_closed(window_kind(shared));
}

#[kunit_tests(mshare_window)]
mod tests {
    use super::*;
    use core::cell::Cell;

    /// An address space whose searches answer as told, and record what they were asked.
    struct Fake {
        task_size: u64,
        first_fit: Result<u64>,
        thp: Result<u64>,
        free: bool,
        first_fit_asked: Cell<Option<u64>>,
        thp_asked: Cell<Option<(u64, u64)>>,
        free_asked: Cell<Option<(u64, u64)>>,
    }

    impl Fake {
        fn new(first_fit: Result<u64>, thp: Result<u64>) -> Self {
            Self {
                task_size: 1 << 47,
                first_fit,
                thp,
                free: true,
                first_fit_asked: Cell::new(None),
                thp_asked: Cell::new(None),
                free_asked: Cell::new(None),
            }
        }
    }

    impl AddressSpace for Fake {
        fn task_size(&self) -> u64 {
            self.task_size
        }

        fn first_fit(&self, len: u64) -> Result<u64> {
            self.first_fit_asked.set(Some(len));
            self.first_fit
        }

        fn thp_area(&self, hint: u64, len: u64) -> Result<u64> {
            self.thp_asked.set(Some((hint, len)));
            self.thp
        }

        fn range_free(&self, start: u64, len: u64) -> bool {
            self.free_asked.set(Some((start, len)));
            self.free
        }
    }

    #[test]
    fn map_fixed_goes_where_place_allowed() {
        let g = GRANULE_SIZE;
        let mm = Fake::new(Err(ENOMEM), Err(ENOMEM));
        assert_eq!(address(0, 8 * g, 4 * g, 0, true, &mm), Ok(8 * g));
        assert_eq!(address(8 * g, 8 * g, 4 * g, 0, true, &mm), Ok(8 * g));
        // Nothing searched, nothing checked: the core unmaps what is there.
        assert_eq!(mm.first_fit_asked.get(), None);
        assert_eq!(mm.thp_asked.get(), None);
        assert_eq!(mm.free_asked.get(), None);
    }

    #[test]
    fn a_start_is_taken_only_free_and_inside_the_address_space() {
        let (g, gib) = (GRANULE_SIZE, PMD_TABLE_REACH);
        let mut mm = Fake::new(Ok(5 * gib), Ok(7 * gib));
        assert_eq!(address(gib, 0, 4 * g, 0, false, &mm), Ok(gib));
        assert_eq!(mm.free_asked.get(), Some((gib, 4 * g)));
        // A hint that is the start (`place` refused any other).
        assert_eq!(address(gib, gib, 4 * g, 0, false, &mm), Ok(gib));
        let end = mm.task_size;
        assert_eq!(address(end - 4 * g, 0, 4 * g, 0, false, &mm), Ok(end - 4 * g));
        assert_eq!(address(end - 2 * g, 0, 4 * g, 0, false, &mm), Err(ENOMEM));
        assert_eq!(address(g, 0, end + g, 0, false, &mm), Err(ENOMEM));
        mm.free = false;
        assert_eq!(address(gib, 0, 4 * g, 0, false, &mm), Err(ENOMEM));
        // Never elsewhere: the core's searches are not asked.
        assert_eq!(mm.first_fit_asked.get(), None);
        assert_eq!(mm.thp_asked.get(), None);
    }

    #[test]
    fn a_hint_without_a_start_goes_where_thp_would() {
        let (g, gib) = (GRANULE_SIZE, PMD_TABLE_REACH);
        let mm = Fake::new(Ok(5 * gib), Ok(7 * gib));
        assert_eq!(address(0, 3 * gib, 4 * g, 0, false, &mm), Ok(7 * gib));
        assert_eq!(mm.thp_asked.get(), Some((3 * gib, 4 * g)));
        assert_eq!(mm.first_fit_asked.get(), None);
        let mm = Fake::new(Ok(5 * gib), Err(ENOMEM));
        assert_eq!(address(0, 3 * gib, gib, 0, false, &mm), Err(ENOMEM));
    }

    #[test]
    fn whole_gibs_go_to_a_gib_boundary() {
        let (g, gib, page) = (GRANULE_SIZE, PMD_TABLE_REACH, PAGE_SIZE as u64);
        // The first fit for a GiB more, rounded up to a GiB.
        let mm = Fake::new(Ok(5 * gib + page), Ok(9 * gib));
        assert_eq!(address(0, 0, 2 * gib, gib, false, &mm), Ok(6 * gib));
        assert_eq!(mm.first_fit_asked.get(), Some(3 * gib));
        let mm = Fake::new(Ok(5 * gib), Ok(9 * gib));
        assert_eq!(address(0, 0, gib, 0, false, &mm), Ok(5 * gib));
        // No such fit: ENOMEM, not THP's placement.
        let mm = Fake::new(Err(ENOMEM), Ok(9 * gib));
        assert_eq!(address(0, 0, gib, 0, false, &mm), Err(ENOMEM));
        assert_eq!(mm.thp_asked.get(), None);
        // Too long for a GiB more in the address space: ENOMEM without a search.
        let mut mm = Fake::new(Ok(0), Ok(9 * gib));
        mm.task_size = 4 * gib;
        assert_eq!(address(0, 0, 4 * gib, 0, false, &mm), Err(ENOMEM));
        assert_eq!(mm.first_fit_asked.get(), None);
        assert_eq!(address(0, 0, 3 * gib, 0, false, &mm), Ok(0));
        // Whole GiBs at an offset that is not: the fewest GiBs, as any other.
        let mm = Fake::new(Ok(5 * gib + page), Ok(9 * gib));
        assert_eq!(address(0, 0, gib, g, false, &mm), Ok(6 * gib));
        assert_eq!(mm.first_fit_asked.get(), Some(2 * gib));
    }

    #[test]
    fn any_other_window_spans_the_fewest_gibs_or_goes_where_thp_would() {
        let (g, gib, page) = (GRANULE_SIZE, PMD_TABLE_REACH, PAGE_SIZE as u64);
        let mib = 1u64 << 20;
        let mm = Fake::new(Ok(gib + page), Ok(9 * gib));
        assert_eq!(address(0, 0, 256 * mib, 0, false, &mm), Ok(gib + g));
        assert_eq!(mm.first_fit_asked.get(), Some(gib + 256 * mib));
        let mm = Fake::new(Ok(2 * gib - 128 * mib), Ok(9 * gib));
        assert_eq!(address(0, 0, 256 * mib, gib, false, &mm), Ok(2 * gib));
        // No fit for a GiB more: where THP would put it.
        let mm = Fake::new(Err(ENOMEM), Ok(9 * gib));
        assert_eq!(address(0, 0, 4 * g, 0, false, &mm), Ok(9 * gib));
        assert_eq!(mm.thp_asked.get(), Some((0, 4 * g)));
        // Too long for a GiB more: THP's placement, without a search.
        let mut mm = Fake::new(Ok(0), Ok(9 * gib));
        mm.task_size = 4 * gib;
        assert_eq!(address(0, 0, 3 * gib + g, 0, false, &mm), Ok(9 * gib));
        assert_eq!(mm.first_fit_asked.get(), None);
        assert_eq!(mm.thp_asked.get(), Some((0, 3 * gib + g)));
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
}
