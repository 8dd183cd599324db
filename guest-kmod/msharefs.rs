// SPDX-License-Identifier: GPL-2.0

//! msharefs, the Rust side of a region file's operations (`file_glue.c`): the ioctls of
//! both series APIs ([`crate::msharefs_api`]), `read`/`write`, `ftruncate` and
//! `fallocate`, `mshare_info`, and the entry of every fault (`window_glue.c`). Regions
//! themselves are in [`crate::region`], windows in [`crate::window`].

use crate::file_pages::MappedFile;
use crate::inode::Inode;
use crate::msharefs_api::{Api, Request};
use crate::uapi::{read_arg, write_arg, write_arg_prefix, MshareCreate, MshareInfo, MshareStats, MshareUnmap};
use crate::region::{offset_of, Region};
use crate::{stats, GRANULE_SIZE};
use core::ffi::{c_int, c_long, c_uint, c_ulong, c_void};
use kernel::bindings::vm_fault_t;
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
    fn msharefs_user_end() -> c_ulong;
}

/// How much of a read or write goes through the kernel's buffer at a time.
const IO_CHUNK: usize = 64 * 1024;

/// `read`/`pread` of a region file: its bytes from `*pos`, holes as zeros, 0 at the end.
/// The region's memory is copied through a kernel buffer, never to or from the user
/// buffer with the region's memory lock held: a buffer that is itself a window of the
/// region faults without deadlocking against its own read.
fn read(region: &Region, buf: usize, len: usize, pos: &mut i64) -> Result<usize> {
    region.check_present()?;
    let offset = u64::try_from(*pos).map_err(|_| EINVAL)?;
    let len = len.min(region.size().saturating_sub(offset) as usize);
    let mut bounce = KVec::from_elem(0u8, len.min(IO_CHUNK), GFP_KERNEL)?;
    let mut done = 0;
    while done < len {
        let n = (len - done).min(IO_CHUNK);
        let at = offset + done as u64;
        region.read_at(at, &mut bounce[..n])?;
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
fn write(region: &Region, buf: usize, len: usize, pos: &mut i64) -> Result<usize> {
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
        if let Err(e) = region.write_at(at, &bounce[..n]) {
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
fn set_size(region: &Region, inode: Inode, requested: u64, start: Option<u64>) -> Result {
    // SAFETY: plain call into the C glue.
    let user_end = unsafe { msharefs_user_end() } as u64;
    inode.set_size(region.set_size(requested, start, user_end)?);
    Ok(())
}

/// `MSHAREFS_SET_PROT`'s argument: `PROT_READ` or `PROT_READ | PROT_WRITE`.
fn parse_prot(prot: u64) -> Result<bool> {
    match prot {
        p if p == u64::from(PROT_READ) => Ok(false),
        p if p == u64::from(PROT_READ | PROT_WRITE) => Ok(true),
        _ => Err(EINVAL),
    }
}

/// `MSHAREFS_SET_PROT` and `/dev/mshare`'s `PROTECT`: the protection (`PROT_READ`, or with
/// `PROT_WRITE`) of the region for every process sharing its tables.
pub(crate) fn set_prot(region: &Region, prot: u64) -> Result {
    region.set_prot(parse_prot(prot)?)
}

/// The region offset of a CREATE_MAPPING or UNMAP argument: v1 names an address inside
/// the region (an offset when it has no start), v3 an offset.
fn region_offset(region: &Region, api: Api, addr: u64, len: u64) -> Result<u64> {
    match api {
        Api::V1 => offset_of(region.start(), region.size(), addr, len),
        Api::V3 => Ok(addr),
    }
}

fn ioctl(region: &Region, inode: Inode, api: Api, cmd: u32, arg: usize, writable: bool) -> Result {
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
            region.unmap(region_offset(region, api, range.addr, range.size)?, range.size)
        }
        Request::SetProt => set_prot(region, read_arg::<u64>(arg)?),
        Request::GetStats { len } => {
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
                links_now: stats.links_now,
            };
            write_arg_prefix(arg, &stats, len)
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
///
/// # Safety
///
/// `inode` is the new msharefs inode, which holds the region until it is evicted.
#[no_mangle]
unsafe extern "C" fn mshare_region_new(inode: *mut bindings::inode) -> *const Region {
    // SAFETY: per the function's contract, the inode outlives its region.
    let inode = unsafe { Inode::from_raw(inode) };
    match Arc::pin_init(Region::new(inode), GFP_KERNEL) {
        Ok(region) => Arc::into_raw(region),
        Err(_) => core::ptr::null(),
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
unsafe extern "C" fn mshare_region_release(region: *const Region, inode: *mut bindings::inode) {
    // SAFETY: per the function's contract, the inode's reference, from `Arc::into_raw`.
    let region = unsafe { Arc::from_raw(region) };
    // SAFETY: the inode is being evicted: the handle only serves to find it in the list.
    if let Some(inode) = unsafe { Inode::from_raw(inode) } {
        region.inode_evicted(inode);
    }
}

/// An msharefs inode shows a device region: the inode holds a reference to it, given back
/// by [`mshare_region_release`]. 0 or a negative errno.
///
/// # Safety
///
/// `region` is a live device region (`ivshmem::publish`'s), which the caller's lock on the
/// msharefs device table keeps alive; `inode` is the new inode.
#[no_mangle]
unsafe extern "C" fn mshare_device_region_attach(region: *const Region, inode: *mut bindings::inode) -> c_int {
    // SAFETY: per the function's contract, `region` is an `Arc<Region>`'s, still referenced.
    let region: Arc<Region> = unsafe { ArcBorrow::from_raw(region) }.into();
    // SAFETY: the inode is listed until it is evicted (`mshare_region_release`).
    let Some(inode) = (unsafe { Inode::from_raw(inode) }) else { return EINVAL.to_errno() };
    match region.inode_attached(inode) {
        Ok(()) => {
            // The inode's reference, given back when it is evicted.
            let _ = Arc::into_raw(region);
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// The inode a VFS call on a region file passed.
///
/// # Safety
///
/// `inode` is the live inode of the file the call is on (or null: EINVAL).
unsafe fn call_inode(inode: *mut bindings::inode) -> Result<Inode> {
    // SAFETY: per the function's contract, the file being called holds the inode.
    unsafe { Inode::from_raw(inode) }.ok_or(EINVAL)
}

/// # Safety
///
/// `region` is the live region of `inode`.
#[no_mangle]
unsafe extern "C" fn mshare_region_ioctl(
    region: *const Region,
    inode: *mut bindings::inode,
    api: c_int,
    cmd: c_uint,
    arg: c_ulong,
    writable: bool,
) -> c_long {
    // SAFETY: per the function's contract.
    let (region, inode) = unsafe { (&*region, call_inode(inode)) };
    match inode.and_then(|inode| ioctl(region, inode, Api::from_glue(api), cmd, arg as usize, writable)) {
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
    region: *const Region,
    inode: *mut bindings::inode,
    size: bindings::loff_t,
    from_open: bool,
) -> c_int {
    if from_open && size == 0 {
        return 0;
    }
    // SAFETY: per the function's contract.
    let (region, inode) = unsafe { (&*region, call_inode(inode)) };
    let size = u64::try_from(size).map_err(|_| EINVAL);
    match inode.and_then(|inode| set_size(region, inode, size?, None)) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// `read` of a region file (see [`read`]).
///
/// # Safety
///
/// `region` is the live region of the file read; `pos` is the file position the VFS passed.
#[no_mangle]
unsafe extern "C" fn mshare_region_read(
    region: *const Region,
    buf: *mut c_void,
    len: usize,
    pos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: per the function's contract.
    let (region, pos) = unsafe { (&*region, &mut *pos) };
    match read(region, buf as usize, len, pos) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// `write` of a region file (see [`write`]).
///
/// # Safety
///
/// `region` is the live region of the file written; `pos` is the file position the VFS
/// passed.
#[no_mangle]
unsafe extern "C" fn mshare_region_write(
    region: *const Region,
    buf: *const c_void,
    len: usize,
    pos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: per the function's contract.
    let (region, pos) = unsafe { (&*region, &mut *pos) };
    match write(region, buf as usize, len, pos) {
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
    region: *const Region,
    inode: *mut bindings::inode,
    mode: c_int,
    offset: bindings::loff_t,
    len: bindings::loff_t,
) -> c_long {
    // SAFETY: per the function's contract.
    let (region, inode) = unsafe { (&*region, call_inode(inode)) };
    let result = if mode != FALLOC_FL_ALLOCATE_RANGE {
        Err(EOPNOTSUPP)
    } else if offset != 0 {
        Err(EINVAL)
    } else {
        region
            .check_present()
            .and_then(|()| u64::try_from(len).map_err(|_| EINVAL))
            .and_then(|len| set_size(region, inode?, len, None))
    };
    match result {
        Ok(()) => 0,
        Err(e) => e.to_errno() as c_long,
    }
}

/// Whether processes may write to the region now (a write fault on a shared table's
/// read-only entry is SIGSEGV unless the region became writable meanwhile).
///
/// # Safety
///
/// `region` is the live region of the faulting mapping.
#[no_mangle]
unsafe extern "C" fn mshare_region_writable(region: *const Region) -> bool {
    // SAFETY: per the function's contract.
    unsafe { &*region }.writable()
}

/// The shared table of page `pgoff`'s granule, in `*table` (null for a hole): 0 or a
/// negative errno.
///
/// # Safety
///
/// `region` is the live region of the faulting mapping; `table` is writable.
#[no_mangle]
unsafe extern "C" fn mshare_region_table(region: *const Region, pgoff: c_ulong, table: *mut *mut bindings::ptdesc) -> c_int {
    // SAFETY: per the function's contract.
    let region = unsafe { &*region };
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
unsafe extern "C" fn mshare_region_pmd_table(region: *const Region, pgoff: c_ulong, table: *mut *mut bindings::ptdesc) -> c_int {
    // SAFETY: per the function's contract.
    let region = unsafe { &*region };
    // SAFETY: per the function's contract, `table` is writable.
    unsafe { give_table(region.pmd_table(pgoff as usize), table) }
}

/// A table lookup's answer to the glue: the table in `*out` and 0, or a negative errno.
///
/// # Safety
///
/// `out` is writable.
unsafe fn give_table(found: Result<*mut bindings::ptdesc>, out: *mut *mut bindings::ptdesc) -> c_int {
    match found {
        Ok(table) => {
            // SAFETY: per the function's contract.
            unsafe { *out = table };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// How the glue maps the page frame a fault found (`mshare_fault_map_fn` of msharefs.h).
type FaultMap = unsafe extern "C" fn(vmf: *mut bindings::vm_fault, pfn: usize, writable: bool) -> vm_fault_t;

/// A fault at page `pgoff` of a window of the region ([`Region::fault`]), the page found
/// mapped by `map`, the glue's call for the window's kind (a page frame of device memory
/// by a PTE or a PMD leaf; a chunk of the region's own by a PMD leaf, or a page handed to
/// the core locked). `leaf`: at the PMD level (`huge_fault`), where only a chunk can be
/// mapped and anything else is `VM_FAULT_FALLBACK`.
///
/// # Safety
///
/// `region` is the live region of the faulting mapping; `vmf` is the fault; `map` is one
/// of the glue's mapping calls.
#[no_mangle]
unsafe extern "C" fn mshare_region_fault(
    region: *const Region,
    vmf: *mut bindings::vm_fault,
    pgoff: c_ulong,
    write: bool,
    leaf: bool,
    map: FaultMap,
) -> vm_fault_t {
    // SAFETY: per the function's contract.
    let region = unsafe { &*region };
    // SAFETY: the fault's own `vmf`, and a page frame of the region that UNMAP cannot free
    // while `Region::fault` holds the memory lock.
    region.fault(pgoff as usize, write, leaf, |pfn, writable| unsafe { map(vmf, pfn, writable) })
}

/// A write to a read-only entry of a window with mappings of its own
/// ([`Region::page_mkwrite`]).
///
/// # Safety
///
/// `region` is the live region of the faulting mapping; `pfn` is the faulting page, on
/// which the core holds a reference.
#[no_mangle]
unsafe extern "C" fn mshare_region_page_mkwrite(region: *const Region, pgoff: c_ulong, pfn: c_ulong) -> vm_fault_t {
    // SAFETY: per the function's contract.
    unsafe { &*region }.page_mkwrite(pgoff as usize, pfn as usize)
}

/// A fault in a window sharing the region's tables that found no entry
/// ([`Region::shared_fault`]).
///
/// # Safety
///
/// `region` is the live region of the faulting mapping.
#[no_mangle]
unsafe extern "C" fn mshare_region_shared_fault(region: *const Region, pgoff: c_ulong) -> vm_fault_t {
    // SAFETY: per the function's contract.
    unsafe { &*region }.shared_fault(pgoff as usize)
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
