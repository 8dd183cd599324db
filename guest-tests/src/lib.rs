//! Shared helpers for the guest programs (they run inside the mshare-vmm guest, statically
//! linked, with nothing but busybox beside them).

pub mod ivshmem;
pub mod process;
pub mod rng;
pub use mshare_uapi::msharefs;

use std::fs;
use std::io;
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
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok()))
        .unwrap_or(0)
}

/// Parses a number written in decimal or, with a `0x` prefix, in hexadecimal.
pub fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Parses a size in bytes with an optional K, M or G suffix (binary units).
pub fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.char_indices().last()? {
        (i, 'k' | 'K') => (&text[..i], 10),
        (i, 'm' | 'M') => (&text[..i], 20),
        (i, 'g' | 'G') => (&text[..i], 30),
        _ => (text, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

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
