//! mshare-bench: page-table memory and faults of N processes sharing memory, in the guest.
//!
//! ```text
//! mshare-bench WAY PROCS SIZE     WAY: mshare | mshare-pte | mshare-pmd | memfd | hugetlb
//! mshare-bench refault PROCS SIZE SECONDS
//! ```
//! SIZE with K/M/G. The parent makes the memory once (an msharefs region with its memory,
//! a shared memfd, or a hugetlb memfd of 2 MiB pages); PROCS children each map all of it
//! and touch every page, report their minor faults, VmPTE and time, and stay alive until
//! the parent has read PageTables. The region's windows: `mshare` maps its size where the
//! kernel puts it; `mshare-pte` at an address 2 MiB- but not 1 GiB-aligned, so that mode B
//! shares PTE tables (4 KiB leaves); `mshare-pmd` its size rounded up to whole GiBs at a
//! GiB-aligned address, so that mode B shares PMD tables (2 MiB leaves). The same is done with children that map nothing, and their cost is
//! subtracted (docs/design.md, "Measuring"). Prints one line:
//! `BENCH way=.. mode=.. procs=.. size=.. pagetables_kib=.. vmpte_kib=.. shared_tables_kib=.. residual_kib=.. faults=.. ms_per_proc=..`
//! with the module's mode (B or C; `-` for the other ways), and the mapping's own cost:
//! the PageTables growth (system-wide), the mean VmPTE growth per child (its own tables),
//! the shared tables the module holds (mode B; 0 otherwise), what the global growth leaves
//! unexplained by those two (`pagetables - shared_tables - procs * vmpte`: other page-table
//! churn in the system, the global counter's noise), the minor faults all children took
//! touching the window (counted around the touching alone), and the mean time for a child to map
//! and touch. Differences are signed: a negative one is printed, never clamped to 0.
//! Mappings of 1 GiB or more of the other ways are placed at 1 GiB-aligned addresses,
//! which hugetlbfs needs to share PMD tables. Last, the parent maps the memory once more
//! and times random 8-byte reads over it (`ns_per_access`): a TLB-reach figure on hardware;
//! under QEMU TCG, whose software TLB caches 4 KiB translations whatever the guest's leaf
//! size, it shows the emulator's cost, not the TLB's.
//!
//! `refault` measures the region's fault path under contention: PROCS children map one
//! region of SIZE and, together for SECONDS, touch each granule of it (one fault each)
//! then drop the whole window (`MADV_DONTNEED`), over and over. Every fault looks the
//! region's memory up, so a lock all of them take shows as a rate that does not grow with
//! the processes. Prints `BENCH way=refault mode=.. procs=.. size=.. seconds=.. faults=..
//! faults_per_s=..` (the faults counted are the children's minor faults in the loop).

use guest_tests::msharefs::{create_mapping, set_size, MshareCreate, SystemStats, MOUNT};
use guest_tests::process::{pipe, spawn_child, wait_child};
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
        "mshare" | "mshare-pte" | "mshare-pmd" => {
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
        other => {
            Err(io::Error::other(format!("unknown way '{other}' (mshare, mshare-pte, mshare-pmd, memfd, hugetlb)")))
        }
    }
}

const GIB: usize = 1 << 30;
const GRANULE: usize = 2 << 20;

