//! A region's backing, made or opened, and mapped shared into this process.

use super::spec::{Backing, RegionError, RegionSpec};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::FromRawFd;
use std::path::Path;
use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, VolatileMemory};

/// A region the host could not make or map.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error("region '{name}': {what}: {source}")]
    Host {
        /// The region.
        name: String,
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// A region mapped into the VMM.
#[derive(Debug)]
pub struct SharedRegion {
    /// Its description.
    pub spec: RegionSpec,
    mapping: MmapRegion,
}

fn os_error(name: &str, what: &str, source: std::io::Error) -> MapError {
    MapError::Host { name: name.to_owned(), what: what.to_owned(), source }
}

fn memfd(name: &str, flags: libc::c_uint) -> Result<File, MapError> {
    let cname = CString::new(format!("mshare-{name}"))
        .map_err(|e| os_error(name, "memfd name", std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: memfd_create with a valid C string; the returned fd is checked and then owned.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | flags) };
    if fd < 0 {
        return Err(os_error(name, "memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

impl SharedRegion {
    /// Creates or opens the backing and maps it shared, read-write, into this process.
    pub fn map(spec: &RegionSpec) -> Result<Self, MapError> {
        spec.validate()?;
        let name = spec.name.as_str();
        let file = match &spec.backing {
            Backing::Memfd => memfd(name, 0)?,
            Backing::Hugetlbfs { page_size } => {
                let size_flag = if *page_size == 1 << 30 { libc::MFD_HUGE_1GB } else { libc::MFD_HUGE_2MB };
                memfd(name, libc::MFD_HUGETLB | size_flag)?
            }
            Backing::Path(path) => open_backing_file(name, path, spec.size)?,
            Backing::InheritedFd(fd) => {
                // SAFETY: dup of a descriptor number; the result is checked and then owned.
                let copy = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 0) };
                if copy < 0 {
                    return Err(os_error(name, &format!("inherited fd {fd}"), std::io::Error::last_os_error()));
                }
                // SAFETY: `copy` is a fresh descriptor nothing else owns.
                unsafe { File::from_raw_fd(copy) }
            }
        };
        if matches!(spec.backing, Backing::Memfd | Backing::Hugetlbfs { .. }) {
            file.set_len(spec.size).map_err(|e| os_error(name, "sizing the memfd", e))?;
        }
        let size = usize::try_from(spec.size)
            .map_err(|e| os_error(name, "size", std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        let mapping = MmapRegion::from_file(FileOffset::new(file, 0), size)
            .map_err(|e| os_error(name, "mmap", std::io::Error::other(e)))?;
        Ok(Self { spec: spec.clone(), mapping })
    }

    /// Host address of the mapping.
    pub fn host_address(&self) -> *mut u8 {
        self.mapping.as_ptr()
    }

    /// The backing's descriptor (memfd or file), for handing to another process.
    pub fn backing_fd(&self) -> Option<i32> {
        self.mapping.file_offset().map(|f| std::os::fd::AsRawFd::as_raw_fd(f.file()))
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.spec.size
    }

    /// The region's bytes, for the host side (tests, stats).
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Option<()> {
        let end = offset.checked_add(buf.len())?;
        if end > self.mapping.size() {
            return None;
        }
        // Guests write the region while the host reads it: volatile copies, never a reference
        // to memory that changes under it.
        self.mapping.get_slice(offset, buf.len()).ok()?.copy_to(buf);
        Some(())
    }
}

fn open_backing_file(name: &str, path: &Path, size: u64) -> Result<File, MapError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| os_error(name, &format!("opening {}", path.display()), e))?;
    let len = file.metadata().map_err(|e| os_error(name, "stat", e))?.len();
    if len < size {
        file.set_len(size).map_err(|e| os_error(name, &format!("extending {} to {size} bytes", path.display()), e))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regions::spec::Stage2;

    #[test]
    fn inherited_descriptors_map_the_same_memory() {
        let first = SharedRegion::map(&RegionSpec {
            name: "p".into(),
            size: 64 << 10,
            backing: Backing::Memfd,
            stage2: Stage2::Private,
        })
        .unwrap();
        let fd = first.backing_fd().unwrap();
        let (spec, _) = RegionSpec::parse_flag(&format!("name=p,size=64K,fd={fd}")).unwrap();
        assert_eq!(spec.backing, Backing::InheritedFd(fd));
        let second = SharedRegion::map(&spec).unwrap();
        // SAFETY: writing inside the first 64 KiB mapping.
        unsafe { *first.host_address().add(10) = 0x3c };
        let mut byte = [0u8];
        second.read(10, &mut byte).unwrap();
        assert_eq!(byte, [0x3c]);
        assert!(RegionSpec::parse_flag("name=p,size=64K,fd=3,path=/x").is_err());
    }

    #[test]
    fn memfd_region_is_shared_memory() {
        let region = SharedRegion::map(&RegionSpec {
            name: "t".into(),
            size: 1 << 20,
            backing: Backing::Memfd,
            stage2: Stage2::Private,
        })
        .unwrap();
        // SAFETY: writing inside the 1 MiB mapping.
        unsafe { *region.host_address().add(4096) = 0x5a };
        let mut byte = [0u8];
        region.read(4096, &mut byte).unwrap();
        assert_eq!(byte, [0x5a]);
        assert!(region.read((1 << 20) - 1, &mut [0u8; 2]).is_none());
    }

    #[test]
    fn file_region_contents_land_in_the_file() {
        let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/mshare-region-").unwrap();
        let path = dir.as_path().join("backing");
        let spec = RegionSpec {
            name: "f".into(),
            size: 64 << 10,
            backing: Backing::Path(path.clone()),
            stage2: Stage2::Private,
        };
        {
            let region = SharedRegion::map(&spec).unwrap();
            // SAFETY: writing inside the 64 KiB mapping.
            unsafe { *region.host_address().add(100) = 7 };
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!((bytes.len(), bytes[100]), (64 << 10, 7));
    }
}
