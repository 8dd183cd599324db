// SPDX-License-Identifier: GPL-2.0

//! msharefs, the Rust side of `msharefs_glue.c`: the ioctls of both series APIs on region
//! files ([`crate::msharefs_api`]), `ftruncate` and `fallocate`, `mshare_info`, the checks
//! behind `mmap` of a region and the page lookups behind its faults. Regions themselves
//! are in [`crate::region`].

use crate::file_pages::MappedFile;
use crate::msharefs_api::{Api, Request};
use crate::uapi::{read_arg, write_arg, MshareCreate, MshareInfo, MshareStats, MshareUnmap};
use crate::region::{
    check_mapping, check_range, offset_of, spans_pmd_tables, window_address, window_reach, Page, Region, Window,
};
use crate::{stats, GRANULE_SIZE};
use kernel::page::PAGE_SIZE;
use core::ffi::{c_int, c_long, c_uint, c_ulong, c_void};
use kernel::{
    bindings,
    error::to_result,
    fs::file,
    prelude::*,
    str::CString,
    sync::{Arc, ArcBorrow},
    uaccess::{UserPtr, UserSlice},
};

pub(crate) const PROT_READ: u32 = 0x1;
pub(crate) const PROT_WRITE: u32 = 0x2;
pub(crate) const MAP_SHARED: u32 = 0x01;
const MAP_FIXED: u32 = 0x10;
pub(crate) const MAP_ANONYMOUS: u32 = 0x20;
const NO_FD: u32 = u32::MAX;

extern "C" {
    fn msharefs_register() -> c_int;
    fn msharefs_unregister();
    fn msharefs_inode_set_size(inode: *mut c_void, size: bindings::loff_t);
    fn msharefs_invalidate_lock(inode: *mut c_void);
    fn msharefs_invalidate_unlock(inode: *mut c_void);
    fn msharefs_zap(inode: *mut c_void, offset: bindings::loff_t, len: bindings::loff_t);
    fn msharefs_user_end() -> c_ulong;
    fn msharefs_invalidate_lock_shared(inode: *mut c_void);
    fn msharefs_invalidate_unlock_shared(inode: *mut c_void);
}

/// How much of a read or write goes through the kernel's buffer at a time.
const IO_CHUNK: usize = 64 * 1024;

/// Runs `io` on the region's bytes `[offset, offset + len)` under the invalidate lock,
/// shared: UNMAP (which frees memory under it, exclusive) waits, faults and other reads
/// and writes do not. The user buffer is never touched with the lock held, so a buffer
/// that is itself a window of the region cannot deadlock against its own fault.
fn with_region_bytes<T>(inode: *mut c_void, io: impl FnOnce() -> Result<T>) -> Result<T> {
    // SAFETY: `inode` is the live inode of the file being read or written; unlocked below.
    unsafe { msharefs_invalidate_lock_shared(inode) };
    let result = io();
    // SAFETY: locked above.
    unsafe { msharefs_invalidate_unlock_shared(inode) };
    result
}

/// `read`/`pread` of a region file: its bytes from `*pos`, holes as zeros, 0 at the end.
fn read(region: &Region, inode: *mut c_void, buf: usize, len: usize, pos: &mut i64) -> Result<usize> {
    region.check_present()?;
    let offset = u64::try_from(*pos).map_err(|_| EINVAL)?;
    let len = len.min(region.size().saturating_sub(offset) as usize);
    let mut bounce = KVec::from_elem(0u8, len.min(IO_CHUNK), GFP_KERNEL)?;
    let mut done = 0;
    while done < len {
        let n = (len - done).min(IO_CHUNK);
        let at = offset + done as u64;
        with_region_bytes(inode, || region.read_at(at, &mut bounce[..n]))?;
        let copied = UserSlice::new(UserPtr::from_addr(buf + done), n).writer().write_slice(&bounce[..n]);
        if let Err(e) = copied {
            // What was copied before the fault is the read's result.
            if done == 0 {
                return Err(e);
            }
            break;
        }
        done += n;
    }
    *pos += done as i64;
    Ok(done)
}

