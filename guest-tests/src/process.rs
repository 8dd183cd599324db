//! Running a piece of a test in a forked child, where a fault is a result, not a crash.

use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;

/// A pipe: (read end, write end).
pub fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: a valid two-element array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors owned here.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// Ends the process with 128 + the signal, quietly: an unhandled SIGSEGV would have the
/// kernel log the fault on the console.
extern "C" fn exit_on_signal(signal: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(128 + signal) };
}

/// Runs `child` in a forked process and returns its exit status: what `child` returned,
/// or 128 + the signal (SIGSEGV, SIGBUS) that ended it; 255 if fork failed. Call it from a
/// single-threaded program.
pub fn in_child(child: impl FnOnce() -> i32) -> i32 {
    match spawn_child(child) {
        Some(pid) => wait_child(pid),
        None => 255,
    }
}

/// Starts `child` in a forked process, as [`in_child`] does, without waiting for it.
pub fn spawn_child(child: impl FnOnce() -> i32) -> Option<libc::pid_t> {
    // SAFETY: fork; the child installs handlers that only exit, runs `child` and leaves
    // with _exit, never returning into the caller.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return None;
    }
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            libc::signal(libc::SIGSEGV, exit_on_signal as *const () as libc::sighandler_t);
            libc::signal(libc::SIGBUS, exit_on_signal as *const () as libc::sighandler_t);
        }
        let code = child();
        // SAFETY: leaving the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    Some(pid)
}

/// Waits for a child from [`spawn_child`]: its exit status, or 128 + the signal.
pub fn wait_child(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}
