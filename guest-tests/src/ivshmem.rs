//! ivshmem devices as a guest program sees them: PCI functions 1af4:1110 under
//! /sys/bus/pci/devices, BAR2 mapped through `resource2`, and the region's name from the
//! mshare-vmm vendor capability (absent on QEMU's devices: then the device has no name).

use mshare_uapi::formats::ivshmem_capability;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const SYSFS_PCI: &str = "/sys/bus/pci/devices";

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
        if id("vendor") != format!("{:#06x}", ivshmem_capability::VENDOR_ID)
            || id("device") != format!("{:#06x}", ivshmem_capability::DEVICE_ID)
        {
            continue;
        }
        let size = bar_size(&path, 2)?;
        let (name, read_only) = match ivshmem_capability::read(&fs::read(path.join("config"))?) {
            Some((name, read_only)) => (Some(name), read_only),
            None => (None, false),
        };
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
