//! mshare-mmops: every mm operation a program or the kernel can aim at a window, answered
//! (docs/module.md, "Every mm operation on a window"). One row per operation: it runs on a
//! fresh region of 4 granules (8 MiB) mapped read-write by this process, whose data a
//! second process (a sharer, its mappings warm) checks afterwards: the operation must
//! reach this process only, unless the row says otherwise, and never change what the
//! sharer maps (it reads every granule again with 0 faults and the data intact).
//!
//! Each row prints `mshare-mmops: <operation>: <what happened>` and fails unless that is
//! what the table says for this mode (B: shared page tables; C: mappings of one's own).
//! `mshare-mmops gib` maps each region with a window of a whole GiB instead (in mode B,
//! through the region's shared PMD table). `mshare-mmops exec-check ADDR` is the image
//! `exec` runs: it checks ADDR is unmapped.

use guest_tests::msharefs::{create_mapping, set_prot, set_size, MshareCreate, SystemStats, MOUNT};
use guest_tests::process::{access_in_child, access_name, in_child, pipe, spawn_child, wait_child, Access};
use guest_tests::{errno_name, faults_of, minor_faults};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;

const GRANULE: usize = 2 << 20;
const GRANULES: usize = 4;
/// The region: 4 granules of memory.
const REGION: usize = GRANULES * GRANULE;

/// The window's length: the region's, or a whole GiB (`mshare-mmops gib`: in mode B a
/// window sharing the region's PMD table, its tail past the region a hole).
static WINDOW: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

fn window_len() -> usize {
    *WINDOW.get().unwrap_or(&REGION)
}

/// The byte at the start of granule `g`.
fn pattern(g: usize) -> u8 {
    0x40 + g as u8
}

/// A region of its own for one row, mapped read-write here, every granule touched.
struct Fixture {
    path: String,
    file: File,
    p: *mut u8,
    /// The window's length.
    len: usize,
}

impl Fixture {
    fn new(tag: &str) -> io::Result<Self> {
        let path = format!("{MOUNT}/mmops-{tag}");
        let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
        set_size(&file, REGION as u64)?;
        create_mapping(&file, &MshareCreate::anonymous(0, REGION as u64))?;
        let len = window_len();
        // SAFETY: a fresh shared mapping of the region, chosen by the kernel; checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        let fixture = Self { path, file, p: p.cast(), len };
        for g in 0..GRANULES {
            // SAFETY: inside the window.
            unsafe { fixture.at(g * GRANULE).write_volatile(pattern(g)) };
        }
        Ok(fixture)
    }

    fn at(&self, offset: usize) -> *mut u8 {
        self.p.wrapping_add(offset)
    }

    /// Whether every granule still holds its byte (reading each: the window's faults).
    fn intact(&self) -> bool {
        // SAFETY: inside the window.
        (0..GRANULES).all(|g| unsafe { self.at(g * GRANULE).read_volatile() } == pattern(g))
    }

    /// Reads every granule: the faults that took in this process, and whether the data
    /// is intact.
    fn read_back(&self) -> (u64, bool) {
        let mut intact = false;
        let faults = faults_of(|| intact = self.intact());
        (faults, intact)
    }
}

/// A child's exit status for a changed [`Fixture::read_back`].
const DATA_CHANGED: i32 = 200;

/// A read-back in a forked child, as its exit status: the faults (at most 100), or
/// [`DATA_CHANGED`].
fn read_back_status(fixture: &Fixture) -> i32 {
    match fixture.read_back() {
        (faults, true) => faults.min(100) as i32,
        (_, false) => DATA_CHANGED,
    }
}

/// What a child's [`read_back_status`] says: its faults, or what went wrong.
fn read_back_of(status: i32) -> Result<i32, String> {
    match status {
        DATA_CHANGED => Err("data changed".to_owned()),
        faults @ 0..=100 => Ok(faults),
        other => Err(format!("ended {other}")),
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // SAFETY: the window this fixture mapped (gone already if a row unmapped it).
        unsafe { libc::munmap(self.p.cast(), self.len) };
        let _ = fs::remove_file(&self.path);
    }
}

