// SPDX-License-Identifier: GPL-2.0

//! The mshare system calls (`mshare_create` ... `mshare_advise`, numbers 473-479 on a
//! kernel with `CONFIG_MSHARE_SYSCALLS`): the core calls these entry points through the
//! operations `syscalls_glue.c` registers, and each makes its call of [`crate::calls`], the
//! implementation `/dev/mshare` shares. Arguments arrive as the registers held them; each
//! call checks its own.

use crate::calls;
use core::ffi::{c_int, c_long, c_uint, c_ulong};
use kernel::prelude::*;

extern "C" {
    fn msharefs_syscalls_register() -> c_int;
    fn msharefs_syscalls_unregister();
    fn msharefs_kernel_has_syscalls() -> bool;
}

/// The module answering the system calls, from its registration until dropped.
pub(crate) struct Registration(());

impl Registration {
    /// Registers the calls; EBUSY if another driver answers them. On a kernel without
    /// them, nothing is registered and programs use `/dev/mshare`.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: plain call; the operations it registers are static.
        kernel::error::to_result(unsafe { msharefs_syscalls_register() })?;
        Ok(Self(()))
    }

    /// Whether the running kernel has the system calls.
    pub(crate) fn kernel_has_syscalls() -> bool {
        // SAFETY: plain call.
        unsafe { msharefs_kernel_has_syscalls() }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: undoes the registration made in `new`; waits for calls already in Rust
        // when built in (a module's own reference keeps it loaded while calls run).
        unsafe { msharefs_syscalls_unregister() };
    }
}

/// A call's result as a system call returns it: the value, or a negative errno.
fn to_syscall<T: Into<i64>>(result: Result<T>) -> c_long {
    match result {
        Ok(value) => value.into() as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

#[no_mangle]
extern "C" fn mshare_call_create(flags: c_uint) -> c_long {
    to_syscall(calls::create(flags))
}

#[no_mangle]
extern "C" fn mshare_call_attach(fd: c_int, offset: c_ulong, size: c_ulong, addr: c_ulong, flags: c_uint) -> c_long {
    // An address below TASK_SIZE, which fits a non-negative long.
    to_syscall(calls::attach(fd, offset, size, addr, flags).map(|addr| addr as i64))
}

#[no_mangle]
extern "C" fn mshare_call_detach(addr: c_ulong, size: c_ulong) -> c_long {
    to_syscall(calls::detach(addr, size).map(|()| 0))
}

#[no_mangle]
extern "C" fn mshare_call_map(
    fd: c_int,
    offset: c_ulong,
    size: c_ulong,
    prot: c_uint,
    flags: c_uint,
    object_fd: c_int,
) -> c_long {
    to_syscall(calls::map(fd, offset, size, prot, flags, object_fd).map(|()| 0))
}

#[no_mangle]
extern "C" fn mshare_call_unmap(fd: c_int, offset: c_ulong, size: c_ulong) -> c_long {
    to_syscall(calls::unmap(fd, offset, size).map(|()| 0))
}

#[no_mangle]
extern "C" fn mshare_call_protect(fd: c_int, offset: c_ulong, size: c_ulong, prot: c_uint) -> c_long {
    to_syscall(calls::protect(fd, Some((offset, size)), prot).map(|()| 0))
}

#[no_mangle]
extern "C" fn mshare_call_advise(fd: c_int, offset: c_ulong, size: c_ulong, advice: c_int) -> c_long {
    to_syscall(calls::advise(fd, offset, size, advice).map(|()| 0))
}
