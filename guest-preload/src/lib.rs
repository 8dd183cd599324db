//! libmshare_preload.so: runs an unmodified program's large shared memory on msharefs.
//!
//! Loaded with `LD_PRELOAD` (`mshare run` sets it up), it answers the program's calls that
//! make and drop shared memory:
//!
//! - `mmap` of shared anonymous memory of at least the threshold (what PostgreSQL's buffer
//!   pool is) maps a window of a new region instead ([`anon`]);
//! - `shmget`, `shmat`, `shmdt`, `shmctl` of System V segments of at least the threshold
//!   (what Oracle's SGA is) make and attach a region per segment ([`sysv`]);
//! - `munmap` also unmaps the rest of a window longer than what the program asked for
//!   ([`windows`]).
//!
//! The environment (mshare_uapi::preload) gives the mode the program must run in, the
//! threshold, the regions' names and whether to fall back to ordinary memory when memory
//! cannot move; by default a call whose memory cannot move fails, with a line on stderr
//! that says why ([`report`]). Every other call goes to the kernel unchanged ([`raw`]).
//! What differs from the memory replaced is in docs/preload.md.

mod anon;
mod raw;
mod region;
mod report;
mod settings;
mod sysv;
mod windows;

/// The program's calls, under the C library's names, except in the unit tests' binary,
/// whose own mappings they would take.
pub mod calls {
    use crate::raw::Errno;
    use libc::{c_int, c_void, key_t, off_t, shmid_ds, size_t};

    fn pointer(result: Result<usize, Errno>) -> *mut c_void {
        result.unwrap_or_else(|errno| {
            errno.set();
            usize::MAX // MAP_FAILED
        }) as *mut c_void
    }

    fn status(result: Result<c_int, Errno>) -> c_int {
        result.unwrap_or_else(|errno| {
            errno.set();
            -1
        })
    }

    #[cfg_attr(not(test), no_mangle)]
    pub extern "C" fn mmap(
        addr: *mut c_void,
        len: size_t,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        offset: off_t,
    ) -> *mut c_void {
        pointer(crate::anon::mmap(addr as usize, len, prot, flags, fd, offset))
    }

    /// The C library's other name for `mmap` (the same call on 64-bit systems).
    #[cfg_attr(not(test), no_mangle)]
    pub extern "C" fn mmap64(
        addr: *mut c_void,
        len: size_t,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        offset: off_t,
    ) -> *mut c_void {
        mmap(addr, len, prot, flags, fd, offset)
    }

    #[cfg_attr(not(test), no_mangle)]
    pub extern "C" fn munmap(addr: *mut c_void, len: size_t) -> c_int {
        status(crate::windows::munmap(addr as usize, len).map(|()| 0))
    }

    #[cfg_attr(not(test), no_mangle)]
    pub extern "C" fn shmget(key: key_t, size: size_t, flags: c_int) -> c_int {
        status(crate::sysv::shmget(key, size, flags))
    }

    #[cfg_attr(not(test), no_mangle)]
    pub extern "C" fn shmat(id: c_int, addr: *const c_void, flags: c_int) -> *mut c_void {
        pointer(crate::sysv::shmat(id, addr, flags))
    }

    #[cfg_attr(not(test), no_mangle)]
    pub extern "C" fn shmdt(addr: *const c_void) -> c_int {
        status(crate::sysv::shmdt(addr).map(|()| 0))
    }

    #[cfg_attr(not(test), no_mangle)]
    pub extern "C" fn shmctl(id: c_int, cmd: c_int, buf: *mut shmid_ds) -> c_int {
        status(crate::sysv::shmctl(id, cmd, buf))
    }
}