/// "ok" for 0, else the errno's name.
fn result_of(ret: libc::c_long) -> String {
    if ret == 0 {
        "ok".to_owned()
    } else {
        errno_name(&io::Error::last_os_error())
    }
}

fn madvise(p: *mut u8, len: usize, advice: libc::c_int) -> String {
    // SAFETY: advice about a range of this process's address space.
    result_of(unsafe { libc::madvise(p.cast(), len, advice) }.into())
}

/// "ok" if a write at `ptr` in a forked child lands, else the signal. It writes 64 bytes
/// in, past the granule's byte that [`Fixture::intact`] checks.
fn write_in_child(ptr: *mut u8) -> &'static str {
    access_name(access_in_child(ptr.wrapping_add(64), Access::Write))
}

fn read_in_child(ptr: *mut u8) -> &'static str {
    access_name(access_in_child(ptr, Access::Read))
}

/// Runs `op` in this process while a sharer (a forked process that mapped every granule
/// first) waits; then the sharer reads every granule again. Returns what `op` returned
/// and what the sharer saw: "0 faults" when nothing it maps was touched.
fn with_sharer(fixture: &Fixture, op: impl FnOnce() -> String) -> String {
    let (Ok((mut ready_r, mut ready_w)), Ok((mut go_r, mut go_w))) = (pipe(), pipe()) else {
        return "pipes failed".to_owned();
    };
    let Some(pid) = spawn_child(|| {
        std::hint::black_box(fixture.intact());
        minor_faults();
        if ready_w.write_all(b"r").is_err() {
            return 250;
        }
        let mut go = [0u8];
        if go_r.read_exact(&mut go).is_err() {
            return 251;
        }
        read_back_status(fixture)
    }) else {
        return "fork failed".to_owned();
    };
    drop(ready_w);
    drop(go_r);
    let mut ready = [0u8];
    let seen = match ready_r.read_exact(&mut ready) {
        Ok(()) => op(),
        Err(e) => format!("the sharer did not start: {e}"),
    };
    let _ = go_w.write_all(b"g");
    let sharer = match read_back_of(wait_child(pid)) {
        Ok(faults) => format!("sharer: {faults} faults"),
        Err(e) => format!("sharer: {e}"),
    };
    format!("{seen}; {sharer}")
}

struct Table {
    mode_b: bool,
    rows: usize,
    failed: usize,
}

impl Table {
    /// Prints the row, failing it unless `seen` is this mode's expectation.
    fn row(&mut self, operation: &str, seen: String, want_b: &str, want_c: &str) {
        let want = if self.mode_b { want_b } else { want_c };
        self.rows += 1;
        println!("mshare-mmops: {operation}: {seen}");
        if seen != want {
            self.failed += 1;
            println!("mshare-mmops: FAILED: {operation}: wanted {want}");
        }
    }

    /// A row on a fresh fixture, `run` given it.
    fn on_fixture(&mut self, operation: &str, want_b: &str, want_c: &str, run: impl FnOnce(&Fixture) -> String) {
        let tag: String = operation.chars().filter(char::is_ascii_alphanumeric).take(24).collect();
        let seen = match Fixture::new(&format!("{}-{tag}", self.rows)) {
            Ok(f) => run(&f),
            Err(e) => format!("no fixture: {e}"),
        };
        self.row(operation, seen, want_b, want_c);
    }
}

