//! The VMM's signals: SIGINT and SIGTERM through a signalfd (they stop the VM), and the
//! kick signal that interrupts a vCPU's KVM_RUN so that its thread sees a stop.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// SIGINT and SIGTERM, blocked in this thread (and the threads it starts) and received
/// through a signalfd; unblocked again when this is dropped, on every path out.
pub struct SignalFd(OwnedFd);

impl SignalFd {
    /// Blocks SIGINT and SIGTERM and opens the signalfd that receives them.
    pub fn new() -> io::Result<Self> {
        let set = stop_signals();
        // SAFETY: `set` is a valid sigset_t; this only changes this thread's mask.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        // SAFETY: as above; the result is checked.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            let error = io::Error::last_os_error();
            unblock(&set);
            return Err(error);
        }
        // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Reads one pending signal's number, if any.
    pub fn read(&self) -> Option<i32> {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        let n = File::from(self.0.try_clone().ok()?).read(&mut info).ok()?;
        (n == info.len()).then(|| u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32)
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Drop for SignalFd {
    fn drop(&mut self) {
        unblock(&stop_signals());
    }
}

/// SIGINT and SIGTERM.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; these calls only edit it.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    set
}

fn unblock(set: &libc::sigset_t) {
    // SAFETY: a valid sigset_t; this only changes this thread's mask.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, set, std::ptr::null_mut()) };
}

/// Kick signal for vCPU threads: it interrupts KVM_RUN so the thread sees the stop.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

/// The kick signal's handler: it only has to exist, so that the signal interrupts
/// KVM_RUN instead of ending the process.
pub extern "C" fn noop_signal_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
