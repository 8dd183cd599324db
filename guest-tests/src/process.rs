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

/// What [`access_in_child`] does at an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// A read, then a write: the write reaches a read-only entry the read made.
    ReadThenWrite,
}

/// Makes `access` of the byte at `ptr` in a forked child: `None` if it could, else the
/// signal that ended it (SIGSEGV, SIGBUS). A failed fork (255) reads as a signal no check
/// expects, so the check fails visibly.
// Not `unsafe fn`: only the forked child touches `ptr`, and whatever that does (a fault is
// the point) ends in the child's exit status; this process never dereferences it.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn access_in_child(ptr: *mut u8, access: Access) -> Option<i32> {
    let code = in_child(|| {
        // SAFETY: the access may fault, which is what is being tested, in the child only.
        unsafe {
            if access != Access::Write {
                std::hint::black_box(ptr.read_volatile());
            }
            if access != Access::Read {
                ptr.write_volatile(0xee);
            }
        }
        0
    });
    (code != 0).then(|| code - 128)
}

/// How [`access_in_child`] ended, as a transcript shows it: "ok" or the signal's name.
pub fn access_name(signal: Option<i32>) -> &'static str {
    match signal {
        None => "ok",
        Some(libc::SIGSEGV) => "SIGSEGV",
        Some(libc::SIGBUS) => "SIGBUS",
        Some(_) => "another end",
    }
}

/// Waits for a child from [`spawn_child`]: its exit status, or 128 + the signal.
pub fn wait_child(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child, again if a signal interrupted the wait.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 255;
        }
    }
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// Forked processes that meet at a gate: each says it is there (or that it failed), then
/// waits until the parent opens the gate for all of them. The parent measures what only
/// exists while all of them are alive (their page tables, the time until the last is
/// ready) between [`Crew::gather`] and [`Crew::finish`].
pub struct Crew {
    pids: Vec<libc::pid_t>,
    /// Status of each child already reaped while gathering (it ended before arriving).
    ended: Vec<Option<i32>>,
    arrivals: File,
    arrive_fd: libc::c_int,
    release: Option<File>,
    release_fd: libc::c_int,
    wait_fd: libc::c_int,
}

/// How long [`Crew::gather`] waits between looks for children that ended early.
const GATHER_POLL_MS: libc::c_int = 500;

impl Crew {
    pub fn new() -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        let (arrivals, arrive) = pipe()?;
        let (wait, release) = pipe()?;
        let (arrive_fd, wait_fd, release_fd) = (arrive.as_raw_fd(), wait.as_raw_fd(), release.as_raw_fd());
        // The children's ends stay open in the parent for the crew's lifetime (each child
        // inherits them at fork); the raw descriptors are closed in `Drop`.
        std::mem::forget(arrive);
        std::mem::forget(wait);
        Ok(Self {
            pids: Vec::new(),
            ended: Vec::new(),
            arrivals,
            arrive_fd,
            release: Some(release),
            release_fd,
            wait_fd,
        })
    }

    /// Forks a member running `work`, which returns what the member holds at the gate (its
    /// mappings, say) or `None` if it failed; the member then arrives, waits for the gate
    /// to open and exits 0 (1 if `work` failed).
    pub fn spawn<Held>(&mut self, work: impl FnOnce() -> Option<Held>) -> io::Result<()> {
        let (arrive_fd, release_fd, wait_fd) = (self.arrive_fd, self.release_fd, self.wait_fd);
        let pid = spawn_child(move || {
            let held = work();
            let ok = held.is_some();
            let mark = if ok { b"+" } else { b"!" };
            // SAFETY: our inherited descriptors: say we are here, drop our copy of the
            // release end (else the gate could never open), block until every copy is gone.
            unsafe {
                libc::write(arrive_fd, mark.as_ptr().cast(), 1);
                libc::close(release_fd);
                let mut byte = 0u8;
                while libc::read(wait_fd, (&raw mut byte).cast(), 1) > 0 {}
            }
            drop(held);
            i32::from(!ok)
        })
        .ok_or_else(io::Error::last_os_error)?;
        self.pids.push(pid);
        self.ended.push(None);
        Ok(())
    }

    /// Waits until every member arrived or ended; `Err` names how many failed or died.
    pub fn gather(&mut self) -> io::Result<()> {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let (mut arrived, mut failed) = (0, 0);
        let mut marks = [0u8; 256];
        while arrived + self.ended.iter().filter(|e| e.is_some()).count() < self.pids.len() {
            let mut poll = libc::pollfd { fd: self.arrivals.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut poll, 1, GATHER_POLL_MS) } > 0 {
                let want = (self.pids.len() - arrived).min(marks.len());
                let n = self.arrivals.read(&mut marks[..want])?;
                arrived += n;
                failed += marks[..n].iter().filter(|m| **m != b'+').count();
                continue;
            }
            for (pid, ended) in self.pids.iter().zip(self.ended.iter_mut()).filter(|(_, e)| e.is_none()) {
                let mut status = 0;
                // SAFETY: looking at our own child without blocking.
                if unsafe { libc::waitpid(*pid, &mut status, libc::WNOHANG) } == *pid {
                    *ended = Some(status);
                }
            }
        }
        let died = self.ended.iter().filter(|e| e.is_some()).count();
        match (failed, died) {
            (0, 0) => Ok(()),
            _ => Err(io::Error::other(format!(
                "{failed} of {} processes failed and {died} ended before they were ready (see above)",
                self.pids.len()
            ))),
        }
    }

    /// Opens the gate and waits for every member; `Err` if any did not exit 0.
    pub fn finish(mut self) -> io::Result<()> {
        self.release.take();
        let mut bad = self.ended.iter().flatten().count();
        for (pid, ended) in self.pids.iter().zip(&self.ended) {
            if ended.is_none() && wait_child(*pid) != 0 {
                bad += 1;
            }
        }
        match bad {
            0 => Ok(()),
            _ => Err(io::Error::other(format!("{bad} of {} processes failed (see above)", self.pids.len()))),
        }
    }
}

impl Drop for Crew {
    fn drop(&mut self) {
        // A crew given up before `finish` (a later spawn failed): open the gate and reap
        // its members, leaving none behind.
        if self.release.take().is_some() {
            for (pid, ended) in self.pids.iter().zip(&self.ended) {
                if ended.is_none() {
                    wait_child(*pid);
                }
            }
        }
        // SAFETY: the children's ends, owned by the crew since `new`.
        unsafe {
            libc::close(self.arrive_fd);
            libc::close(self.wait_fd);
        }
    }
}