/// The rows of `mprotect`, `munmap` and `mremap`: what a process may do to its own view.
fn protection_and_layout_rows(t: &mut Table) {
    t.on_fixture(
        "mprotect(PROT_READ) of a whole window",
        "EINVAL; sharer: 0 faults",
        "ok, then a write here: SIGSEGV, mprotect back: ok, a write: ok; sharer: 0 faults",
        |f| {
            with_sharer(f, || {
                // SAFETY: the fixture's whole window.
                let ret = unsafe { libc::mprotect(f.p.cast(), f.len, libc::PROT_READ) };
                if ret != 0 {
                    return result_of(ret.into());
                }
                let write = write_in_child(f.p);
                // SAFETY: as above.
                let back =
                    result_of(unsafe { libc::mprotect(f.p.cast(), f.len, libc::PROT_READ | libc::PROT_WRITE) }.into());
                format!("ok, then a write here: {write}, mprotect back: {back}, a write: {}", write_in_child(f.p))
            })
        },
    );
    t.on_fixture("mprotect of part of a window", "EINVAL", "EINVAL", |f| {
        // SAFETY: the window's first granule.
        result_of(unsafe { libc::mprotect(f.p.cast(), GRANULE, libc::PROT_READ) }.into())
    });
    t.on_fixture("munmap of part of a window", "EINVAL; data intact", "EINVAL; data intact", |f| {
        // SAFETY: the window's last granule.
        let ret = result_of(unsafe { libc::munmap(f.at(REGION - GRANULE).cast(), GRANULE) }.into());
        format!("{ret}; data {}", if f.intact() { "intact" } else { "changed" })
    });
    t.on_fixture("mremap of a window to another address", "EINVAL", "EINVAL", |f| {
        // SAFETY: a move of the whole window; checked.
        let moved = unsafe { libc::mremap(f.p.cast(), f.len, f.len, libc::MREMAP_MAYMOVE | libc::MREMAP_DONTUNMAP) };
        if moved == libc::MAP_FAILED {
            errno_name(&io::Error::last_os_error())
        } else {
            "moved".to_owned()
        }
    });
    t.on_fixture("mremap growing a window", "EINVAL", "EFAULT", |f| {
        // SAFETY: as above.
        let grown = unsafe { libc::mremap(f.p.cast(), f.len, 2 * f.len, libc::MREMAP_MAYMOVE) };
        if grown == libc::MAP_FAILED {
            errno_name(&io::Error::last_os_error())
        } else {
            "grown".to_owned()
        }
    });
}

