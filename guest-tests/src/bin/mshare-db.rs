//! mshare-db: a cross-VM lock-contention stress over one buffer pool (the database
//! benchmarks use LMDB: `mshare-lmdb`).
//!
//! ```text
//! mshare-db mshare|shmem WORKERS SECONDS [WRITE_PERCENT]
//! ```
//! The buffer pool is 8 KiB pages. `mshare`: the first ivshmem region of the VMM, attached
//! through msharefs (`/sys/fs/mshare/ivshmem/<name>`) by every worker; the same pool is
//! seen by every VM sharing the host file behind it. `shmem`: a shared memfd of the same
//! size in this VM's RAM, each worker mapping it (a private copy per VM, plain page
//! tables). WORKERS processes pick pages with a Zipfian distribution (theta 0.99) and read
//! (copy the page, validating it against its header's version and checksum: a seqlock) or
//! write (take the page's lock in its header with an atomic compare-and-swap, write,
//! release) for SECONDS. Prints one line:
//! `DB way=.. workers=.. seconds=.. ops=.. ops_per_s=.. p50_us=.. p99_us=.. measured_s=.. pagetables_kib=.. torn=.. bad=..`
//! with operations per second over the measured time (first fork to last worker reaped)
//! and the PageTables growth while the workers run; `bad` counts pages that failed
//! validation on a stable read (must be 0), `torn` reads retried because a writer was busy,
//! `foreign` validated reads of pages last written by another VM (each writer puts its
//! VM's tag, from the kernel's boot id, first in the payload): above zero only if the VMs
//! really share the pool. The workers' seeds derive from the tag too, so VMs booted alike
//! do not replay one another's choices.

use guest_tests::process::pipe;
use guest_tests::rng::Rng;
use guest_tests::workload::{scatter, Latencies, Zipf};
use guest_tests::{checksum, memfd, meminfo_kib};
use mshare_uapi::Window;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PAGE: usize = 8192;
/// Header: version (even: stable; odd: being written), checksum of the payload.
const HEADER: usize = 16;
/// The Zipfian skew (YCSB's).
const THETA: f64 = 0.99;

/// The page's header word `at` (0: version, 8: checksum) as an atomic.
fn header(window: &Window, page: usize, at: usize) -> &AtomicU64 {
    // SAFETY: inside the window, 8-byte aligned (pages are 8 KiB aligned); the memory is
    // shared with other processes and VMs, which only ever use it through atomics too.
    unsafe { &*window.as_ptr().add(page * PAGE + at).cast::<AtomicU64>() }
}

/// This VM's tag: a hash of the kernel's boot id, random at every boot (never 0).
fn vm_tag() -> Result<u64, String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map_err(|e| format!("reading /proc/sys/kernel/random/boot_id: {e}"))?;
    Ok(checksum(id.trim().as_bytes()) | 1)
}

/// Reads page `page` consistently: `Ok(retries)` once a stable copy validated, or `Err` if
/// a stable copy did not match its checksum.
fn read(window: &Window, page: usize, buf: &mut [u8]) -> Result<u64, ()> {
    let mut retries = 0;
    loop {
        let before = header(window, page, 0).load(Ordering::Acquire);
        if !before.is_multiple_of(2) {
            retries += 1;
            std::hint::spin_loop();
            continue;
        }
        let sum = header(window, page, 8).load(Ordering::Acquire);
        window.read(page * PAGE + HEADER, buf);
        std::sync::atomic::fence(Ordering::Acquire);
        if header(window, page, 0).load(Ordering::Relaxed) != before {
            retries += 1;
            continue;
        }
        // A never-written page is all zeros, header included.
        return if (before == 0 && sum == 0) || checksum(buf) == sum { Ok(retries) } else { Err(()) };
    }
}

/// Writes page `page` under its lock: the version goes odd while it is written. The
/// payload starts with the writer VM's `tag`.
fn write(window: &Window, page: usize, buf: &mut [u8], rng: &mut Rng, tag: u64) -> u64 {
    let version = header(window, page, 0);
    let mut spins = 0;
    let start = loop {
        let current = version.load(Ordering::Relaxed);
        if current.is_multiple_of(2)
            && version.compare_exchange(current, current + 1, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            break current;
        }
        spins += 1;
        std::hint::spin_loop();
    };
    for chunk in buf.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_ne_bytes()[..chunk.len()]);
    }
    buf[..8].copy_from_slice(&tag.to_ne_bytes());
    window.write(page * PAGE + HEADER, buf);
    header(window, page, 8).store(checksum(buf), Ordering::Release);
    version.store(start + 2, Ordering::Release);
    spins
}

/// The pool's file: the first ivshmem region, or a fresh memfd of `size` bytes.
fn pool(way: &str) -> Result<(File, usize), String> {
    match way {
        "mshare" => {
            let dir = format!("{}/ivshmem", mshare_uapi::msharefs::MOUNT);
            let entry = fs::read_dir(&dir)
                .map_err(|e| format!("{dir}: {e} (no ivshmem device: the VMM must attach a region)"))?
                .flatten()
                .next()
                .ok_or_else(|| format!("{dir} is empty: the VMM must attach a region"))?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(entry.path())
                .map_err(|e| format!("{}: {e}", entry.path().display()))?;
            let size = file.metadata().map_err(|e| e.to_string())?.len() as usize;
            Ok((file, size))
        }
        "shmem" => {
            let size =
                std::env::var("MSHARE_DB_POOL_MIB").ok().and_then(|m| m.parse::<usize>().ok()).unwrap_or(256) << 20;
            let file = memfd(c"pool", 0).map_err(|e| format!("memfd_create: {e}"))?;
            file.set_len(size as u64).map_err(|e| format!("sizing the pool: {e}"))?;
            Ok((file, size))
        }
        other => Err(format!("unknown way '{other}': mshare or shmem")),
    }
}

