//! The msharefs ABI (see docs/design.md, "Guest ABI"): region files under
//! /sys/fs/mshare and their ioctls. The items at the top level are the January 2025
//! series' API ("v1", what a default mount speaks); [`v3`] holds the v2/v3 series' requests,
//! which a mount with `-o api=v3` speaks instead (their numbers collide with v1's).

use crate::abi;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Where msharefs is mounted.
pub const MOUNT: &str = abi::MSHAREFS_MOUNT;

/// `struct mshare_info { __u64 start; __u64 size; }`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MshareInfo {
    /// The address every process maps the region at (v1); 0 for anywhere.
    pub start: u64,
    /// Size in bytes (0 until set).
    pub size: u64,
}

/// v1's `MSHAREFS_GET_SIZE` ([`MshareInfo`] out).
pub const MSHAREFS_GET_SIZE: u64 = abi::MSHAREFS_V1_GET_SIZE;
/// v1's `MSHAREFS_SET_SIZE` ([`MshareInfo`] in).
pub const MSHAREFS_SET_SIZE: u64 = abi::MSHAREFS_V1_SET_SIZE;
/// v1's `MSHAREFS_CREATE_MAPPING` ([`MshareCreate`]).
pub const MSHAREFS_CREATE_MAPPING: u64 = abi::MSHAREFS_V1_CREATE_MAPPING;
/// v1's `MSHAREFS_UNMAP` ([`MshareUnmap`]).
pub const MSHAREFS_UNMAP: u64 = abi::MSHAREFS_V1_UNMAP;

/// `struct mshare_create`: `addr` is v1's address inside the region (an offset when the
/// region has no start), or v3's `region_offset`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MshareCreate {
    /// v1: address inside `[start, start + size)`, or an offset with no start; v3: the
    /// offset inside the region (granule aligned either way).
    pub addr: u64,
    /// Length (whole granules).
    pub size: u64,
    /// Offset into `fd`'s file (0 for anonymous memory).
    pub offset: u64,
    /// `PROT_*`.
    pub prot: u32,
    /// `MAP_*`: MAP_SHARED | MAP_ANONYMOUS for anonymous shared memory.
    pub flags: u32,
    /// A file to map, or `u32::MAX` (-1) for anonymous memory.
    pub fd: u32,
}

impl MshareCreate {
    /// Anonymous shared read-write memory at `[addr, addr + size)` of the region.
    pub fn anonymous(addr: u64, size: u64) -> Self {
        Self {
            addr,
            size,
            offset: 0,
            prot: (libc::PROT_READ | libc::PROT_WRITE) as u32,
            flags: (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u32,
            fd: u32::MAX,
        }
    }
}

/// `struct mshare_unmap`: `addr` is v1's address inside the region (an offset when the
/// region has no start), or v3's `region_offset`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MshareUnmap {
    /// Start of the part to take back (granule aligned), as in [`MshareCreate::addr`].
    pub addr: u64,
    /// Its length (whole granules).
    pub size: u64,
}

/// `MSHAREFS_GET_STATS` ([`MshareStats`] out), this project's extension.
pub const MSHAREFS_GET_STATS: u64 = abi::MSHAREFS_GET_STATS;
/// `MSHAREFS_GET_STATS` as programs built before `links_now` carry it: the first 72 bytes.
pub const MSHAREFS_GET_STATS_72: u64 = abi::MSHAREFS_GET_STATS_72;
/// `MSHAREFS_SET_PROT` (a `u64`), this project's extension: `PROT_READ` or
/// `PROT_READ | PROT_WRITE` for every process sharing the region's page tables at once.
pub const MSHAREFS_SET_PROT: u64 = abi::MSHAREFS_SET_PROT;

/// `struct mshare_stats`: how a region is used.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MshareStats {
    /// Mapped windows (VMAs) of the region, in all processes.
    pub windows: u64,
    /// Faults that mapped memory into one process (mode C: one per granule per window).
    pub faults: u64,
    /// Bytes of the region that have memory (CREATE_MAPPING'd).
    pub backed: u64,
    /// Shared PTE tables (mode B), one page each.
    pub tables: u64,
    /// Times a shared table was linked into a process (mode B).
    pub links: u64,
    /// Bytes of the region that are a file's pages (CREATE_MAPPING with a descriptor).
    pub file_backed: u64,
    /// Shared PMD tables (mode B, windows of whole GiBs), one page each.
    pub pmd_tables: u64,
    /// Times a shared PMD table was linked into a process.
    pub pmd_links: u64,
    /// Bytes mapped by 2 MiB leaves in the shared PMD tables.
    pub huge_leaf_bytes: u64,
    /// Shared tables linked now, summed over processes (mode B): a process that touched
    /// a window over all of a region links each of its tables once. `/proc`'s Pss divides
    /// a table's pages among the processes that link it.
    pub links_now: u64,
}

