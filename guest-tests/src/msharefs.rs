//! The msharefs ABI of the January 2025 series (see ../shared/design.md, "Guest ABI"):
//! region files under /sys/fs/mshare and their ioctls.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Where msharefs is mounted.
pub const MOUNT: &str = "/sys/fs/mshare";

/// `struct mshare_info { __u64 start; __u64 size; }`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MshareInfo {
    /// Start address of the region's mapping (0 until mapped).
    pub start: u64,
    /// Size in bytes (0 until set).
    pub size: u64,
}

const fn ioc(dir: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | ((b'x' as u64) << 8) | nr
}

/// `_IOR('x', 0, struct mshare_info)`
pub const MSHAREFS_GET_SIZE: u64 = ioc(2, 0, 16);
/// `_IOW('x', 1, struct mshare_info)`
pub const MSHAREFS_SET_SIZE: u64 = ioc(1, 1, 16);

/// `ioctl(fd, cmd, arg)` with errno as an `io::Error`. `arg` is an address in this
/// process; the kernel validates it (tests pass bad ones on purpose).
pub fn ioctl(file: &File, cmd: u64, arg: usize) -> io::Result<()> {
    // SAFETY: the kernel only accesses `arg` through its user-copy routines, which fail
    // cleanly with EFAULT on a bad address; nothing here dereferences it.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), cmd as libc::Ioctl, arg) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `MSHAREFS_GET_SIZE`.
pub fn get_size(file: &File) -> io::Result<MshareInfo> {
    let mut info = MshareInfo::default();
    ioctl(file, MSHAREFS_GET_SIZE, &mut info as *mut MshareInfo as usize)?;
    Ok(info)
}

/// `MSHAREFS_SET_SIZE`.
pub fn set_size(file: &File, size: u64) -> io::Result<()> {
    let mut info = MshareInfo { start: 0, size };
    ioctl(file, MSHAREFS_SET_SIZE, &mut info as *mut MshareInfo as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        // _IOR('x', 0, 16 bytes) and _IOW('x', 1, 16 bytes) as the uapi header computes them.
        assert_eq!(MSHAREFS_GET_SIZE, 0x8010_7800);
        assert_eq!(MSHAREFS_SET_SIZE, 0x4010_7801);
    }
}