/// What one worker counted.
struct Counts {
    ops: u64,
    torn: u64,
    bad: u64,
    /// Validated reads of pages another VM wrote last.
    foreign: u64,
}

/// One worker: runs until `deadline`, reports its counts and its latencies (ns).
fn worker(
    file: &File,
    size: usize,
    (seed, tag): (u64, u64),
    write_percent: u64,
    deadline: Instant,
) -> Result<(Counts, Latencies), String> {
    let window = Window::map(file, size, 0, false).map_err(|e| format!("mapping the pool: {e}"))?;
    let pages = size / PAGE;
    let zipf = Zipf::new(pages, THETA);
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; PAGE - HEADER];
    let mut counts = Counts { ops: 0, torn: 0, bad: 0, foreign: 0 };
    let mut latencies = Latencies::new();
    while Instant::now() < deadline {
        for _ in 0..64 {
            let page = scatter(zipf.sample(&mut rng), pages);
            let start = Instant::now();
            if rng.below(100) < write_percent {
                write(&window, page, &mut buf, &mut rng, tag);
            } else {
                match read(&window, page, &mut buf) {
                    Ok(retries) => {
                        counts.torn += retries;
                        let writer = u64::from_ne_bytes(buf[..8].try_into().unwrap_or_default());
                        // 0: a page nobody wrote yet.
                        if writer != 0 && writer != tag {
                            counts.foreign += 1;
                        }
                    }
                    Err(()) => counts.bad += 1,
                }
            }
            latencies.record(start.elapsed().as_nanos());
            counts.ops += 1;
        }
    }
    Ok((counts, latencies))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(way), Some(workers), Some(seconds)) = (
        args.first(),
        args.get(1).and_then(|w| w.parse::<usize>().ok()).filter(|&w| w > 0),
        args.get(2).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: mshare-db mshare|shmem WORKERS SECONDS [WRITE_PERCENT]");
        return ExitCode::from(2);
    };
    let write_percent = args.get(3).and_then(|p| p.parse::<u64>().ok()).unwrap_or(10).min(100);
    let (file, size) = match pool(way) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mshare-db: {e}");
            return ExitCode::FAILURE;
        }
    };
    let before = meminfo_kib("PageTables:");
    let (mut reports, report_w) = match pipe() {
        Ok(ends) => ends,
        Err(e) => {
            eprintln!("mshare-db: pipe: {e}");
            return ExitCode::FAILURE;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tag = match vm_tag() {
        Ok(tag) => tag,
        Err(e) => {
            eprintln!("mshare-db: {e}");
            return ExitCode::FAILURE;
        }
    };
    let seed = tag ^ std::process::id() as u64;
    let started = Instant::now();
    for w in 0..workers {
        // SAFETY: fork; the worker maps, runs, writes its report and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let line = match worker(&file, size, (seed.rotate_left(16) ^ w as u64, tag), write_percent, deadline) {
                Ok((c, mut lat)) => {
                    let (p50, p99, tables) = (lat.quantile(0.5), lat.quantile(0.99), meminfo_kib("PageTables:"));
                    format!("{} {} {} {} {p50} {p99} {tables}\n", c.ops, c.torn, c.bad, c.foreign)
                }
                Err(e) => format!("FAIL {e}\n"),
            };
            let _ = (&report_w).write_all(line.as_bytes());
            // SAFETY: leaving the worker.
            unsafe { libc::_exit(0) };
        }
    }
    drop(report_w);
    let mut text = String::new();
    let _ = reports.read_to_string(&mut text);
    // SAFETY: reaping our children.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0 {}
    let measured_s = started.elapsed().as_secs_f64();
    let mut failures = Vec::new();
    let (mut ops, mut torn, mut bad, mut foreign) = (0u64, 0u64, 0u64, 0u64);
    let (mut p50s, mut p99s, mut peak) = (Vec::new(), Vec::new(), 0u64);
    for line in text.lines() {
        if let Some(why) = line.strip_prefix("FAIL ") {
            failures.push(why.to_owned());
            continue;
        }
        let f: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if f.len() == 7 {
            ops += f[0];
            torn += f[1];
            bad += f[2];
            foreign += f[3];
            p50s.push(f[4]);
            p99s.push(f[5]);
            peak = peak.max(f[6]);
        }
    }
    if p50s.len() != workers {
        failures.push(format!("{} of {workers} workers reported", p50s.len()));
    }
    p50s.sort_unstable();
    p99s.sort_unstable();
    // Per-worker percentiles, summarised by their median (p50) and maximum (p99).
    let p50 = p50s.get(p50s.len() / 2).copied().unwrap_or(0) as f64 / 1000.0;
    let p99 = p99s.last().copied().unwrap_or(0) as f64 / 1000.0;
    println!(
        "DB way={way} workers={workers} seconds={seconds} pool_mib={} write_percent={write_percent} ops={ops} ops_per_s={:.0} \
         p50_us={p50:.1} p99_us={p99:.1} measured_s={measured_s:.2} pagetables_kib={} torn={torn} bad={bad} foreign={foreign}",
        size >> 20,
        ops as f64 / measured_s.max(1e-9),
        peak.saturating_sub(before)
    );
    for why in &failures {
        println!("mshare-db: FAILED: {why}");
    }
    if failures.is_empty() && bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
