//! mshare-bench: page-table memory and faults of N processes sharing memory, in the guest.
//!
//! ```text
//! mshare-bench WAY PROCS SIZE     WAY: mshare | memfd | hugetlb; SIZE with K/M/G
//! ```
//! The parent makes the memory once (an msharefs region with its memory, a shared memfd,
//! or a hugetlb memfd of 2 MiB pages); PROCS children each map all of it and touch every
//! page, report their minor faults, VmPTE and time, and stay alive until the parent has
//! read PageTables. The same is done with children that map nothing, and their cost is
//! subtracted (design.md, "Measuring"). Prints one line:
//! `BENCH way=.. mode=.. procs=.. size=.. pagetables_kib=.. vmpte_kib=.. shared_tables_kib=.. residual_kib=.. faults=.. ms_per_proc=..`
//! with the module's mode (B or C; `-` for the other ways), and the mapping's own cost:
//! the PageTables growth (system-wide), the mean VmPTE growth per child (its own tables),
//! the shared tables the module holds (mode B; 0 otherwise), what the global growth leaves
//! unexplained by those two (`pagetables - shared_tables - procs * vmpte`: other page-table
//! churn in the system, the global counter's noise), the minor faults of all children
//! (each minus the same children mapping nothing), and the mean time for a child to map
//! and touch. Differences are signed: a negative one is printed, never clamped to 0.
//! Mappings of 1 GiB or more are placed at 1 GiB-aligned addresses, which hugetlbfs needs
//! to share PMD tables.

use guest_tests::msharefs::{create_mapping, set_size, MshareCreate, SystemStats, MOUNT};
use guest_tests::process::pipe;
use guest_tests::{memfd, meminfo_kib, minor_faults, parse_size, settled_pagetables_kib, status_kib};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;
use std::time::Instant;

/// The shared memory of `way`, made once by the parent.
fn make(way: &str, size: u64) -> io::Result<File> {
    match way {
        "mshare" => {
            let path = format!("{MOUNT}/bench");
            let _ = fs::remove_file(&path);
            let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
            set_size(&file, size)?;
            create_mapping(&file, &MshareCreate::anonymous(0, size))?;
            fs::remove_file(&path)?;
            Ok(file)
        }
        "memfd" => {
            let file = memfd(c"bench", 0)?;
            file.set_len(size)?;
            Ok(file)
        }
        "hugetlb" => {
            let pages = size >> 21;
            fs::write("/proc/sys/vm/nr_hugepages", pages.to_string())?;
            let file = memfd(c"bench", libc::MFD_HUGETLB | libc::MFD_HUGE_2MB)?;
            file.set_len(size)?;
            Ok(file)
        }
        other => Err(io::Error::other(format!("unknown way '{other}' (mshare, memfd, hugetlb)"))),
    }
}

const GIB: usize = 1 << 30;