/// `madvise` on a window, one row per advice.
fn madvise_rows(t: &mut Table) {
    t.on_fixture(
        "madvise(MADV_DONTNEED)",
        "ok, data intact, 1 faults to map it again here; sharer: 0 faults",
        "ok, data intact, 4 faults to map it again here; sharer: 0 faults",
        |f| {
            with_sharer(f, || {
                let ret = madvise(f.p, f.len, libc::MADV_DONTNEED);
                let (faults, intact) = f.read_back();
                format!(
                    "{ret}, data {}, {faults} faults to map it again here",
                    if intact { "intact" } else { "changed" }
                )
            })
        },
    );
    for (name, advice, want_b, want_c) in [
        ("MADV_FREE", libc::MADV_FREE, "EINVAL", "EINVAL"),
        ("MADV_COLD", libc::MADV_COLD, "EINVAL", "ok"),
        ("MADV_PAGEOUT", libc::MADV_PAGEOUT, "EINVAL", "ok"),
        ("MADV_WILLNEED", libc::MADV_WILLNEED, "ok", "ok"),
        ("MADV_HUGEPAGE", libc::MADV_HUGEPAGE, "ok", "ok"),
        ("MADV_WIPEONFORK", libc::MADV_WIPEONFORK, "EINVAL", "EINVAL"),
        ("MADV_DONTDUMP", libc::MADV_DONTDUMP, "ok", "ok"),
        ("MADV_DODUMP", libc::MADV_DODUMP, "EINVAL", "EINVAL"),
        ("MADV_MERGEABLE", libc::MADV_MERGEABLE, "EINVAL", "EINVAL"),
        ("MADV_COLLAPSE", libc::MADV_COLLAPSE, "EINVAL", "EINVAL"),
        ("MADV_REMOVE", libc::MADV_REMOVE, "EOPNOTSUPP", "EOPNOTSUPP"),
        ("MADV_HWPOISON", libc::MADV_HWPOISON, "EINVAL", "EINVAL"),
    ] {
        let suffix = "; data intact, 0 faults here; sharer: 0 faults";
        t.on_fixture(&format!("madvise({name})"), &format!("{want_b}{suffix}"), &format!("{want_c}{suffix}"), |f| {
            with_sharer(f, || {
                let ret = madvise(f.p, f.len, advice);
                let (faults, intact) = f.read_back();
                format!("{ret}; data {}, {faults} faults here", if intact { "intact" } else { "changed" })
            })
        });
    }
    // A window sharing the region's PMD table keeps its 2 MiB leaves: they are the
    // region's, not this process's.
    let leaves_b = if window_len() > REGION { REGION >> 10 } else { 0 };
    t.on_fixture(
        "madvise(MADV_NOHUGEPAGE), then DONTNEED and a read",
        &format!("ok; 2 MiB leaves mapped here: {leaves_b} KiB"),
        "ok; 2 MiB leaves mapped here: 0 KiB",
        |f| {
            let ret = madvise(f.p, f.len, libc::MADV_NOHUGEPAGE);
            madvise(f.p, f.len, libc::MADV_DONTNEED);
            std::hint::black_box(f.intact());
            format!("{ret}; 2 MiB leaves mapped here: {} KiB", smaps_field(f.p, "FilePmdMapped:").unwrap_or(u64::MAX))
        },
    );
    t.on_fixture(
        "madvise(MADV_DONTFORK), then fork, then MADV_DOFORK",
        "ok; the child's read: SIGSEGV; MADV_DOFORK: EINVAL, the child's read: SIGSEGV",
        "ok; the child's read: SIGSEGV; MADV_DOFORK: EINVAL, the child's read: SIGSEGV",
        |f| {
            let ret = madvise(f.p, f.len, libc::MADV_DONTFORK);
            let child = read_in_child(f.p);
            let back = madvise(f.p, f.len, libc::MADV_DOFORK);
            format!("{ret}; the child's read: {child}; MADV_DOFORK: {back}, the child's read: {}", read_in_child(f.p))
        },
    );
    for (name, advice) in
        [("MADV_POPULATE_READ", libc::MADV_POPULATE_READ), ("MADV_POPULATE_WRITE", libc::MADV_POPULATE_WRITE)]
    {
        t.on_fixture(
            &format!("madvise({name}) after DONTNEED"),
            "ok; then 0 faults to read",
            "ok; then 0 faults to read",
            |f| {
                madvise(f.p, f.len, libc::MADV_DONTNEED);
                let ret = madvise(f.p, REGION, advice);
                format!("{ret}; then {} faults to read", f.read_back().0)
            },
        );
    }
    t.on_fixture("madvise(MADV_POPULATE_WRITE) of a read-only region", "EFAULT", "EFAULT", |f| {
        madvise(f.p, f.len, libc::MADV_DONTNEED);
        if let Err(e) = set_prot(&f.file, libc::PROT_READ) {
            return format!("SET_PROT: {e}");
        }
        let ret = madvise(f.p, REGION, libc::MADV_POPULATE_WRITE);
        let _ = set_prot(&f.file, libc::PROT_READ | libc::PROT_WRITE);
        ret
    });
    t.on_fixture(
        "process_madvise(MADV_COLD) through a pidfd",
        "EINVAL; sharer: 0 faults",
        "ok; sharer: 0 faults",
        |f| {
            with_sharer(f, || {
                // SAFETY: a pidfd of this process.
                let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
                if pidfd < 0 {
                    return format!("pidfd_open: {}", errno_name(&io::Error::last_os_error()));
                }
                let iov = libc::iovec { iov_base: f.p.cast(), iov_len: f.len };
                // SAFETY: one iovec naming the window; the pidfd is ours.
                let done = unsafe { libc::syscall(libc::SYS_process_madvise, pidfd, &iov, 1, libc::MADV_COLD, 0) };
                let seen = if done == f.len as i64 { "ok".to_owned() } else { result_of(-1) };
                // SAFETY: closing the pidfd opened above.
                unsafe { libc::close(pidfd as i32) };
                seen
            })
        },
    );
}