/// `write`/`pwrite` of a region file: into its memory from `*pos`; a write never grows a
/// region (ENOSPC at its end, short before it) nor gives memory to a hole (EIO).
fn write(region: &Region, inode: *mut c_void, buf: usize, len: usize, pos: &mut i64) -> Result<usize> {
    region.check_present()?;
    let offset = u64::try_from(*pos).map_err(|_| EINVAL)?;
    let room = region.size().saturating_sub(offset) as usize;
    if len > 0 && room == 0 {
        return Err(ENOSPC);
    }
    let len = len.min(room);
    let mut bounce = KVec::from_elem(0u8, len.min(IO_CHUNK), GFP_KERNEL)?;
    let mut done = 0;
    while done < len {
        let n = (len - done).min(IO_CHUNK);
        if let Err(e) = UserSlice::new(UserPtr::from_addr(buf + done), n).reader().read_slice(&mut bounce[..n]) {
            if done == 0 {
                return Err(e);
            }
            break;
        }
        let at = offset + done as u64;
        if let Err(e) = with_region_bytes(inode, || region.write_at(at, &bounce[..n])) {
            if done == 0 {
                return Err(e);
            }
            break;
        }
        done += n;
    }
    *pos += done as i64;
    Ok(done)
}

/// `FALLOC_FL_ALLOCATE_RANGE`: the only `fallocate` mode a region takes.
const FALLOC_FL_ALLOCATE_RANGE: c_int = 0;

/// CREATE_MAPPING's checks of its argument (`addr` is v1's address inside the region, an
/// offset when the region has no start, or v3's `region_offset`).
impl MshareCreate {
    /// Shared read-write memory: anonymous (`MAP_ANONYMOUS`, `fd` -1, `offset` 0) or a
    /// shmem file's from `offset` (no `MAP_ANONYMOUS`, checked further when the file is
    /// taken). v3 requires `MAP_FIXED` too ("system-selected addresses are not supported").
    /// Returns the file's descriptor, if any.
    fn check(&self, api: Api) -> Result<Option<i32>> {
        if self.prot != PROT_READ | PROT_WRITE || self.flags & !(MAP_SHARED | MAP_FIXED | MAP_ANONYMOUS) != 0 {
            return Err(EINVAL);
        }
        let required = if api == Api::V3 { MAP_SHARED | MAP_FIXED } else { MAP_SHARED };
        if self.flags & required != required {
            return Err(EINVAL);
        }
        if self.flags & MAP_ANONYMOUS == 0 {
            return Ok(Some(self.fd as i32));
        }
        if self.fd != NO_FD || self.offset != 0 {
            return Err(EINVAL);
        }
        Ok(None)
    }
}

/// Sets the region's size (and with v1's SET_SIZE its start), and the inode's.
fn set_size(region: &Region, inode: *mut c_void, requested: u64, start: Option<u64>) -> Result {
    // SAFETY: plain call into the C glue.
    let user_end = unsafe { msharefs_user_end() } as u64;
    let size = region.set_size(requested, start, user_end)?;
    // SAFETY: `inode` is the live inode of this region, passed by the VFS callback.
    unsafe { msharefs_inode_set_size(inode, size as bindings::loff_t) };
    Ok(())
}

/// Runs `change` under the region's invalidate lock, then removes `[offset, offset + len)`
/// from every process that maps it (unlinking shared tables, flushing TLBs), then drops
/// what `change` returned: memory it took is freed only once no process can reach it.
fn change_then_zap<T>(inode: *mut c_void, offset: u64, len: u64, change: impl FnOnce() -> Result<T>) -> Result {
    let (start, length) = (i64::try_from(offset).map_err(|_| EINVAL)?, i64::try_from(len).map_err(|_| EINVAL)?);
    // Mode C faults look pages up under the invalidate lock, shared: with it held here,
    // none can map memory between the change and the zap.
    // SAFETY: `inode` is the live inode of this region; the lock is released below.
    unsafe { msharefs_invalidate_lock(inode) };
    let result = change().map(|taken| {
        // SAFETY: as above.
        unsafe { msharefs_zap(inode, start, length) };
        drop(taken);
    });
    // SAFETY: taken above.
    unsafe { msharefs_invalidate_unlock(inode) };
    result
}

/// `MSHAREFS_SET_PROT`'s argument: `PROT_READ` or `PROT_READ | PROT_WRITE`.
fn parse_prot(prot: u64) -> Result<bool> {
    match prot {
        p if p == u64::from(PROT_READ) => Ok(false),
        p if p == u64::from(PROT_READ | PROT_WRITE) => Ok(true),
        _ => Err(EINVAL),
    }
}

/// Takes the memory of `[offset, offset + len)` of the region away from every process.
pub(crate) fn unmap(region: &Region, inode: *mut c_void, offset: u64, len: u64) -> Result {
    change_then_zap(inode, offset, len, || region.take(offset, len))
}

