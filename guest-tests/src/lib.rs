//! Shared helpers for the guest programs (they run inside the mshare-vmm guest, statically
//! linked, with nothing but busybox beside them).

pub mod ivshmem;
pub mod postgres;
pub mod process;
pub mod publication;
pub mod rng;
pub mod suite;
pub mod workload;
pub use mshare_uapi::msharefs;

use std::ffi::CStr;
use std::fs::{self, File};
use std::io;
use std::os::fd::FromRawFd;
use std::path::Path;

/// Reads a sysfs attribute and trims the trailing newline.
pub fn read_attr(path: impl AsRef<Path>) -> io::Result<String> {
    let path = path.as_ref();
    fs::read_to_string(path)
        .map(|s| s.trim_end().to_owned())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// A `/proc/meminfo` figure in KiB (`key` with its colon, e.g. `"PageTables:"`), 0 if
/// absent. The per-CPU counter deltas are folded in first (`/proc/sys/vm/stat_refresh`):
/// without it PageTables lags by up to a threshold per CPU, as large as what is measured.
pub fn meminfo_kib(key: &str) -> u64 {
    let _ = fs::write("/proc/sys/vm/stat_refresh", "1");
    kib_line(&fs::read_to_string("/proc/meminfo").unwrap_or_default(), key)
}

/// PageTables in KiB once it stopped falling: page tables of processes that just exited
/// are freed after an RCU grace period, which takes a while in an emulated guest; a
/// baseline taken before would hide the tables of the processes measured next. Waits at
/// most 5 s.
pub fn settled_pagetables_kib() -> u64 {
    let mut last = meminfo_kib("PageTables:");
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = meminfo_kib("PageTables:");
        if now >= last {
            return now;
        }
        last = now;
    }
    last
}

/// A `/proc/self/status` figure of this process in KiB (`key` with its colon, e.g.
/// `"VmPTE:"`), 0 if absent.
pub fn status_kib(key: &str) -> u64 {
    kib_line(&fs::read_to_string("/proc/self/status").unwrap_or_default(), key)
}

/// A `/proc/PID/status` figure of process `pid` in KiB, 0 if absent (or the process gone).
pub fn status_kib_of(pid: u32, key: &str) -> u64 {
    kib_line(&fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default(), key)
}

fn kib_line(text: &str, key: &str) -> u64 {
    mshare_uapi::formats::kib_lines(text).get(key.trim_end_matches(':')).copied().unwrap_or(0)
}

/// Minor faults this process has taken so far.
pub fn minor_faults() -> u64 {
    // SAFETY: rusage is plain data, filled by getrusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage to fill.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_minflt as u64
}

/// The minor faults `work` takes in this process (a first call before it, so that the
/// reading of the counter has faulted in whatever it needs).
pub fn faults_of(work: impl FnOnce()) -> u64 {
    minor_faults();
    let before = minor_faults();
    work();
    minor_faults() - before
}

/// The name of `e`'s errno for the errnos a region's calls give ("EINVAL"), else its text.
pub fn errno_name(e: &io::Error) -> String {
    let names = [
        (libc::EINVAL, "EINVAL"),
        (libc::ENOSYS, "ENOSYS"),
        (libc::EFAULT, "EFAULT"),
        (libc::EPERM, "EPERM"),
        (libc::EACCES, "EACCES"),
        (libc::ENOMEM, "ENOMEM"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
        (libc::EAGAIN, "EAGAIN"),
        (libc::ENOENT, "ENOENT"),
        (libc::EBUSY, "EBUSY"),
    ];
    match e.raw_os_error().and_then(|n| names.iter().find(|(v, _)| *v == n)) {
        Some((_, name)) => (*name).to_owned(),
        None => e.to_string(),
    }
}

/// Minor faults of this process's children that were waited for, so far.
pub fn children_minor_faults() -> u64 {
    // SAFETY: rusage is plain data, filled by getrusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage to fill.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_minflt as u64
}

/// FNV-1a of `bytes`: the checksum the stress and database programs put in their pages.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// A new memfd called `name` (`memfd_create(2)` with `flags`).
pub fn memfd(name: &CStr, flags: libc::c_uint) -> io::Result<File> {
    // SAFETY: memfd_create with a valid C string; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned here.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Parses a number written in decimal or, with a `0x` prefix, in hexadecimal.
pub fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

pub use mshare_uapi::formats::parse_size;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_and_hex() {
        assert_eq!(parse_number("7"), Some(7));
        assert_eq!(parse_number("0xf4"), Some(0xf4));
        assert_eq!(parse_number("0XF4"), Some(0xf4));
        assert_eq!(parse_number("f4"), None);
        assert_eq!(parse_number(""), None);
    }

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("99999999999G"), None);
    }

    #[test]
    fn read_attr_names_the_missing_file() {
        let err = read_attr("/nonexistent/attr").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/attr"));
    }
}
