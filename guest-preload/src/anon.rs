//! Shared anonymous mappings (`mmap(NULL, len, ..., MAP_SHARED | MAP_ANONYMOUS, -1, 0)`):
//! at least the threshold, each becomes a window of a region of its own. The region's
//! name is removed once mapped, so that, like the memory it replaces, it goes with its
//! last mapping, and what the program's processes share is what they inherit by fork.

use crate::raw::{self, Errno};
use crate::region::{self, MoveError, MovedRegion};
use crate::windows::{self, Moved};
use crate::{report, settings};
use libc::{c_int, off_t};
use std::sync::atomic::{AtomicU64, Ordering};

/// Flags of the program's mapping that its window keeps.
const KEPT_FLAGS: c_int = libc::MAP_NORESERVE | libc::MAP_POPULATE | libc::MAP_LOCKED;

/// Regions made by this process so far: the last part of their names.
static MADE: AtomicU64 = AtomicU64::new(0);

/// Whether a mapping is shared anonymous memory this library takes: not at a fixed
/// address (a window's address is granule aligned, which the program's need not be).
fn is_shared_anonymous(flags: c_int, fd: c_int) -> bool {
    let kind = flags & libc::MAP_TYPE;
    (kind == libc::MAP_SHARED || kind == libc::MAP_SHARED_VALIDATE)
        && flags & libc::MAP_ANONYMOUS != 0
        && flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) == 0
        && fd == -1
}

/// The program's `mmap`.
pub(crate) fn mmap(
    addr: usize,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    offset: off_t,
) -> Result<usize, Errno> {
    if !is_shared_anonymous(flags, fd) || !settings::moves(len) {
        return raw::mmap(addr, len, prot, flags, fd, offset);
    }
    match move_mapping(addr, len, prot, flags) {
        Ok((start, name)) => {
            if settings::verbose() {
                report::say(format_args!("{len} bytes of shared anonymous memory at {start:#x}: region {name}"));
            }
            Ok(start)
        }
        Err(error) if settings::falls_back() => {
            report::fell_back(format_args!("{len} bytes of shared anonymous memory"), &error);
            raw::mmap(addr, len, prot, flags, fd, offset)
        }
        Err(error) => {
            report::refused(format_args!("{len} bytes of shared anonymous memory"), &error);
            Err(error.errno())
        }
    }
}

fn move_mapping(addr: usize, len: usize, prot: c_int, flags: c_int) -> Result<(usize, String), MoveError> {
    let settings = settings::for_move()?;
    let shares_tables = region::check_module(settings.mode)?;
    let name = format!("{}-{}-{}", settings.name, std::process::id(), MADE.fetch_add(1, Ordering::Relaxed));
    let region = MovedRegion::make(&name, len as u64, 0o600)?;
    let window = region::window_len(region.size, shares_tables) as usize;
    let mapped = region.map(addr, window, prot, flags & KEPT_FLAGS);
    region.unlink();
    let start = mapped?;
    windows::record(Moved { start, asked: len, mapped: window, sysv_shadow: None });
    Ok((start, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shared_anonymous_memory_at_no_fixed_address_moves() {
        let shared_anon = libc::MAP_SHARED | libc::MAP_ANONYMOUS;
        assert!(is_shared_anonymous(shared_anon, -1));
        assert!(is_shared_anonymous(libc::MAP_SHARED_VALIDATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB, -1));
        assert!(!is_shared_anonymous(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1));
        assert!(!is_shared_anonymous(libc::MAP_SHARED, 3));
        assert!(!is_shared_anonymous(shared_anon | libc::MAP_FIXED, -1));
        assert!(!is_shared_anonymous(shared_anon | libc::MAP_FIXED_NOREPLACE, -1));
    }
}