/// A free address for `len` bytes at `skew` past a 1 GiB boundary (null if none found):
/// reserves more than needed and keeps the address.
fn free_address(len: usize, skew: usize) -> *mut libc::c_void {
    // SAFETY: an inaccessible anonymous reservation, unmapped right away.
    unsafe {
        let reserve = libc::mmap(
            std::ptr::null_mut(),
            len + 2 * GIB,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if reserve == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        libc::munmap(reserve, len + 2 * GIB);
        ((reserve as usize).div_ceil(GIB) * GIB + skew) as *mut libc::c_void
    }
}

/// The length of `way`'s window over `size` bytes: whole GiBs for `mshare-pmd`.
fn window_len(way: &str, size: usize) -> usize {
    if way == "mshare-pmd" {
        size.next_multiple_of(GIB)
    } else {
        size
    }
}

/// Maps `file` shared read-write as `way` does (see the module documentation).
fn map(way: &str, file: &File, size: usize) -> *mut libc::c_void {
    let len = window_len(way, size);
    let hint = match way {
        "mshare" => std::ptr::null_mut(),
        "mshare-pte" => free_address(len, GRANULE),
        _ if way == "mshare-pmd" || size >= GIB => free_address(len, 0),
        _ => std::ptr::null_mut(),
    };
    let flags = libc::MAP_SHARED | if hint.is_null() { 0 } else { libc::MAP_FIXED_NOREPLACE };
    // SAFETY: a fresh shared mapping at a free address, checked by the caller.
    unsafe { libc::mmap(hint, len, libc::PROT_READ | libc::PROT_WRITE, flags, file.as_raw_fd(), 0) }
}

/// Nanoseconds per random 8-byte read over `size` bytes of `file` mapped as `way` does,
/// every page touched first.
fn ns_per_access(way: &str, file: &File, size: usize) -> io::Result<f64> {
    const READS: u64 = 1 << 21;
    let ptr = map(way, file, size);
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let base = ptr.cast::<u64>();
    let words = (size / 8) as u64;
    for word in (0..words).step_by(512) {
        // SAFETY: inside the mapping.
        unsafe { base.add(word as usize).read_volatile() };
    }
    // xorshift64: a fixed seed, the same sequence of addresses for every way.
    let (mut x, mut sum) = (0x9e37_79b9_7f4a_7c15u64, 0u64);
    let start = Instant::now();
    for _ in 0..READS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // SAFETY: a word inside the mapping.
        sum = sum.wrapping_add(unsafe { base.add((x % words) as usize).read_volatile() });
    }
    let ns = start.elapsed().as_nanos() as f64 / READS as f64;
    std::hint::black_box(sum);
    // SAFETY: unmapping the window made above.
    unsafe { libc::munmap(ptr, window_len(way, size)) };
    Ok(ns)
}