/// Sets the protection (`PROT_READ`, or with `PROT_WRITE`) of the region for every
/// process sharing its tables.
pub(crate) fn set_prot(region: &Region, inode: *mut c_void, prot: u64) -> Result {
    let writable = parse_prot(prot)?;
    // Private windows (mode C) carry their own permissions; only shared tables can change
    // for everyone at once.
    if !stats::shared_tables() {
        return Err(EOPNOTSUPP);
    }
    let size = region.size();
    if size == 0 {
        return Err(EINVAL);
    }
    // `set_writable` may fail half-way, having rewritten the tables of some granules:
    // every process loses its links whatever the outcome.
    let mut outcome = Ok(());
    change_then_zap(inode, 0, size, || {
        outcome = region.set_writable(writable);
        Ok(())
    })?;
    // A device region shows as one inode per msharefs instance (an api=v1 and an api=v3
    // mount): the processes that map it through the others hold the same tables, and
    // may hold writable TLB entries of them, until their inode's mappings are zapped too.
    let mut zapped = Ok(());
    region.for_each_inode(|other| {
        if other as *mut c_void != inode {
            zapped = zapped.and(change_then_zap(other as *mut c_void, 0, size, || Ok(())));
        }
    });
    outcome.and(zapped)
}

/// The device behind a device region went away: from every msharefs inode that shows it,
/// every process's mapping is removed, under the invalidate lock so that no fault maps
/// the device's memory again. Faults then find nothing (SIGBUS), calls are ENODEV.
pub(crate) fn unplug(region: &Region) {
    let size = region.size();
    region.unplug();
    region.for_each_inode(|inode| {
        // The region already maps nothing: the change is only the zap's fence against a
        // fault that looked the memory up before `unplug`.
        let zapped = change_then_zap(inode as *mut c_void, 0, size, || Ok(()));
        if let Err(e) = zapped {
            pr_err!("mshare: unplugging a device region of {} bytes: {:?}\n", size, e);
        }
    });
}

/// The region offset of a CREATE_MAPPING or UNMAP argument: v1 names an address inside
/// the region (an offset when it has no start), v3 an offset.
fn region_offset(region: &Region, api: Api, addr: u64, len: u64) -> Result<u64> {
    match api {
        Api::V1 => offset_of(region.start(), region.size(), addr, len),
        Api::V3 => Ok(addr),
    }
}

fn ioctl(region: &Region, inode: *mut c_void, api: Api, cmd: u32, arg: usize, writable: bool) -> Result {
    region.check_present()?;
    let request = Request::decode(api, cmd)?;
    if !writable && !request.only_reads() {
        return Err(EBADF);
    }
    match request {
        Request::GetSize => write_arg(arg, &MshareInfo { start: region.start(), size: region.size() }),
        Request::SetSize => {
            let info: MshareInfo = read_arg(arg)?;
            set_size(region, inode, info.size, Some(info.start))
        }
        Request::CreateMapping => {
            let create: MshareCreate = read_arg(arg)?;
            let fd = create.check(api)?;
            let offset = region_offset(region, api, create.addr, create.size)?;
            match fd {
                None => region.create_mapping(offset, create.size),
                Some(fd) => region.create_file_mapping(offset, create.size, &MappedFile::get(fd)?, create.offset),
            }
        }
        Request::Unmap => {
            let range: MshareUnmap = read_arg(arg)?;
            unmap(region, inode, region_offset(region, api, range.addr, range.size)?, range.size)
        }
        Request::SetProt => set_prot(region, inode, read_arg::<u64>(arg)?),
        Request::GetStats => {
            let stats = region.stats();
            let stats = MshareStats {
                windows: stats.windows,
                faults: stats.faults,
                backed: stats.backed,
                tables: stats.tables,
                links: stats.links,
                file_backed: stats.file_backed,
                pmd_tables: stats.pmd_tables,
                pmd_links: stats.pmd_links,
                huge_leaf_bytes: stats.huge_leaf_bytes,
            };
            write_arg(arg, &stats)
        }
    }
}

/// msharefs and its mount point /sys/fs/mshare, registered for as long as this lives.
pub(crate) struct Registration;

impl Registration {
    /// Registers the filesystem.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: plain call into the C glue; undone once, in `drop`.
        to_result(unsafe { msharefs_register() })?;
        Ok(Self)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: registered in `new`.
        unsafe { msharefs_unregister() }
    }
}

