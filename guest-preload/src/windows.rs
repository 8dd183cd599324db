//! The windows this library mapped in place of the program's shared memory. A window is
//! whole granules, so it may be longer than what the program asked for; the program's
//! `munmap` of what it got must take the rest too, and its `shmdt` of an attachment must
//! find the window's length. Children inherit the table with the mappings (fork), and
//! lose both at exec.

use crate::raw::{self, Errno};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A window in place of the program's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moved {
    /// Its address.
    pub(crate) start: usize,
    /// What the program asked for.
    pub(crate) asked: usize,
    /// What is mapped: `asked` rounded up to whole granules (whole GiBs in mode B).
    pub(crate) mapped: usize,
    /// For an attachment of a System V segment: where the segment itself is attached too
    /// (never touched; it keeps the kernel's count of attachments, which programs read
    /// with IPC_STAT, true).
    pub(crate) sysv_shadow: Option<usize>,
}

impl Moved {
    fn end(&self) -> usize {
        self.start + self.mapped
    }
}

static MOVED: Mutex<Vec<Moved>> = Mutex::new(Vec::new());
/// How many windows there are, read without the lock: most programs' `munmap` calls then
/// never take it.
static COUNT: AtomicUsize = AtomicUsize::new(0);

fn table() -> MutexGuard<'static, Vec<Moved>> {
    MOVED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records a window just mapped.
pub(crate) fn record(moved: Moved) {
    let mut table = table();
    table.retain(|m| m.end() <= moved.start || m.start >= moved.end());
    table.push(moved);
    COUNT.store(table.len(), Ordering::Release);
}

/// The program's `munmap(addr, len)`: also unmaps the hidden rest of a window whose
/// visible part the range ends in, and forgets the windows it unmaps whole.
pub(crate) fn munmap(addr: usize, len: usize) -> Result<(), Errno> {
    if COUNT.load(Ordering::Acquire) == 0 {
        return raw::munmap(addr, len);
    }
    let mut table = table();
    let end = addr.saturating_add(len);
    let end = table.iter().find(|m| m.start < end && end >= m.start + m.asked && end < m.end()).map_or(end, Moved::end);
    raw::munmap(addr, end - addr)?;
    // An attachment's shadow goes with it, as shmdt would take it.
    for gone in table.iter().filter(|m| m.start >= addr && m.end() <= end) {
        if let Some(shadow) = gone.sysv_shadow {
            let _ = raw::shmdt(shadow as *const libc::c_void);
        }
    }
    table.retain(|m| m.start < addr || m.end() > end);
    COUNT.store(table.len(), Ordering::Release);
    Ok(())
}

/// Takes the record of the System V attachment at `addr`, if it is one of this library's.
pub(crate) fn take_attachment(addr: usize) -> Option<Moved> {
    if COUNT.load(Ordering::Acquire) == 0 {
        return None;
    }
    let mut table = table();
    let index = table.iter().position(|m| m.start == addr && m.sysv_shadow.is_some())?;
    let moved = table.swap_remove(index);
    COUNT.store(table.len(), Ordering::Release);
    Some(moved)
}
