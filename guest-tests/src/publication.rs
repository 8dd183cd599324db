//! The header through which one writer publishes read-only database snapshots to readers
//! in other VMs (`mshare-lmdb publish` / `follow`).
//!
//! LMDB's own reader table lives in a lock file and its locks are futexes, neither of which
//! spans VMs, so readers in other VMs open a snapshot without locks: nothing may change
//! it while they read. Snapshots therefore alternate between two data regions (slots):
//! generation `g` lives in slot `g % 2`, and the writer builds generation `g + 1` in the
//! other slot, which readers left when `g` was published.
//!
//! The header is the first bytes of a third, small region, three 64-bit words written
//! only by the writer:
//! - `magic`: [`MAGIC`] once the header was initialized;
//! - `generation`: the newest complete generation (0: none yet), stored with release
//!   order after its slot was written, so a reader that loads it with acquire order sees
//!   the whole snapshot;
//! - `writing`: the generation being built, stored before its slot is touched.
//!
//! A reader loads `generation` (g), reads slot `g % 2`, then loads `writing`: if it
//! reached `g + 2`, the writer may have begun overwriting that slot under the reader, and
//! the reader discards what it read and starts again. The writer also waits [`GRACE`]
//! after announcing `writing` and before touching the slot, so that a reader whose
//! transaction began before the announcement has finished: LMDB following a torn page
//! could fault before the check above ran. A reader holding one read transaction longer
//! than the grace is the case this cannot protect.

use mshare_uapi::Window;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// "MSLMDBPB": the header was initialized.
pub const MAGIC: u64 = 0x4d53_4c4d_4442_5042;
/// How long the writer waits between announcing a generation and writing its slot.
pub const GRACE: Duration = Duration::from_secs(1);
const MAGIC_AT: usize = 0;
const GENERATION_AT: usize = 8;
const WRITING_AT: usize = 16;
const HEADER_BYTES: usize = 24;

/// A mapped publication header.
pub struct Header {
    window: Window,
}

impl Header {
    /// Maps the header region at `path`, writable for the writer.
    pub fn open(path: &Path, writable: bool) -> io::Result<Self> {
        let file: File = OpenOptions::new().read(true).write(writable).open(path)?;
        let len = usize::try_from(file.metadata()?.len()).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        if len < HEADER_BYTES {
            return Err(io::Error::other(format!("{}: {len} bytes, too small for a header", path.display())));
        }
        Ok(Self { window: Window::map(&file, len, 0, !writable)? })
    }

    fn word(&self, at: usize) -> &AtomicU64 {
        // SAFETY: inside the mapping (at least HEADER_BYTES long, checked in `open`), 8-byte
        // aligned (the mapping is page aligned); the memory is shared with other processes
        // and VMs, which only ever use it through atomics too.
        unsafe { &*self.window.as_ptr().add(at).cast::<AtomicU64>() }
    }

    /// Whether the writer initialized it.
    pub fn initialized(&self) -> bool {
        self.word(MAGIC_AT).load(Ordering::Acquire) == MAGIC
    }

    /// The newest complete generation, 0 if none (or not initialized).
    pub fn generation(&self) -> u64 {
        if !self.initialized() {
            return 0;
        }
        self.word(GENERATION_AT).load(Ordering::Acquire)
    }

    /// The generation being built (equal to [`Header::generation`] when none is).
    pub fn writing(&self) -> u64 {
        self.word(WRITING_AT).load(Ordering::Acquire)
    }

    /// Writer: initializes a header that holds no publication yet.
    pub fn initialize(&self) {
        if !self.initialized() {
            self.word(GENERATION_AT).store(0, Ordering::Relaxed);
            self.word(WRITING_AT).store(0, Ordering::Relaxed);
            self.word(MAGIC_AT).store(MAGIC, Ordering::Release);
        }
    }

    /// Writer: announces that `next` is being built (readers of slot `next % 2` retry).
    pub fn announce(&self, next: u64) {
        self.word(WRITING_AT).store(next, Ordering::Release);
    }

    /// Writer: publishes `next`, whose slot is complete.
    pub fn publish(&self, next: u64) {
        self.word(GENERATION_AT).store(next, Ordering::Release);
    }
}

/// The slot of generation `generation`.
pub fn slot(generation: u64) -> usize {
    (generation % 2) as usize
}

/// Whether a read of generation `read`'s slot may have been overwritten, `writing` being
/// the header's word loaded after the read.
pub fn overwritten(read: u64, writing: u64) -> bool {
    writing >= read + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_alternate_slots() {
        assert_eq!((slot(1), slot(2), slot(3)), (1, 0, 1));
    }

    #[test]
    fn only_building_the_generation_after_next_touches_a_slot_being_read() {
        // Reading 5 (slot 1): 6 goes to slot 0, 7 would overwrite slot 1.
        assert!(!overwritten(5, 5));
        assert!(!overwritten(5, 6));
        assert!(overwritten(5, 7));
    }
}