/// `smaps`' `field` (in kB) of the mapping at `p`.
fn smaps_field(p: *mut u8, field: &str) -> Option<u64> {
    let smaps = fs::read_to_string("/proc/self/smaps").ok()?;
    let start = format!("{:x}-", p as usize);
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start)).skip(1);
    lines.find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

fn smaps_vmflags(p: *mut u8) -> Option<String> {
    let smaps = fs::read_to_string("/proc/self/smaps").ok()?;
    let start = format!("{:x}-", p as usize);
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start)).skip(1);
    Some(lines.find(|l| l.starts_with("VmFlags:"))?.trim_start_matches("VmFlags:").trim().to_owned())
}

/// mlock, NUMA policy and migration.
fn memory_policy_rows(t: &mut Table) {
    // mlock populates the range, and a GiB window has a hole past the region's 8 MiB.
    let mlocked_b = if window_len() > REGION { "ENOMEM, VmLck 0 kB; ok" } else { "ok, VmLck 0 kB; ok" };
    t.on_fixture("mlock, then munlock", mlocked_b, "ok, VmLck 0 kB; ok", |f| {
        // SAFETY: the window.
        let locked = result_of(unsafe { libc::mlock(f.p.cast(), f.len) }.into());
        let vmlck = guest_tests::status_kib("VmLck:");
        // SAFETY: as above.
        let unlocked = result_of(unsafe { libc::munlock(f.p.cast(), f.len) }.into());
        format!("{locked}, VmLck {vmlck} kB; {unlocked}")
    });
    t.on_fixture("mlockall(MCL_CURRENT | MCL_FUTURE)", "ok; data intact", "ok; data intact", |f| {
        // SAFETY: plain calls.
        let ret = result_of(unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) }.into());
        // SAFETY: as above.
        unsafe { libc::munlockall() };
        format!("{ret}; data {}", if f.intact() { "intact" } else { "changed" })
    });
    t.on_fixture("mbind(MPOL_BIND, node 0)", "ENOSYS", "ENOSYS", |f| {
        let nodes: libc::c_ulong = 1;
        // SAFETY: a one-word node mask; the window's range.
        result_of(unsafe { libc::syscall(libc::SYS_mbind, f.p, f.len, 2, &nodes, 64, 0) })
    });
    t.row(
        "set_mempolicy(MPOL_BIND, node 0)",
        {
            let nodes: libc::c_ulong = 1;
            // SAFETY: a one-word node mask.
            let ret = result_of(unsafe { libc::syscall(libc::SYS_set_mempolicy, 2, &nodes, 64) });
            // SAFETY: back to the default policy.
            unsafe { libc::syscall(libc::SYS_set_mempolicy, 0, std::ptr::null::<libc::c_ulong>(), 0) };
            ret
        },
        "ENOSYS",
        "ENOSYS",
    );
    t.on_fixture("move_pages of a window's page", "ENOSYS", "ENOSYS", |f| {
        let (pages, mut status) = ([f.p.cast::<libc::c_void>()], [0i32]);
        // SAFETY: one page of ours, status out; no target nodes (query).
        result_of(unsafe {
            libc::syscall(libc::SYS_move_pages, 0, 1, pages.as_ptr(), std::ptr::null::<i32>(), status.as_mut_ptr(), 0)
        })
    });
    t.row(
        "migrate_pages of this process",
        {
            let (old, new): (libc::c_ulong, libc::c_ulong) = (1, 1);
            // SAFETY: one-word node masks.
            let ret = unsafe { libc::syscall(libc::SYS_migrate_pages, 0, 64, &old, &new) };
            if ret >= 0 {
                "ok".to_owned()
            } else {
                result_of(ret)
            }
        },
        "ENOSYS",
        "ENOSYS",
    );
}