/// Maps all of `file` shared read-write; at a 1 GiB-aligned address if it is that large.
fn map(file: &File, size: usize) -> *mut libc::c_void {
    let mut hint = std::ptr::null_mut();
    if size >= GIB {
        // Find a free 1 GiB-aligned range: reserve more than needed, keep the address.
        // SAFETY: an inaccessible anonymous reservation, unmapped right away.
        unsafe {
            let reserve = libc::mmap(
                std::ptr::null_mut(),
                size + GIB,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if reserve != libc::MAP_FAILED {
                libc::munmap(reserve, size + GIB);
                hint = ((reserve as usize).div_ceil(GIB) * GIB) as *mut libc::c_void;
            }
        }
    }
    let flags = libc::MAP_SHARED | if hint.is_null() { 0 } else { libc::MAP_FIXED_NOREPLACE };
    // SAFETY: a fresh shared mapping at a free address, checked by the caller.
    unsafe { libc::mmap(hint, size, libc::PROT_READ | libc::PROT_WRITE, flags, file.as_raw_fd(), 0) }
}

/// What one child reports: minor faults, VmPTE (KiB), microseconds to map and touch.
fn child(file: Option<&File>, size: usize, report: &mut File, barrier: &mut File) -> ! {
    let faults = minor_faults();
    let start = Instant::now();
    if let Some(file) = file {
        let ptr = map(file, size);
        if ptr == libc::MAP_FAILED {
            // SAFETY: leaving the child.
            unsafe { libc::_exit(2) };
        }
        for offset in (0..size).step_by(4096) {
            // SAFETY: inside the mapping.
            unsafe { ptr.cast::<u8>().add(offset).write_volatile(1) };
        }
    }
    let line = format!("{} {} {}\n", minor_faults() - faults, status_kib("VmPTE:"), start.elapsed().as_micros());
    let _ = report.write_all(line.as_bytes());
    // Stay alive, mapping in place, until the parent has measured.
    let _ = barrier.read(&mut [0u8; 1]);
    // SAFETY: leaving the child without running the parent's destructors.
    unsafe { libc::_exit(0) }
}

/// One child's report: minor faults, VmPTE in KiB, microseconds to map and touch.
type Report = (i64, i64, i64);

/// Runs `procs` children mapping `file` (or nothing); returns PageTables growth (KiB) while
/// they all live and their reports.
fn round(file: Option<&File>, size: usize, procs: usize) -> io::Result<(i64, Vec<Report>)> {
    let (mut report_r, report_w) = pipe()?;
    let (barrier_r, barrier_w) = pipe()?;
    let before = settled_pagetables_kib();
    let mut pids = Vec::new();
    for _ in 0..procs {
        // SAFETY: fork in a single-threaded program; the child only maps, touches, writes
        // its line and exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            let fail = |_| {
                // SAFETY: _exit ends this forked child at once, running nothing of the
                // parent's (no destructors, no atexit handlers, no shared stdio buffers).
                unsafe { libc::_exit(3) }
            };
            let (mut w, mut r) =
                (report_w.try_clone().unwrap_or_else(fail), barrier_r.try_clone().unwrap_or_else(fail));
            drop(barrier_w);
            child(file, size, &mut w, &mut r);
        }
        pids.push(pid);
    }
    drop(report_w);
    let mut text = String::new();
    let mut line_count = 0;
    let mut buf = [0u8; 4096];
    while line_count < procs {
        let n = report_r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        line_count = text.lines().count();
    }
    let grown = meminfo_kib("PageTables:") as i64 - before as i64;
    drop(barrier_w);
    for pid in pids {
        let mut status = 0;
        // SAFETY: waiting for our own children.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    let reports = text
        .lines()
        .filter_map(|l| {
            let v: Vec<i64> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            (v.len() == 3).then(|| (v[0], v[1], v[2]))
        })
        .collect::<Vec<_>>();
    if reports.len() != procs {
        return Err(io::Error::other(format!("{} of {procs} children reported", reports.len())));
    }
    Ok((grown, reports))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(way), Some(procs), Some(size)) =
        (args.first(), args.get(1).and_then(|p| p.parse::<usize>().ok()), args.get(2).and_then(|s| parse_size(s)))
    else {
        eprintln!("usage: mshare-bench mshare|memfd|hugetlb PROCS SIZE");
        return ExitCode::from(2);
    };
    let run = || -> io::Result<String> {
        let file = make(way, size)?;
        let mode = if way == "mshare" { SystemStats::read()?.mode } else { "-".to_owned() };
        let (idle_grown, idle) = round(None, 0, procs)?;
        let (grown, reports) = round(Some(&file), size as usize, procs)?;
        // Shared tables (a 4 KiB page each) live while the region does: read while `file`
        // holds it.
        let shared_tables_kib = if way == "mshare" { SystemStats::read()?.shared_tables as i64 * 4 } else { 0 };
        // The mapping's own: minus what the same children cost mapping nothing.
        let sum = |reports: &[Report], field: fn(&Report) -> i64| reports.iter().map(field).sum::<i64>();
        let faults = sum(&reports, |r| r.0) - sum(&idle, |r| r.0);
        let vmpte = (sum(&reports, |r| r.1) - sum(&idle, |r| r.1)) as f64 / procs as f64;
        let micros = sum(&reports, |r| r.2) as f64 / procs as f64;
        let pagetables = grown - idle_grown;
        let residual = pagetables as f64 - shared_tables_kib as f64 - vmpte * procs as f64;
        if way == "hugetlb" {
            let _ = fs::write("/proc/sys/vm/nr_hugepages", "0");
        }
        Ok(format!(
            "BENCH way={way} mode={mode} procs={procs} size={size} pagetables_kib={pagetables} vmpte_kib={vmpte:.1} \
             shared_tables_kib={shared_tables_kib} residual_kib={residual:.0} faults={faults} ms_per_proc={:.1}",
            micros / 1000.0
        ))
    };
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mshare-bench {way}: {e}");
            ExitCode::FAILURE
        }
    }
}
