//! System V shared memory (`shmget`/`shmat`, what Oracle's SGA is made of). A segment of at
//! least the threshold that `shmget` makes gets a region named after its id
//! (mshare_uapi::preload::sysv_region_name), and every `shmat` of the id maps the region
//! instead, in any process that runs with this library, related or not. The segment
//! itself stays, untouched, so that its id, key, permissions and limits are the kernel's;
//! each moved attachment also attaches it, unused, so that the kernel's count of
//! attachments (IPC_STAT's shm_nattch), its destruction after IPC_RMID and the last
//! detach, and fork's and exit's bookkeeping stay true. The region goes at IPC_RMID (the
//! windows keep its memory until they go).

use crate::raw::{self, Errno};
use crate::region::{self, MoveError, MovedRegion};
use crate::windows::{self, Moved};
use crate::{report, settings};
use libc::{c_int, c_void, key_t, shmid_ds};
use mshare_uapi::msharefs::SystemStats;
use mshare_uapi::preload::sysv_region_name;
use std::io;

/// x86's SHMLBA (the page size): what SHM_RND rounds an address down to.
const SHMLBA: usize = 4096;

/// The program's `shmget`.
pub(crate) fn shmget(key: key_t, size: usize, flags: c_int) -> Result<c_int, Errno> {
    let creates = key == libc::IPC_PRIVATE || flags & libc::IPC_CREAT != 0;
    if !creates || !settings::moves(size) {
        return raw::shmget(key, size, flags);
    }
    let made_here = key == libc::IPC_PRIVATE || flags & libc::IPC_EXCL != 0;
    let (id, made) = if made_here {
        (raw::shmget(key, size, flags)?, true)
    } else {
        match raw::shmget(key, size, flags | libc::IPC_EXCL) {
            Ok(id) => (id, true),
            Err(Errno(libc::EEXIST)) => (raw::shmget(key, size, flags)?, false),
            Err(errno) => return Err(errno),
        }
    };
    if !made {
        return Ok(id);
    }
    let what = format_args!("System V segment {id} ({size} bytes)");
    match settings::for_move()
        .and_then(|settings| region::check_module(settings.mode))
        .and_then(|_| make_region(id, size, (flags & 0o777) as u32))
    {
        Ok(name) => {
            if settings::verbose() {
                report::say(format_args!("{what}: region {name}"));
            }
            Ok(id)
        }
        Err(error) if settings::falls_back() => {
            report::fell_back(what, &error);
            Ok(id)
        }
        Err(error) => {
            report::refused(what, &error);
            let _ = raw::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            Err(error.errno())
        }
    }
}

/// The region for a segment just made. A region left by an earlier segment with the same
/// id (removed without IPC_RMID through this library) is stale: replaced.
fn make_region(id: c_int, size: usize, mode: u32) -> Result<String, MoveError> {
    let name = sysv_region_name(id);
    match MovedRegion::make(&name, size as u64, mode) {
        Err(MoveError::Region { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
            MovedRegion::open(&name, false).map(|stale| stale.unlink()).ok();
            MovedRegion::make(&name, size as u64, mode)
        }
        made => made,
    }
    .map(|_| name)
}

/// The program's `shmat`.
pub(crate) fn shmat(id: c_int, addr: *const c_void, flags: c_int) -> Result<usize, Errno> {
    let read_only = flags & libc::SHM_RDONLY != 0;
    let region = match MovedRegion::open(&sysv_region_name(id), !read_only) {
        Ok(region) => region,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return raw::shmat(id, addr, flags),
        Err(e) => return Err(Errno::of(&e)),
    };
    let mut at = addr as usize;
    if flags & libc::SHM_RND != 0 {
        at -= at % SHMLBA;
    }
    let mut prot = libc::PROT_READ;
    if !read_only {
        prot |= libc::PROT_WRITE;
    }
    if flags & libc::SHM_EXEC != 0 {
        prot |= libc::PROT_EXEC;
    }
    let placement = match (at, flags & libc::SHM_REMAP != 0) {
        (0, _) => 0,
        (_, true) => libc::MAP_FIXED,
        (_, false) => libc::MAP_FIXED_NOREPLACE,
    };
    let shares_tables = SystemStats::read().is_ok_and(|stats| stats.shares_tables());
    let window = region::window_len(region.size, shares_tables) as usize;
    let shadow = raw::shmat(id, std::ptr::null(), libc::SHM_RDONLY)?;
    let start = match region.map(at, window, prot, placement) {
        Ok(start) => start,
        Err(error) => {
            let _ = raw::shmdt(shadow as *const c_void);
            return Err(error.errno());
        }
    };
    windows::record(Moved { start, asked: window, mapped: window, sysv_shadow: Some(shadow) });
    Ok(start)
}

/// The program's `shmdt`.
pub(crate) fn shmdt(addr: *const c_void) -> Result<(), Errno> {
    let Some(moved) = windows::take_attachment(addr as usize) else { return raw::shmdt(addr) };
    raw::munmap(moved.start, moved.mapped)?;
    if let Some(shadow) = moved.sysv_shadow {
        raw::shmdt(shadow as *const c_void)?;
    }
    Ok(())
}

/// The program's `shmctl`: the kernel's answer; IPC_RMID that succeeds removes the region.
pub(crate) fn shmctl(id: c_int, cmd: c_int, buf: *mut shmid_ds) -> Result<c_int, Errno> {
    let ret = raw::shmctl(id, cmd, buf)?;
    if cmd == libc::IPC_RMID {
        if let Ok(region) = MovedRegion::open(&sysv_region_name(id), false) {
            region.unlink();
        }
    }
    Ok(ret)
}