/// fork, exec, core dumps and userfaultfd.
fn process_rows(t: &mut Table) {
    t.on_fixture(
        "fork: the child's first read of every granule",
        "1 faults, data intact",
        "4 faults, data intact",
        |f| read_back_of(in_child(|| read_back_status(f))).map_or_else(|e| e, |n| format!("{n} faults, data intact")),
    );
    t.on_fixture("exec: the window in the new image", "gone", "gone", |f| {
        let exe = c"/proc/self/exe";
        let Ok(addr) = std::ffi::CString::new(format!("{:x}", f.p as usize)) else { return "bad address".to_owned() };
        let status = in_child(|| {
            let argv = [c"mshare-mmops".as_ptr(), c"exec-check".as_ptr(), addr.as_ptr(), std::ptr::null()];
            // SAFETY: a NUL-terminated argv of C strings that outlive the call.
            unsafe { libc::execv(exe.as_ptr(), argv.as_ptr()) };
            127
        });
        match status {
            0 => "gone".to_owned(),
            1 => "still mapped".to_owned(),
            s => format!("exec ended {s}"),
        }
    });
    t.on_fixture(
        "a core dump of a process with a window",
        "ok; the window's bytes in it: 0",
        "ok; the window's bytes in it: 0",
        core_dump_row,
    );
    t.on_fixture("userfaultfd: UFFDIO_REGISTER of a window", "EINVAL", "EINVAL", |f| {
        // SAFETY: a new userfaultfd, closed below.
        let uffd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
        if uffd < 0 {
            return errno_name(&io::Error::last_os_error());
        }
        const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
        const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
        let mut api = [0xaau64, 0, 0];
        // SAFETY: struct uffdio_api, 24 bytes.
        let ret = unsafe { libc::ioctl(uffd as i32, UFFDIO_API, api.as_mut_ptr()) };
        let seen = if ret != 0 {
            format!("UFFDIO_API: {}", errno_name(&io::Error::last_os_error()))
        } else {
            // struct uffdio_register { { start, len }, mode (MISSING), ioctls }.
            let mut register = [f.p as u64, f.len as u64, 1, 0];
            // SAFETY: struct uffdio_register, 32 bytes.
            result_of(unsafe { libc::ioctl(uffd as i32, UFFDIO_REGISTER, register.as_mut_ptr()) }.into())
        };
        // SAFETY: closing the descriptor opened above.
        unsafe { libc::close(uffd as i32) };
        seen
    });
}

/// A forked child with the window mapped aborts and dumps core into /tmp; the window is
/// `VM_DONTDUMP`, so its program header in the core has no bytes.
fn core_dump_row(f: &Fixture) -> String {
    let pattern_set = fs::write("/proc/sys/kernel/core_pattern", "/tmp/mmops-core.%p");
    if let Err(e) = pattern_set {
        return format!("core_pattern: {}", errno_name(&e));
    }
    let Some(pid) = spawn_child(|| {
        let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        // SAFETY: plain calls; SIGABRT's default action dumps core.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &unlimited);
            libc::prctl(libc::PR_SET_DUMPABLE, 1);
            libc::signal(libc::SIGABRT, libc::SIG_DFL);
            libc::raise(libc::SIGABRT);
        }
        0
    }) else {
        return "fork failed".to_owned();
    };
    let mut status = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let path = format!("/tmp/mmops-core.{pid}");
    let core = fs::read(&path);
    let _ = fs::remove_file(&path);
    if !libc::WCOREDUMP(status) {
        return "no core dumped".to_owned();
    }
    match core.map_err(|e| errno_name(&e)).and_then(|c| dumped_bytes(&c, f.p as u64)) {
        Ok(bytes) => format!("ok; the window's bytes in it: {bytes}"),
        Err(e) => format!("core: {e}"),
    }
}

