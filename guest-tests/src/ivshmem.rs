//! ivshmem devices as a guest program sees them: PCI functions 1af4:1110 under
//! /sys/bus/pci/devices, BAR2 mapped through `resource2`, and the region's name from the
//! mshare-vmm vendor capability (absent on QEMU's devices: then the device has no name).

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const SYSFS_PCI: &str = "/sys/bus/pci/devices";
const VENDOR: &str = "0x1af4";
const DEVICE: &str = "0x1110";
const CAP_VENDOR: u8 = 0x09;

/// One ivshmem device.
#[derive(Debug, Clone)]
pub struct Device {
    /// PCI address, e.g. 0000:00:01.0.
    pub address: String,
    /// Its sysfs directory.
    pub path: PathBuf,
    /// BAR2 size in bytes.
    pub size: u64,
    /// The name from the vendor capability, if the VMM gave one.
    pub name: Option<String>,
    /// Whether the VMM attached it read-only (from the capability).
    pub read_only: bool,
}

/// Every ivshmem device, sorted by PCI address.
pub fn devices() -> io::Result<Vec<Device>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(SYSFS_PCI)? {
        let path = entry?.path();
        let id = |f: &str| fs::read_to_string(path.join(f)).map(|s| s.trim().to_owned()).unwrap_or_default();
        if id("vendor") != VENDOR || id("device") != DEVICE {
            continue;
        }
        let size = bar_size(&path, 2)?;
        let (name, read_only) = name_capability(&fs::read(path.join("config"))?).unwrap_or((None, false));
        let address = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        found.push(Device { address, path, size, name, read_only });
    }
    found.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(found)
}

/// Size of BAR `index` from the `resource` file (`start end flags` per line).
fn bar_size(path: &Path, index: usize) -> io::Result<u64> {
    let text = fs::read_to_string(path.join("resource"))?;
    let line = text.lines().nth(index).ok_or_else(|| io::Error::other("no such BAR"))?;
    let mut fields = line.split_whitespace().map(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16).unwrap_or(0));
    let (start, end) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
    Ok(if end > start { end - start + 1 } else { 0 })
}

/// The mshare-vmm vendor capability: `[0x09, next, len, 'M', 'S', version, flags, name.., 0]`.
pub fn name_capability(config: &[u8]) -> Option<(Option<String>, bool)> {
    let status = u16::from_le_bytes([*config.get(6)?, *config.get(7)?]);
    if status & (1 << 4) == 0 {
        return None;
    }
    let mut at = usize::from(*config.get(0x34)? & !3);
    for _ in 0..48 {
        if at < 0x40 || at + 3 > config.len() {
            return None;
        }
        let (id, next, len) = (config[at], config[at + 1], usize::from(config[at + 2]));
        if id == CAP_VENDOR && len >= 8 && config.get(at + 3..at + 5) == Some(b"MS".as_slice()) {
            let body = config.get(at + 7..at + len)?;
            let name: Vec<u8> = body.iter().copied().take_while(|b| *b != 0).collect();
            return Some((Some(String::from_utf8_lossy(&name).into_owned()), config[at + 6] & 1 != 0));
        }
        at = usize::from(next & !3);
    }
    None
}

/// BAR2 mapped shared into this process.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Device {
    /// Maps BAR2 (read-write unless `read_only`).
    pub fn map(&self, writable: bool) -> io::Result<Mapping> {
        let file = OpenOptions::new().read(true).write(writable).open(self.path.join("resource2"))?;
        let len = usize::try_from(self.size).map_err(io::Error::other)?;
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: a fresh shared mapping of the whole BAR; checked for MAP_FAILED below.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }
}

impl Mapping {
    /// Copies out `len` bytes at `offset`.
    pub fn read(&self, offset: usize, len: usize) -> Option<Vec<u8>> {
        if offset.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: the range is inside the mapping; volatile because another VM or the host
        // may change the bytes at any time.
        Some((0..len).map(|i| unsafe { self.ptr.add(offset + i).read_volatile() }).collect())
    }

    /// Copies `bytes` in at `offset`.
    pub fn write(&self, offset: usize, bytes: &[u8]) -> Option<()> {
        if offset.checked_add(bytes.len())? > self.len {
            return None;
        }
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: inside the mapping, which is writable when this is called.
            unsafe { self.ptr.add(offset + i).write_volatile(*b) };
        }
        Some(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_cap(cap: &[u8]) -> Vec<u8> {
        let mut config = vec![0u8; 256];
        config[6] = 1 << 4;
        config[0x34] = 0x40;
        config[0x40..0x40 + cap.len()].copy_from_slice(cap);
        config
    }

    #[test]
    fn reads_the_name_capability() {
        let config = config_with_cap(&[0x09, 0, 10, b'M', b'S', 1, 1, b'd', b'b', 0]);
        assert_eq!(name_capability(&config), Some((Some("db".to_owned()), true)));
    }

    #[test]
    fn devices_without_the_capability_have_no_name() {
        let mut config = vec![0u8; 256];
        assert_eq!(name_capability(&config), None);
        config = config_with_cap(&[0x09, 0, 6, b'X', b'Y', 1]);
        assert_eq!(name_capability(&config), None);
    }
}
