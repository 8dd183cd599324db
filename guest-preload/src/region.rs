//! Regions for moved memory: made with memory for all of them, as shared anonymous memory
//! and System V segments are (zeroed, shared by whoever maps them), and mapped as windows.

use crate::raw::{self, Errno};
use mshare_uapi::msharefs::{self, MshareCreate, SystemStats, MOUNT};
use mshare_uapi::preload::{BadSetting, Mode};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// Why memory could not move onto msharefs.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MoveError {
    #[error("msharefs is not mounted at {MOUNT} (is mshare.ko loaded?)")]
    NoMsharefs,
    #[error("{0}")]
    Settings(&'static BadSetting),
    #[error("MSHARE_MODE={wanted}, but the module is in mode {module} (boot the guest with mshare_params=shared_tables={} or unset MSHARE_MODE)", wanted.shared_tables())]
    ModeMismatch { wanted: Mode, module: String },
    #[error("{MOUNT}/mshare_stats: {0}")]
    Stats(io::Error),
    #[error("region {MOUNT}/{name}: {what}: {source}")]
    Region { name: String, what: &'static str, source: io::Error },
    #[error("the window of region {MOUNT}/{name}: mmap: {}", io::Error::from_raw_os_error(.errno.0))]
    Window { name: String, errno: Errno },
}

impl MoveError {
    /// What the call that could not move its memory fails with.
    pub(crate) fn errno(&self) -> Errno {
        match self {
            Self::NoMsharefs => Errno(libc::ENODEV),
            Self::ModeMismatch { .. } | Self::Settings(_) => Errno(libc::EINVAL),
            Self::Stats(source) | Self::Region { source, .. } => Errno::of(source),
            Self::Window { errno, .. } => *errno,
        }
    }
}

/// Whether memory may move here: msharefs mounted, in the mode asked for (if any). Gives
/// whether the module shares page tables (mode B).
pub(crate) fn check_module(wanted: Option<Mode>) -> Result<bool, MoveError> {
    let stats = SystemStats::read().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => MoveError::NoMsharefs,
        _ => MoveError::Stats(e),
    })?;
    match wanted {
        Some(wanted) if !stats.is_mode(wanted) => Err(MoveError::ModeMismatch { wanted, module: stats.mode }),
        _ => Ok(stats.shares_tables()),
    }
}

/// A GiB: what one PMD table maps.
const GIB: u64 = 1 << 30;

/// How long a window of a region of `size` bytes is. Where the module shares page tables,
/// whole GiBs (the module lets a window run on to the end of its region's last GiB): every
/// process then links one shared PMD table per GiB with one fault, instead of a PTE table
/// per 2 MiB with a fault each. The rest of the last GiB is address space only; touching it
/// is SIGBUS, as past the end of any file.
pub(crate) fn window_len(size: u64, shares_tables: bool) -> u64 {
    if shares_tables {
        size.next_multiple_of(GIB)
    } else {
        size
    }
}

/// The granule: region sizes and windows are whole granules.
pub(crate) fn granule() -> Result<u64, MoveError> {
    let path = format!("{MOUNT}/mshare_info");
    let text = fs::read_to_string(&path).map_err(|_| MoveError::NoMsharefs)?;
    text.trim().parse::<u64>().ok().filter(|g| g.is_power_of_two()).ok_or_else(|| MoveError::Region {
        name: "mshare_info".to_owned(),
        what: "reading the granule",
        source: io::Error::new(io::ErrorKind::InvalidData, format!("{:?} is not a granule", text.trim())),
    })
}

/// A region made for moved memory, open read-write.
pub(crate) struct MovedRegion {
    pub(crate) name: String,
    pub(crate) file: File,
    /// Its size: what was asked for, rounded up to whole granules.
    pub(crate) size: u64,
}

impl MovedRegion {
    /// Makes region `name` (which must not exist) of at least `len` bytes, permissions
    /// `mode`, with zeroed memory for all of it; removed again if that fails.
    pub(crate) fn make(name: &str, len: u64, mode: u32) -> Result<Self, MoveError> {
        let size = len.checked_next_multiple_of(granule()?).ok_or(MoveError::Region {
            name: name.to_owned(),
            what: "size",
            source: io::Error::from_raw_os_error(libc::ENOMEM),
        })?;
        let path = format!("{MOUNT}/{name}");
        let failed = |what, source| MoveError::Region { name: name.to_owned(), what, source };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| failed("create", e))?;
        let region = Self { name: name.to_owned(), file, size };
        if let Err((what, source)) = region.fill() {
            let _ = fs::remove_file(&path);
            return Err(failed(what, source));
        }
        Ok(region)
    }

    /// Sets the size and gives the region its memory, in the API the mount speaks.
    fn fill(&self) -> Result<(), (&'static str, io::Error)> {
        let api = msharefs::mount_api(MOUNT).map_err(|e| ("reading the mount's API", e))?;
        if api == "v3" {
            self.file.set_len(self.size).map_err(|e| ("ftruncate", e))?;
            let mut create = MshareCreate::anonymous(0, self.size);
            create.flags |= libc::MAP_FIXED as u32;
            msharefs::v3::create_mapping(&self.file, &create).map_err(|e| ("CREATE_MAPPING", e))
        } else {
            msharefs::set_size(&self.file, self.size).map_err(|e| ("SET_SIZE", e))?;
            msharefs::create_mapping(&self.file, &MshareCreate::anonymous(0, self.size))
                .map_err(|e| ("CREATE_MAPPING", e))
        }
    }

    /// Opens region `name` made earlier, read-write or read-only.
    pub(crate) fn open(name: &str, writable: bool) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(writable).open(format!("{MOUNT}/{name}"))?;
        let size = file.metadata()?.len();
        Ok(Self { name: name.to_owned(), file, size })
    }

    /// Maps a window of `len` bytes from the region's start (`MAP_SHARED` and
    /// `extra_flags`) at `addr` (0: where the kernel finds room), with `prot`.
    pub(crate) fn map(&self, addr: usize, len: usize, prot: i32, extra_flags: i32) -> Result<usize, MoveError> {
        raw::mmap(addr, len, prot, libc::MAP_SHARED | extra_flags, self.file.as_raw_fd(), 0)
            .map_err(|errno| MoveError::Window { name: self.name.clone(), errno })
    }

    /// Removes the region's name: its memory goes with the last window.
    pub(crate) fn unlink(&self) {
        let _ = fs::remove_file(format!("{MOUNT}/{}", self.name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_whole_gibs_only_where_tables_are_shared() {
        assert_eq!(window_len(64 << 20, true), GIB);
        assert_eq!(window_len(GIB + (2 << 20), true), 2 * GIB);
        assert_eq!(window_len(64 << 20, false), 64 << 20);
    }
}