/// A new, empty region for a new inode, which holds it (a reference given back by
/// [`mshare_region_release`]); null when out of memory.
#[no_mangle]
extern "C" fn mshare_region_new(inode: *mut c_void) -> *mut c_void {
    match Arc::pin_init(Region::new(inode as usize), GFP_KERNEL) {
        Ok(region) => Arc::into_raw(region).cast_mut().cast(),
        Err(_) => core::ptr::null_mut(),
    }
}

/// The inode holding `region` was evicted: its reference goes (the region with it, unless
/// a device still holds it).
///
/// # Safety
///
/// `region` is the reference `inode` holds, from [`mshare_region_new`] or
/// [`mshare_device_region_attach`], given back once.
#[no_mangle]
unsafe extern "C" fn mshare_region_release(region: *mut c_void, inode: *mut c_void) {
    // SAFETY: per the function's contract, the inode's reference, from `Arc::into_raw`.
    let region = unsafe { Arc::from_raw(region.cast::<Region>().cast_const()) };
    region.inode_evicted(inode as usize);
}

/// An msharefs inode shows a device region: the inode holds a reference to it, given back
/// by [`mshare_region_release`]. 0 or a negative errno.
///
/// # Safety
///
/// `region` is a live device region (`ivshmem::publish`'s), which the caller's lock on the
/// msharefs device table keeps alive; `inode` is the new inode.
#[no_mangle]
unsafe extern "C" fn mshare_device_region_attach(region: *mut c_void, inode: *mut c_void) -> c_int {
    // SAFETY: per the function's contract, `region` is an `Arc<Region>`'s, still referenced.
    let region: Arc<Region> = unsafe { ArcBorrow::from_raw(region.cast::<Region>()) }.into();
    match region.inode_attached(inode as usize) {
        Ok(()) => {
            // The inode's reference, given back when it is evicted.
            let _ = Arc::into_raw(region);
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// `region` is the live region of `inode`.
#[no_mangle]
unsafe extern "C" fn mshare_region_ioctl(
    region: *mut c_void,
    inode: *mut c_void,
    api: c_int,
    cmd: c_uint,
    arg: c_ulong,
    writable: bool,
) -> c_long {
    // SAFETY: per the function's contract.
    let region = unsafe { &*region.cast::<Region>() };
    match ioctl(region, inode, Api::from_glue(api), cmd, arg as usize, writable) {
        Ok(()) => 0,
        Err(e) => e.to_errno() as c_long,
    }
}

/// ftruncate (and `open(O_TRUNC)`, `from_open`): sets the size like `MSHAREFS_SET_SIZE`.
/// `open(O_TRUNC)` asks for size 0, which a region never has: the region keeps its size
/// and memory, as a shell redirection onto it expects nothing else.
///
/// # Safety
///
/// `region` is the live region of `inode`.
#[no_mangle]
unsafe extern "C" fn mshare_region_truncate(
    region: *mut c_void,
    inode: *mut c_void,
    size: bindings::loff_t,
    from_open: bool,
) -> c_int {
    if from_open && size == 0 {
        return 0;
    }
    // SAFETY: per the function's contract.
    let region = unsafe { &*region.cast::<Region>() };
    match u64::try_from(size).map_err(|_| EINVAL).and_then(|size| set_size(region, inode, size, None)) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// `read` of a region file (see [`read`]).
///
/// # Safety
///
/// `region` is the live region of `inode`; `pos` is the file position the VFS passed.
#[no_mangle]
unsafe extern "C" fn mshare_region_read(
    region: *mut c_void,
    inode: *mut c_void,
    buf: *mut c_void,
    len: usize,
    pos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: per the function's contract.
    let (region, pos) = unsafe { (&*region.cast::<Region>(), &mut *pos) };
    match read(region, inode, buf as usize, len, pos) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// `write` of a region file (see [`write`]).
///
/// # Safety
///
/// `region` is the live region of `inode`; `pos` is the file position the VFS passed.
#[no_mangle]
unsafe extern "C" fn mshare_region_write(
    region: *mut c_void,
    inode: *mut c_void,
    buf: *const c_void,
    len: usize,
    pos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: per the function's contract.
    let (region, pos) = unsafe { (&*region.cast::<Region>(), &mut *pos) };
    match write(region, inode, buf as usize, len, pos) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// fallocate: `FALLOC_FL_ALLOCATE_RANGE` from offset 0 sets the size like ftruncate (the
/// v2/v3 series); other modes are EOPNOTSUPP, another offset EINVAL.
///
/// # Safety
///
/// `region` is the live region of `inode`.
#[no_mangle]
unsafe extern "C" fn mshare_region_fallocate(
    region: *mut c_void,
    inode: *mut c_void,
    mode: c_int,
    offset: bindings::loff_t,
    len: bindings::loff_t,
) -> c_long {
    // SAFETY: per the function's contract.
    let region = unsafe { &*region.cast::<Region>() };
    let result = if mode != FALLOC_FL_ALLOCATE_RANGE {
        Err(EOPNOTSUPP)
    } else if offset != 0 {
        Err(EINVAL)
    } else {
        region.check_present().and_then(|()| u64::try_from(len).map_err(|_| EINVAL)).and_then(|len| set_size(region, inode, len, None))
    };
    match result {
        Ok(()) => 0,
        Err(e) => e.to_errno() as c_long,
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

/// [`place`] for the glue's `get_unmapped_area`: the address, 0, or a negative errno.
///
/// # Safety
///
/// `region` is the live region of the file being mapped.
#[no_mangle]
unsafe extern "C" fn mshare_region_place(
    region: *mut c_void,
    api: c_int,
    addr: c_ulong,
    len: c_ulong,
    pgoff: c_ulong,
    fixed: bool,
    shared: bool,
) -> c_long {
    // SAFETY: per the function's contract.
    let region = unsafe { &*region.cast::<Region>() };
    match place(region, Api::from_glue(api), addr as u64, len as u64, pgoff as u64, fixed, shared) {
        Ok(at) => at as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// [`window_address`] for the glue's `get_unmapped_area`: where in the free range
/// `[found, found + len + 1 GiB)` a window the kernel places goes.
#[no_mangle]
extern "C" fn mshare_window_address(found: c_ulong, len: c_ulong) -> c_ulong {
    window_address(found as u64, len as u64) as c_ulong
}

/// mmap of a region: 1 for a window that shares the region's PTE tables, 2 for one that
/// shares its PMD tables too (whole, aligned GiBs), 0 for one with its own mappings, or a
/// negative errno. Where the window may go (the v1 start, v3's whole
/// region) was decided by [`place`] before mmap unmapped anything.
///
/// # Safety
///
/// `region` is the live region of the file being mapped.
#[no_mangle]
unsafe extern "C" fn mshare_region_mmap_check(
    region: *mut c_void,
    start: c_ulong,
    end: c_ulong,
    pgoff: c_ulong,
    shared: bool,
    writable: bool,
) -> c_int {
    // SAFETY: per the function's contract.
    let region = unsafe { &*region.cast::<Region>() };
    let offset = (pgoff as u64).checked_mul(PAGE_SIZE as u64).unwrap_or(u64::MAX);
    let (start, end) = (start as u64, end as u64);
    let window = region
        .window(writable, spans_pmd_tables(start, offset, end.wrapping_sub(start)))
        .and_then(|window| check_mapping(region.size(), start, end, offset, shared).map(|()| window));
    match window {
        Ok(Window::Shared) => 1,
        Ok(Window::SharedPmd) => 2,
        Ok(Window::Private) => 0,
        Err(e) => e.to_errno(),
    }
}

/// Whether processes may write to the region now (a write fault on a shared table's
/// read-only entry is SIGSEGV unless the region became writable meanwhile).
///
/// # Safety
///
/// `region` is the live region of the faulting mapping.
#[no_mangle]
unsafe extern "C" fn mshare_region_writable(region: *mut c_void) -> bool {
    // SAFETY: per the function's contract.
    unsafe { &*region.cast::<Region>() }.writable()
}

/// Whether the region's memory is folios (mapped as normal pages, which GUP takes) rather
/// than a device's page frames.
///
/// # Safety
///
/// `region` is a live region.
#[no_mangle]
unsafe extern "C" fn mshare_region_has_pages(region: *mut c_void) -> bool {
    // SAFETY: per the function's contract.
    unsafe { &*region.cast::<Region>() }.has_pages()
}

/// The shared table of page `pgoff`'s granule, in `*table` (null for a hole): 0 or a
/// negative errno.
///
/// # Safety
///
/// `region` is the live region of the faulting mapping; `table` is writable.
#[no_mangle]
unsafe extern "C" fn mshare_region_table(region: *mut c_void, pgoff: c_ulong, table: *mut *mut c_void) -> c_int {
    // SAFETY: per the function's contract.
    let region = unsafe { &*region.cast::<Region>() };
    // SAFETY: per the function's contract, `table` is writable.
    unsafe { give_table(region.table(pgoff as usize), table) }
}

/// The shared PMD table of page `pgoff`'s GiB, in `*table` (never null): 0 or a negative
/// errno.
///
/// # Safety
///
/// `region` is the live region of the faulting mapping; `table` is writable.
#[no_mangle]
unsafe extern "C" fn mshare_region_pmd_table(region: *mut c_void, pgoff: c_ulong, table: *mut *mut c_void) -> c_int {
    // SAFETY: per the function's contract.
    let region = unsafe { &*region.cast::<Region>() };
    // SAFETY: per the function's contract, `table` is writable.
    unsafe { give_table(region.pmd_table(pgoff as usize), table) }
}

/// A table lookup's answer to the glue: the table in `*out` and 0, or a negative errno.
///
/// # Safety
///
/// `out` is writable.
unsafe fn give_table(found: Result<*mut c_void>, out: *mut *mut c_void) -> c_int {
    match found {
        Ok(table) => {
            // SAFETY: per the function's contract.
            unsafe { *out = table };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// A window (VMA) of the region was created or copied.
///
/// # Safety
///
/// `region` is the live region of the window.
#[no_mangle]
unsafe extern "C" fn mshare_region_window_opened(region: *mut c_void, shared: bool) {
    // SAFETY: per the function's contract.
    unsafe { &*region.cast::<Region>() }.window_opened(window_kind(shared));
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
unsafe extern "C" fn mshare_region_window_closed(region: *mut c_void, shared: bool) {
    // SAFETY: per the function's contract.
    unsafe { &*region.cast::<Region>() }.window_closed(window_kind(shared));
}

/// The page frame behind page `pgoff` of a region: the frame, 0 for a hole, -1 outside.
///
/// # Safety
///
/// `region` is the live region of the faulting mapping.
#[no_mangle]
unsafe extern "C" fn mshare_region_pfn(region: *mut c_void, pgoff: c_ulong) -> c_long {
    // SAFETY: per the function's contract.
    let region = unsafe { &*region.cast::<Region>() };
    match region.page(pgoff as usize) {
        Page::Frame(pfn) => pfn as c_long,
        Page::Hole => 0,
        Page::Outside => -1,
    }
}

/// A fault mapped memory of the region into one process.
///
/// # Safety
///
/// `region` is the live region of the faulting mapping.
#[no_mangle]
unsafe extern "C" fn mshare_region_fault_mapped(region: *mut c_void) {
    // SAFETY: per the function's contract.
    unsafe { &*region.cast::<Region>() }.fault_mapped();
}

/// `mshare_info`: the alignment and size granule of regions, in bytes.
///
/// # Safety
///
/// `pos` is the file position the VFS passed.
#[no_mangle]
unsafe extern "C" fn mshare_info_read(buf: *mut c_void, len: usize, pos: *mut bindings::loff_t) -> isize {
    let Ok(text) = CString::try_from_fmt(fmt!("{}\n", GRANULE_SIZE)) else { return ENOMEM.to_errno() as isize };
    // SAFETY: per the function's contract.
    unsafe { read_text(&text, buf, len, pos) }
}

/// `mshare_stats`: the mode and system-wide statistics (see [`stats`]).
///
/// # Safety
///
/// `pos` is the file position the VFS passed.
#[no_mangle]
unsafe extern "C" fn mshare_stats_read(buf: *mut c_void, len: usize, pos: *mut bindings::loff_t) -> isize {
    match stats::render() {
        // SAFETY: per the function's contract.
        Ok(text) => unsafe { read_text(&text, buf, len, pos) },
        Err(e) => e.to_errno() as isize,
    }
}

/// Copies the part of `text` at `*pos` to the user buffer of a read callback.
///
/// # Safety
///
/// `pos` is the file position the VFS passed.
unsafe fn read_text(text: &CString, buf: *mut c_void, len: usize, pos: *mut bindings::loff_t) -> isize {
    let mut writer = UserSlice::new(UserPtr::from_ptr(buf), len).writer();
    // SAFETY: `pos` is valid for the duration of the read callback.
    let offset: &mut file::Offset = unsafe { &mut *pos };
    match writer.write_slice_file(text.to_bytes(), offset) {
        Ok(written) => written as isize,
        Err(e) => e.to_errno() as isize,
    }
}