/// `MSHAREFS_SET_PROT`: `libc::PROT_READ`, or with `libc::PROT_WRITE`.
pub fn set_prot(file: &File, prot: i32) -> io::Result<()> {
    let mut prot = prot as u64;
    ioctl(file, MSHAREFS_SET_PROT, &mut prot as *mut u64 as usize)
}

/// `/sys/fs/mshare/mshare_stats`: the module's mode and system-wide counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SystemStats {
    /// "B" (page tables shared between processes) or "C" (a huge PFN mapping per process).
    pub mode: String,
    /// Regions (msharefs files and device regions).
    pub regions: u64,
    /// Bytes of guest memory the module holds for regions (device memory not counted).
    pub memory_bytes: u64,
    /// Mapped windows in all processes.
    pub windows: u64,
    /// Windows that share their region's tables.
    pub shared_windows: u64,
    /// Shared PTE tables.
    pub shared_tables: u64,
    /// Times a shared table was linked into a process.
    pub table_links: u64,
    /// Shared PMD tables.
    pub shared_pmd_tables: u64,
    /// Times a shared PMD table was linked into a process.
    pub pmd_table_links: u64,
    /// Faults that mapped memory into one process (mode C).
    pub pfn_faults: u64,
}

impl SystemStats {
    /// Reads `mshare_stats`.
    pub fn read() -> io::Result<Self> {
        Self::parse(&std::fs::read_to_string(format!("{MOUNT}/mshare_stats"))?)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "mshare_stats: unexpected contents"))
    }

    /// Parses `name value` lines; `None` without a mode line or with a bad number.
    pub fn parse(text: &str) -> Option<Self> {
        let mut stats = Self::default();
        for line in text.lines() {
            let (name, value) = line.split_once(' ')?;
            let number = || value.parse::<u64>().ok();
            match name {
                "mode" => stats.mode = value.to_owned(),
                "regions" => stats.regions = number()?,
                "memory_bytes" => stats.memory_bytes = number()?,
                "windows" => stats.windows = number()?,
                "shared_windows" => stats.shared_windows = number()?,
                "shared_tables" => stats.shared_tables = number()?,
                "table_links" => stats.table_links = number()?,
                "shared_pmd_tables" => stats.shared_pmd_tables = number()?,
                "pmd_table_links" => stats.pmd_table_links = number()?,
                "pfn_faults" => stats.pfn_faults = number()?,
                _ => {}
            }
        }
        (!stats.mode.is_empty()).then_some(stats)
    }

    /// Whether page tables are shared (mode B).
    pub fn shares_tables(&self) -> bool {
        self.mode == "B"
    }

    /// Whether the module is in `mode`.
    pub fn is_mode(&self, mode: crate::preload::Mode) -> bool {
        self.mode == mode.to_string()
    }
}

/// `MSHAREFS_GET_STATS`.
pub fn get_stats(file: &File) -> io::Result<MshareStats> {
    let mut stats = MshareStats::default();
    ioctl(file, MSHAREFS_GET_STATS, &mut stats as *mut MshareStats as usize)?;
    Ok(stats)
}

/// `MSHAREFS_CREATE_MAPPING`.
pub fn create_mapping(file: &File, create: &MshareCreate) -> io::Result<()> {
    create_mapping_with(file, MSHAREFS_CREATE_MAPPING, create)
}

/// `MSHAREFS_UNMAP` of `[addr, addr + size)` of the region.
pub fn unmap(file: &File, addr: u64, size: u64) -> io::Result<()> {
    unmap_with(file, MSHAREFS_UNMAP, addr, size)
}

/// CREATE_MAPPING with the request number of one API or the other.
fn create_mapping_with(file: &File, cmd: u64, create: &MshareCreate) -> io::Result<()> {
    let mut create = *create;
    ioctl(file, cmd, &mut create as *mut MshareCreate as usize)
}

/// UNMAP with the request number of one API or the other.
fn unmap_with(file: &File, cmd: u64, addr: u64, size: u64) -> io::Result<()> {
    let mut unmap = MshareUnmap { addr, size };
    ioctl(file, cmd, &mut unmap as *mut MshareUnmap as usize)
}