/// The file size of the core's PT_LOAD at `vaddr`.
fn dumped_bytes(core: &[u8], vaddr: u64) -> Result<u64, String> {
    let u16_at = |o: usize| core.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at = |o: usize| core.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let (phoff, entsize, count) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let (Some(phoff), Some(entsize), Some(count)) = (phoff, entsize, count) else { return Err("not ELF".to_owned()) };
    (0..count)
        .map(|i| phoff as usize + i * entsize)
        .find(|&h| core.get(h..h + 4) == Some(&1u32.to_le_bytes()[..]) && u64_at(h + 0x10) == Some(vaddr))
        .and_then(|h| u64_at(h + 0x20))
        .ok_or_else(|| "no program header for the window".to_owned())
}

/// /proc: smaps, pagemap, numa_maps, clear_refs.
fn proc_rows(t: &mut Table) {
    let listed = format!("listed, {} kB, VmFlags with dd", window_len() >> 10);
    t.on_fixture("/proc/self/smaps", &listed, &listed, |f| match (smaps_field(f.p, "Size:"), smaps_vmflags(f.p)) {
        (Some(size), Some(flags)) => {
            format!(
                "listed, {size} kB, VmFlags {}",
                if flags.split(' ').any(|x| x == "dd") { "with dd" } else { "without dd" }
            )
        }
        _ => "not listed".to_owned(),
    });
    t.on_fixture(
        "/proc/self/pagemap of the window's first page",
        "present, a frame number",
        "present, a frame number",
        |f| {
            let entry = File::open("/proc/self/pagemap").and_then(|file| {
                let mut word = [0u8; 8];
                std::os::unix::fs::FileExt::read_exact_at(&file, &mut word, (f.p as u64 / 4096) * 8)?;
                Ok(u64::from_le_bytes(word))
            });
            match entry {
                Ok(e) if e >> 63 == 1 && e & ((1 << 55) - 1) != 0 => "present, a frame number".to_owned(),
                Ok(e) => format!("entry {e:#x}"),
                Err(e) => errno_name(&e),
            }
        },
    );
    t.row(
        "/proc/self/numa_maps",
        File::open("/proc/self/numa_maps").map(|_| "present".to_owned()).unwrap_or_else(|e| errno_name(&e)),
        "ENOENT",
        "ENOENT",
    );
    for (what, value) in [("1 (referenced bits)", "1"), ("4 (soft-dirty bits)", "4")] {
        t.on_fixture(
            &format!("/proc/self/clear_refs {what}"),
            "ok; then a write here: ok, 0 faults; sharer: 0 faults",
            "ok; then a write here: ok, 0 faults; sharer: 0 faults",
            |f| {
                with_sharer(f, || {
                    let ret =
                        fs::write("/proc/self/clear_refs", value).map_or_else(|e| errno_name(&e), |()| "ok".to_owned());
                    // SAFETY: inside the window.
                    let faults = faults_of(|| unsafe { f.at(100).write_volatile(1) });
                    format!("{ret}; then a write here: ok, {faults} faults")
                })
            },
        );
    }
}

/// The image `exec` runs: 0 if nothing is mapped at the address, 1 if something is.
fn exec_check(addr: &str) -> ExitCode {
    let maps = fs::read_to_string("/proc/self/maps").unwrap_or_default();
    if maps.lines().any(|l| l.starts_with(&format!("{addr}-"))) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("exec-check") => return exec_check(args.get(1).map(String::as_str).unwrap_or("")),
        Some("gib") => {
            let _ = WINDOW.set(1 << 30);
        }
        None => {}
        Some(_) => {
            eprintln!("usage: mshare-mmops [gib]");
            return ExitCode::from(2);
        }
    }
    let mode_b = match SystemStats::read() {
        Ok(s) => s.shares_tables(),
        Err(e) => {
            eprintln!("mshare-mmops: cannot read mshare_stats: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("mshare-mmops: mode {}, windows of {} MiB", if mode_b { "B" } else { "C" }, window_len() >> 20);
    let mut t = Table { mode_b, rows: 0, failed: 0 };
    protection_and_layout_rows(&mut t);
    madvise_rows(&mut t);
    memory_policy_rows(&mut t);
    process_rows(&mut t);
    proc_rows(&mut t);
    println!("mshare-mmops: {} rows, {} failed", t.rows, t.failed);
    if t.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
