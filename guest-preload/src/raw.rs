//! The system calls behind the calls this library answers, made directly: the library's
//! own `mmap` and `shmat` are the program's, so calling them through the C library would
//! come back here.

use libc::{c_int, c_long, c_void, key_t, off_t, shmid_ds};

/// An errno value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Errno(pub(crate) c_int);

impl Errno {
    /// The calling thread's errno.
    pub(crate) fn last() -> Self {
        Self(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }

    /// Sets the calling thread's errno to this, as a failing C library call does.
    pub(crate) fn set(self) {
        // SAFETY: __errno_location returns the calling thread's errno, always valid.
        unsafe { *libc::__errno_location() = self.0 };
    }

    /// The errno of an I/O error (EIO when it has none).
    pub(crate) fn of(error: &std::io::Error) -> Self {
        Self(error.raw_os_error().unwrap_or(libc::EIO))
    }
}

fn result(ret: c_long) -> Result<c_long, Errno> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// `mmap(2)`, as the program asked for it or as this library asks for a window.
pub(crate) fn mmap(
    addr: usize,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    offset: off_t,
) -> Result<usize, Errno> {
    // SAFETY: the kernel checks every argument. What the call may replace (MAP_FIXED) is at
    // an address the program chose, or a window of this library's that it is replacing.
    let ret = unsafe { libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, offset) };
    result(ret).map(|address| address as usize)
}

/// `munmap(2)`.
pub(crate) fn munmap(addr: usize, len: usize) -> Result<(), Errno> {
    // SAFETY: unmaps what the program (or this library for it) mapped there; nothing of
    // this library's own is ever in such a range.
    result(unsafe { libc::syscall(libc::SYS_munmap, addr, len) }).map(|_| ())
}

/// `shmget(2)`.
pub(crate) fn shmget(key: key_t, size: usize, flags: c_int) -> Result<c_int, Errno> {
    // SAFETY: plain values; the kernel checks them.
    result(unsafe { libc::syscall(libc::SYS_shmget, key, size, flags) }).map(|id| id as c_int)
}

/// `shmat(2)`.
pub(crate) fn shmat(id: c_int, addr: *const c_void, flags: c_int) -> Result<usize, Errno> {
    // SAFETY: the kernel checks the segment and the address, as for the program's own call.
    result(unsafe { libc::syscall(libc::SYS_shmat, id, addr, flags) }).map(|address| address as usize)
}

/// `shmdt(2)`.
pub(crate) fn shmdt(addr: *const c_void) -> Result<(), Errno> {
    // SAFETY: detaches a segment the program or this library attached there.
    result(unsafe { libc::syscall(libc::SYS_shmdt, addr) }).map(|_| ())
}

/// `shmctl(2)`; `buf` is the program's, which the kernel reads or fills through its user
/// copies (EFAULT when bad).
pub(crate) fn shmctl(id: c_int, cmd: c_int, buf: *mut shmid_ds) -> Result<c_int, Errno> {
    // SAFETY: as above: the kernel validates `buf`.
    result(unsafe { libc::syscall(libc::SYS_shmctl, id, cmd, buf) }).map(|ret| ret as c_int)
}