/// `ioctl(fd, cmd, arg)` with errno as an `io::Error`. `arg` is an address in this
/// process; the kernel validates it (tests pass bad ones on purpose).
pub fn ioctl(file: &File, cmd: u64, arg: usize) -> io::Result<()> {
    ioctl_value(file, cmd, arg).map(|_| ())
}

/// `ioctl(fd, cmd, arg)`, returning what the call returns (a file descriptor for some).
pub fn ioctl_value(file: &File, cmd: u64, arg: usize) -> io::Result<i32> {
    // SAFETY: the kernel only accesses `arg` through its user-copy routines, which fail
    // cleanly with EFAULT on a bad address; nothing here dereferences it.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), cmd as libc::Ioctl, arg) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `MSHAREFS_GET_SIZE`.
pub fn get_size(file: &File) -> io::Result<MshareInfo> {
    let mut info = MshareInfo::default();
    ioctl(file, MSHAREFS_GET_SIZE, &mut info as *mut MshareInfo as usize)?;
    Ok(info)
}

/// `MSHAREFS_SET_SIZE` with no fixed address.
pub fn set_size(file: &File, size: u64) -> io::Result<()> {
    set_size_at(file, 0, size)
}

/// `MSHAREFS_SET_SIZE` with the address every process maps the region at (`start`).
pub fn set_size_at(file: &File, start: u64, size: u64) -> io::Result<()> {
    let mut info = MshareInfo { start, size };
    ioctl(file, MSHAREFS_SET_SIZE, &mut info as *mut MshareInfo as usize)
}

/// The API (`"v1"` or `"v3"`) of the msharefs mount at `mount`, from /proc/mounts.
pub fn mount_api(mount: &str) -> io::Result<String> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    // The last mount at the path is the one a lookup sees.
    mounts
        .lines()
        .rev()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && f[1] == mount && f[2] == "msharefs")
        .and_then(|f| f[3].split(',').find_map(|o| o.strip_prefix("api=")).map(str::to_owned))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no msharefs mount with api= at {mount}")))
}

/// The requests of the v2/v3 series (April and August 2025), for a mount with `-o api=v3`:
/// the size by `ftruncate`/`fallocate` and `fstat`, no size ioctls, and these two taking a
/// `region_offset`.
pub mod v3 {
    use super::{create_mapping_with, unmap_with, MshareCreate};
    use crate::abi;
    use std::fs::File;
    use std::io;

    /// v3's `MSHAREFS_CREATE_MAPPING`; `MshareCreate::addr` is the `region_offset`.
    pub const MSHAREFS_CREATE_MAPPING: u64 = abi::MSHAREFS_V3_CREATE_MAPPING;
    /// v3's `MSHAREFS_UNMAP`: the number of v1's `MSHAREFS_SET_SIZE`.
    pub const MSHAREFS_UNMAP: u64 = abi::MSHAREFS_V3_UNMAP;

    /// `MSHAREFS_CREATE_MAPPING` (v3 requires `MAP_FIXED` in `flags`).
    pub fn create_mapping(file: &File, create: &MshareCreate) -> io::Result<()> {
        create_mapping_with(file, MSHAREFS_CREATE_MAPPING, create)
    }

    /// `MSHAREFS_UNMAP` of `[region_offset, region_offset + size)`.
    pub fn unmap(file: &File, region_offset: u64, size: u64) -> io::Result<()> {
        unmap_with(file, MSHAREFS_UNMAP, region_offset, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_stats_parse_and_reject_garbage() {
        let text = "mode B\nregions 2\nwindows 3\nshared_windows 1\nshared_tables 4\nshared_table_bytes 16384\ntable_links 5\nshared_pmd_tables 7\npmd_table_links 8\npfn_faults 6\n";
        let stats = SystemStats::parse(text).expect("parses");
        assert!(stats.shares_tables());
        assert_eq!((stats.regions, stats.windows, stats.shared_windows), (2, 3, 1));
        assert_eq!((stats.shared_tables, stats.table_links, stats.pfn_faults), (4, 5, 6));
        assert_eq!((stats.shared_pmd_tables, stats.pmd_table_links), (7, 8));
        assert_eq!(SystemStats::parse("regions 2\n"), None);
        assert_eq!(SystemStats::parse("mode C\nregions x\n"), None);
    }
}
