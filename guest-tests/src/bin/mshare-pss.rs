//! mshare-pss: what `/proc` says a region costs the processes that map it. N processes
//! (4) each map a region and touch every page; their `/proc/PID/smaps` must then divide
//! the region among them, as it does a file's page cache shared by N mappings:
//!
//! - each one's window: `Rss` the region's memory, all of it `Shared_*`, no `Private_*`;
//! - the sum of their `Pss`: the region's memory, within a page per process (each figure
//!   is rounded down to a KiB);
//! - each one's `RssFile` (so `VmRSS`): grown by the region's memory while it maps it.
//!
//! It runs twice: a 16 MiB region mapped by 16 MiB windows (in mode B, 8 shared PTE
//! tables each process links), and a 64 MiB region mapped by whole-GiB windows (in mode B,
//! one shared PMD table of 2 MiB leaves). In mode B the processes' tables are the region's
//! and its pages have no mapcount: the kernel's accounting follows the links instead
//! (core-mm patch 0004). Mode C maps the pages into each process the usual way, so both
//! modes must give the same figures. In mode B, the region's statistics must also count
//! the links while the processes hold them (`links_now`), and none after.
//!
//! ```text
//! mshare-pss
//! ```
//! Prints `mshare-pss: ok|not ok N - <check>` per check, then `mshare-pss: N checks,
//! F failed`; exit 0 if all held.

use guest_tests::msharefs::{create_mapping, get_stats, set_size, MshareCreate, SystemStats, MOUNT};
use guest_tests::process::{pipe, spawn_child, wait_child};
use guest_tests::status_kib;
use guest_tests::suite::{eq, Suite};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;
const PAGE: usize = 4096;
/// Processes that map each region.
const SHARERS: usize = 4;

/// What one process's smaps says of its window, in KiB.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    rss: u64,
    pss: u64,
    shared: u64,
    private: u64,
}

/// The figures of the mapping that starts at `start` in process `pid`'s smaps.
fn window_figures(pid: libc::pid_t, start: usize) -> Result<Figures, String> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).map_err(|e| format!("/proc/{pid}/smaps: {e}"))?;
    let header = format!("{start:x}-");
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&header));
    if lines.next().is_none() {
        return Err(format!("no mapping at {start:#x} in /proc/{pid}/smaps"));
    }
    let mut figures = Figures::default();
    // The mapping's fields run until the next mapping's header (which has no colon at
    // the end of its first word).
    for line in lines.take_while(|l| l.split_whitespace().next().is_some_and(|w| w.ends_with(':'))) {
        let mut words = line.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next().and_then(|v| v.parse::<u64>().ok())) else {
            continue;
        };
        match key {
            "Rss:" => figures.rss = value,
            "Pss:" => figures.pss = value,
            "Shared_Clean:" | "Shared_Dirty:" => figures.shared += value,
            "Private_Clean:" | "Private_Dirty:" => figures.private += value,
            _ => {}
        }
    }
    Ok(figures)
}

/// A sharer, mapped and touched, waiting for the word to exit (a byte on `go`).
struct Sharer {
    pid: libc::pid_t,
    window: usize,
    /// How much its RssFile grew from before it mapped the region to after it touched it.
    rss_file_growth_kib: u64,
    go: File,
}

/// Forks a process that maps `len` bytes of `region` (at a whole GiB when `len` is one),
/// touches every page of the region's `size` bytes, reports, and waits on a pipe.
fn start_sharer(region: &File, len: usize, size: usize) -> Result<Sharer, String> {
    let (mut report_r, mut report_w) = pipe().map_err(|e| e.to_string())?;
    let (mut go_r, go_w) = pipe().map_err(|e| e.to_string())?;
    let pid = spawn_child(move || {
        let before = status_kib("RssFile:");
        // SAFETY: a fresh shared mapping of the region; the child only touches it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                region.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return 2;
        }
        let p = p.cast::<u8>();
        for offset in (0..size).step_by(PAGE) {
            // SAFETY: inside the window, over the region's memory.
            unsafe { std::hint::black_box(p.add(offset).read_volatile()) };
        }
        let grown = status_kib("RssFile:").saturating_sub(before);
        let report = format!("{:x} {grown}\n", p as usize);
        if report_w.write_all(report.as_bytes()).is_err() {
            return 3;
        }
        drop(report_w);
        // The word to go is a byte: the write end stays open in every process forked
        // after this one.
        let mut byte = [0u8; 1];
        let _ = go_r.read(&mut byte);
        0
    })
    .ok_or_else(|| format!("fork: {}", std::io::Error::last_os_error()))?;
    let mut report = String::new();
    let read = report_r.read_to_string(&mut report);
    let mut words = report.split_whitespace();
    let window = words.next().and_then(|w| usize::from_str_radix(w, 16).ok());
    let grown = words.next().and_then(|w| w.parse().ok());
    match (read, window, grown) {
        (Ok(_), Some(window), Some(rss_file_growth_kib)) => Ok(Sharer { pid, window, rss_file_growth_kib, go: go_w }),
        _ => {
            let mut go_w = go_w;
            let _ = go_w.write_all(b"g");
            Err(format!("the sharer reported {report:?} and exited {}", wait_child(pid)))
        }
    }
}