/// What one child reports: the minor faults of touching the window, VmPTE (KiB),
/// microseconds to map and touch. The faults are counted around the touching alone: a
/// forked child also faults on its parent's copy-on-write stack, its code and the clock's
/// pages, a few times and not always as often (where ASLR put the stack top within its page
/// decides whether the mapping path's deeper stack reaches one more page), which counted
/// with the window's made 64 sharers' one fault each read 64 to 128 from run to run.
fn child(way: &str, file: Option<&File>, size: usize, report: &mut File, barrier: &mut File) -> ! {
    let start = Instant::now();
    let mut faults = 0;
    if let Some(file) = file {
        let ptr = map(way, file, size);
        if ptr == libc::MAP_FAILED {
            // SAFETY: leaving the child.
            unsafe { libc::_exit(2) };
        }
        let before = minor_faults();
        for offset in (0..size).step_by(4096) {
            // SAFETY: inside the mapping.
            unsafe { ptr.cast::<u8>().add(offset).write_volatile(1) };
        }
        faults = minor_faults() - before;
    }
    let line = format!("{faults} {} {}\n", status_kib("VmPTE:"), start.elapsed().as_micros());
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
fn round(way: &str, file: Option<&File>, size: usize, procs: usize) -> io::Result<(i64, Vec<Report>)> {
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
            child(way, file, size, &mut w, &mut r);
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

/// One refault child: maps the region, waits for its byte on `start`, then faults every
/// granule in and drops the window until `seconds` have passed; writes its fault count.
fn refault_child(file: &File, size: usize, seconds: f64, start: &mut File, report: &mut File) -> i32 {
    let ptr = map("mshare", file, size);
    if ptr == libc::MAP_FAILED {
        return 2;
    }
    let _ = start.read(&mut [0u8; 1]);
    let began = Instant::now();
    let before = minor_faults();
    while began.elapsed().as_secs_f64() < seconds {
        for offset in (0..size).step_by(GRANULE) {
            // SAFETY: inside the mapping.
            unsafe { ptr.cast::<u8>().add(offset).write_volatile(1) };
        }
        // SAFETY: dropping this process's mappings of its own window; the region keeps
        // the memory, the next touch faults it in again.
        if unsafe { libc::madvise(ptr, size, libc::MADV_DONTNEED) } != 0 {
            return 3;
        }
    }
    let line = format!("{}\n", minor_faults() - before);
    i32::from(report.write_all(line.as_bytes()).is_err())
}

/// `refault PROCS SIZE SECONDS`: see the module documentation.
fn refault(procs: usize, size: u64, seconds: f64) -> io::Result<String> {
    let file = make("mshare", size)?;
    let mode = SystemStats::read()?.mode;
    let (mut report_r, report_w) = pipe()?;
    let (start_r, mut start_w) = pipe()?;
    let mut pids = Vec::new();
    for _ in 0..procs {
        let (mut start, mut report) = (start_r.try_clone()?, report_w.try_clone()?);
        let pid = spawn_child(|| refault_child(&file, size as usize, seconds, &mut start, &mut report))
            .ok_or_else(io::Error::last_os_error)?;
        pids.push(pid);
    }
    drop((start_r, report_w));
    // A byte each lets every child go at once (each holds the write end too, so no EOF).
    start_w.write_all(&vec![0u8; procs])?;
    let mut text = String::new();
    report_r.read_to_string(&mut text)?;
    let statuses: Vec<i32> = pids.into_iter().map(wait_child).collect();
    if let Some(bad) = statuses.iter().find(|&&s| s != 0) {
        return Err(io::Error::other(format!("a refault child failed with status {bad}")));
    }
    let counts: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    if counts.len() != procs {
        return Err(io::Error::other(format!("{} of {procs} refault children reported", counts.len())));
    }
    let faults: u64 = counts.iter().sum();
    Ok(format!(
        "BENCH way=refault mode={mode} procs={procs} size={size} seconds={seconds} faults={faults} faults_per_s={:.0}",
        faults as f64 / seconds
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("refault") {
        let parsed = (
            args.get(1).and_then(|p| p.parse::<usize>().ok()),
            args.get(2).and_then(|s| parse_size(s)),
            args.get(3).and_then(|s| s.parse::<f64>().ok()),
        );
        let (Some(procs), Some(size), Some(seconds)) = parsed else {
            eprintln!("usage: mshare-bench refault PROCS SIZE SECONDS");
            return ExitCode::from(2);
        };
        return match refault(procs, size, seconds) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mshare-bench refault: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let (Some(way), Some(procs), Some(size)) =
        (args.first(), args.get(1).and_then(|p| p.parse::<usize>().ok()), args.get(2).and_then(|s| parse_size(s)))
    else {
        eprintln!("usage: mshare-bench mshare|mshare-pte|mshare-pmd|memfd|hugetlb PROCS SIZE\n       mshare-bench refault PROCS SIZE SECONDS");
        return ExitCode::from(2);
    };
    let run = || -> io::Result<String> {
        let file = make(way, size)?;
        let region = way.starts_with("mshare");
        let mode = if region { SystemStats::read()?.mode } else { "-".to_owned() };
        let (idle_grown, idle) = round(way, None, 0, procs)?;
        let (grown, reports) = round(way, Some(&file), size as usize, procs)?;
        // Shared tables (a 4 KiB page each, PTE and PMD) live while the region does: read
        // while `file` holds it.
        let shared_tables_kib = if region {
            let system = SystemStats::read()?;
            (system.shared_tables + system.shared_pmd_tables) as i64 * 4
        } else {
            0
        };
        let ns = ns_per_access(way, &file, size as usize)?;
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
             shared_tables_kib={shared_tables_kib} residual_kib={residual:.0} faults={faults} ms_per_proc={:.1} \
             ns_per_access={ns:.1}",
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