/// A region of `size` bytes, all of it memory, mapped by `SHARERS` processes with windows
/// of `len` bytes: `tables` is how many shared tables each links in mode B.
fn divided_among_sharers(t: &mut Suite, mode_b: bool, what: &str, size: usize, len: usize, tables: u64) {
    let name = format!("{MOUNT}/pss-{}", size / MIB);
    let made = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&name).and_then(|f| {
        set_size(&f, size as u64)?;
        create_mapping(&f, &MshareCreate::anonymous(0, size as u64))?;
        Ok(f)
    });
    let region = match made {
        Ok(region) => region,
        Err(e) => return t.check(&format!("{what}: a region of {} MiB with memory", size / MIB), Err(e.to_string())),
    };
    let mut sharers = Vec::new();
    for _ in 0..SHARERS {
        match start_sharer(&region, len, size) {
            Ok(sharer) => sharers.push(sharer),
            Err(e) => {
                t.check(&format!("{what}: a sharer maps and touches the region"), Err(e));
                break;
            }
        }
    }
    if sharers.len() == SHARERS {
        let size_kib = (size / 1024) as u64;
        let figures: Vec<Result<Figures, String>> = sharers.iter().map(|s| window_figures(s.pid, s.window)).collect();
        let all: Result<Vec<Figures>, String> = figures.into_iter().collect();
        match all {
            Ok(all) => {
                t.check(
                    &format!("{what}: each sharer's Rss is the region's memory, all of it Shared_*, none Private_*"),
                    eq(all.iter().all(|f| (f.rss, f.shared, f.private) == (size_kib, size_kib, 0)), true)
                        .map_err(|_| format!("{all:?}, region {size_kib} kB")),
                );
                let pss: u64 = all.iter().map(|f| f.pss).sum();
                let slack = (SHARERS * PAGE / 1024) as u64;
                t.check(
                    &format!("{what}: the sum of the sharers' Pss is the region's memory (within a page each)"),
                    eq(pss <= size_kib && pss + slack >= size_kib, true)
                        .map_err(|_| format!("sum {pss} kB, region {size_kib} kB: {all:?}")),
                );
            }
            Err(e) => t.check(&format!("{what}: the sharers' smaps list their windows"), Err(e)),
        }
        let growth: Vec<u64> = sharers.iter().map(|s| s.rss_file_growth_kib).collect();
        t.check(
            &format!("{what}: each sharer's RssFile (VmRSS) grew by the region's memory"),
            eq(growth.iter().all(|&g| g == size_kib), true).map_err(|_| format!("{growth:?} kB, region {size_kib} kB")),
        );
        if mode_b {
            t.check(
                &format!("{what}: GET_STATS counts each sharer's links to the region's {tables} table(s) now"),
                get_stats(&region).map_err(|e| e.to_string()).and_then(|s| eq(s.links_now, tables * SHARERS as u64)),
            );
        }
    }
    let statuses: Vec<i32> = sharers
        .into_iter()
        .map(|mut s| {
            let _ = s.go.write_all(b"g");
            wait_child(s.pid)
        })
        .collect();
    t.check(
        &format!("{what}: the sharers exit cleanly"),
        eq(statuses.iter().all(|&s| s == 0), true).map_err(|_| format!("{statuses:?}")),
    );
    if mode_b {
        t.check(
            &format!("{what}: no link is left once they are gone"),
            get_stats(&region).map_err(|e| e.to_string()).and_then(|s| eq(s.links_now, 0)),
        );
    }
    drop(region);
    let _ = fs::remove_file(&name);
}

fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        eprintln!("usage: mshare-pss");
        return ExitCode::from(2);
    }
    let mode_b = match SystemStats::read() {
        Ok(s) => s.shares_tables(),
        Err(e) => {
            eprintln!("mshare-pss: cannot read mshare_stats: {e} (is mshare.ko loaded?)");
            return ExitCode::FAILURE;
        }
    };
    println!("mshare-pss: mode {}, {SHARERS} sharers", if mode_b { "B" } else { "C" });
    let mut t = Suite::new("mshare-pss");
    divided_among_sharers(&mut t, mode_b, "16 MiB windows", 16 * MIB, 16 * MIB, 8);
    divided_among_sharers(&mut t, mode_b, "whole-GiB windows", 64 * MIB, GIB, 1);
    t.finish()
}
