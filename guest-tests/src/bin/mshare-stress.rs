//! mshare-stress: many processes using mshare regions at once, every step checked.
//!
//! ```text
//! mshare-stress PROCS SECONDS [SEED [OPS]]
//! ```
//! OPS narrows the operations to some of `awcdfrvx` (see `Worker::run`), to chase a failure.
//! The parent makes 8 shared regions (8 MiB each) and starts PROCS workers. Until the time
//! is up, each worker picks operations at random (seeded: the seed is printed, and a
//! worker's sequence depends only on it): attach a shared region (open + mmap: half of the
//! windows are of a whole GiB, which in mode B share the region's PMD table and its 2 MiB
//! leaves, the others of the region's size, sharing its PTE tables), write its
//! own checksummed page in it after checking what it wrote last, check pages other workers
//! wrote, detach, fork a child that checks its page through the inherited window, run a
//! private region through its whole life (create, size, memory, map, a child attaching it
//! by name and waiting on a futex in it that the worker wakes from its own address,
//! SET_PROT read-only and back, UNMAP part, unlink), do the same through
//! /dev/mshare, or exit and be replaced by a fresh worker that takes over its pages.
//! Every mismatch is reported with its place and fails the run. At the end the parent
//! removes the regions and checks that the module's counters, PageTables and free memory
//! are back where they started. Prints `STRESS ...` with the figures; exit 0 if all held.

use guest_tests::msharefs::{
    create_mapping, set_prot, set_size, unmap as unmap_range, MshareCreate, SystemStats, MOUNT,
};
use guest_tests::process::{in_child, pipe, spawn_child, wait_child};
use guest_tests::rng::Rng;
use guest_tests::{checksum, meminfo_kib};
use mshare_uapi::device::Device;
use mshare_uapi::{Calls, Window};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const GRANULE: usize = 2 << 20;
const PAGE: usize = 4096;
const SHARED_REGIONS: usize = 8;
const SHARED_SIZE: usize = 4 * GRANULE;
/// A window of a whole GiB over a smaller region (the rest of the GiB a hole): in mode B
/// it shares the region's PMD table instead of its PTE tables.
const GIB: usize = 1 << 30;
const HEADER: usize = 32;
/// How far the coarse free-memory figure may end below where it started, in KiB. It moves
/// between identical runs: 0.1-4.2 MiB in seven make test runs on 2026-11-30, since each
/// region cycle also forks a futex waiter (2.5 MiB either way before).
const FREE_TOLERANCE_KIB: u64 = 8192;
/// Operations by letter: attach, write own page, check others, detach, fork and check,
/// region cycle, /dev/mshare cycle, exit.
const ALL_OPS: &str = "awcdfrvx";

fn u64_at(page: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(page[at..at + 8].try_into().unwrap_or([0; 8]))
}

/// A checksummed page: `[version, owner, seq, checksum, payload..]`; the owner makes the
/// version odd while it writes, so a reader can tell a page being written.
fn fill_page(page: &mut [u8], owner: u64, seq: u64) {
    let mut rng = Rng::new(owner << 32 ^ seq);
    page[8..16].copy_from_slice(&owner.to_ne_bytes());
    page[16..24].copy_from_slice(&seq.to_ne_bytes());
    for chunk in page[HEADER..].chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_ne_bytes()[..chunk.len()]);
    }
    let sum = checksum(&[&page[8..24], &page[HEADER..]].concat());
    page[24..32].copy_from_slice(&sum.to_ne_bytes());
}

/// `Some((owner, seq))` if the page's checksum holds (a never-written page is all zeros).
fn check_page(page: &[u8]) -> Option<(u64, u64)> {
    if page.iter().all(|&b| b == 0) {
        return Some((0, 0));
    }
    let sum = checksum(&[&page[8..24], &page[HEADER..]].concat());
    (sum == u64_at(page, 24)).then(|| (u64_at(page, 8), u64_at(page, 16)))
}

/// Writes page `index` of `window` as its owner: version odd, contents, version even.
fn write_page(window: &Window, index: usize, owner: u64, seq: u64) {
    let mut page = vec![0u8; PAGE];
    window.read(index * PAGE, &mut page[..8]);
    let version = u64_at(&page, 0);
    window.write(index * PAGE, &(version | 1).to_ne_bytes());
    fill_page(&mut page, owner, seq);
    window.write(index * PAGE + 8, &page[8..]);
    window.write(index * PAGE, &((version | 1) + 1).to_ne_bytes());
}

/// Reads page `index` as another process: `None` while its owner is writing it.
fn read_stable(window: &Window, index: usize) -> Option<Vec<u8>> {
    let mut page = vec![0u8; PAGE];
    window.read(index * PAGE, &mut page);
    let mut again = [0u8; 8];
    window.read(index * PAGE, &mut again);
    (u64_at(&page, 0).is_multiple_of(2) && u64_at(&page, 0) == u64::from_ne_bytes(again)).then_some(page)
}

fn shared_name(k: usize) -> String {
    format!("{MOUNT}/stress-shared-{k}")
}

fn open_rw(path: &str) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// One worker: its identity (its pages are at this index in every shared region), its
/// random sequence and its counts.
struct Worker {
    id: usize,
    rng: Rng,
    windows: Vec<(usize, Window)>,
    ops: u64,
    checks: u64,
    cycles: u64,
    /// The operations this run uses, by letter (see `run`).
    ops_enabled: String,
}

type Failure = String;

impl Worker {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) -> Result<(), Failure> {
        self.checks += 1;
        if ok {
            Ok(())
        } else {
            Err(format!("worker {}: {}", self.id, what()))
        }
    }

    fn attach(&mut self) -> Result<(), Failure> {
        if self.windows.len() >= 3 {
            return Ok(());
        }
        let k = self.rng.below(SHARED_REGIONS as u64) as usize;
        let len = if self.rng.below(2) == 0 { GIB } else { SHARED_SIZE };
        let window = open_rw(&shared_name(k))
            .and_then(|f| Window::map(&f, len, 0, false))
            .map_err(|e| format!("worker {}: attaching region {k}: {e}", self.id))?;
        self.windows.push((k, window));
        Ok(())
    }

    /// Checks this worker's page in a window (what it wrote last, or nothing), writes the
    /// next version.
    fn write_own(&mut self) -> Result<(), Failure> {
        if self.windows.is_empty() {
            return self.attach();
        }
        let i = self.rng.below(self.windows.len() as u64) as usize;
        let mut page = vec![0u8; PAGE];
        self.windows[i].1.read(self.id * PAGE, &mut page);
        let found = check_page(&page);
        let (k, id, owner) = (self.windows[i].0, self.id, self.id as u64 + 1);
        self.check(matches!(found, Some((o, _)) if o == 0 || o == owner), || {
            format!("region {k}, own page {id}: checksum or owner wrong: {found:?}")
        })?;
        let seq = found.map_or(0, |(_, s)| s) + 1;
        write_page(&self.windows[i].1, self.id, owner, seq);
        Ok(())
    }

    fn check_others(&mut self) -> Result<(), Failure> {
        let Some(i) = (!self.windows.is_empty()).then(|| self.rng.below(self.windows.len() as u64) as usize) else {
            return Ok(());
        };
        for _ in 0..8 {
            let index = self.rng.below((SHARED_SIZE / PAGE) as u64) as usize;
            if let Some(page) = read_stable(&self.windows[i].1, index) {
                let found = check_page(&page);
                let k = self.windows[i].0;
                self.check(matches!(found, Some((o, _)) if o == 0 || o == index as u64 + 1), || {
                    format!("region {k}, page {index}: {found:?}")
                })?;
            }
        }
        Ok(())
    }

    fn detach(&mut self) {
        if !self.windows.is_empty() {
            let i = self.rng.below(self.windows.len() as u64) as usize;
            self.windows.swap_remove(i);
        }
    }

    /// A child checks this worker's page through the inherited window.
    fn fork_check(&mut self) -> Result<(), Failure> {
        let Some((k, window)) = self.windows.first() else { return Ok(()) };
        let (id, k) = (self.id, *k);
        let code = in_child(|| {
            let mut page = vec![0u8; PAGE];
            window.read(id * PAGE, &mut page);
            i32::from(!matches!(check_page(&page), Some((o, _)) if o == 0 || o == id as u64 + 1))
        });
        self.check(code == 0, || format!("region {k}: a forked child saw page {id} wrong (status {code})"))
    }

    /// A private region through its whole life, with a child attaching it by name.
    fn region_cycle(&mut self) -> Result<(), Failure> {
        let path = format!("{MOUNT}/stress-w{}-{}", self.id, self.cycles);
        self.cycles += 1;
        let size = 2 * GRANULE;
        let fail = |what: &str, e: std::io::Error| format!("{path}: {what}: {e}");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| fail("create", e))?;
        set_size(&file, size as u64).map_err(|e| fail("SET_SIZE", e))?;
        create_mapping(&file, &MshareCreate::anonymous(0, size as u64)).map_err(|e| fail("CREATE_MAPPING", e))?;
        // This worker's window shares the PMD table half the time; the child's shares the
        // PTE tables: both kinds of table follow SET_PROT and UNMAP.
        let len = if self.rng.below(2) == 0 { GIB } else { size };
        let window = Window::map(&file, len, 0, false).map_err(|e| fail("mmap", e))?;
        let owner = 1_000_000 + self.id as u64;
        for index in [0, 1, GRANULE / PAGE, size / PAGE - 1] {
            write_page(&window, index, owner, self.cycles);
        }
        let child_path = path.clone();
        let seen = in_child(|| {
            let Ok(w) = open_rw(&child_path).and_then(|f| Window::map(&f, size, 0, false)) else { return 2 };
            let mut page = vec![0u8; PAGE];
            w.read((size / PAGE - 1) * PAGE, &mut page);
            if !matches!(check_page(&page), Some((o, _)) if o == owner) {
                return 3;
            }
            w.write(2 * PAGE, b"ack");
            0
        });
        self.check(seen == 0, || format!("{path}: a child attaching by name saw status {seen}"))?;
        let mut ack = [0u8; 3];
        window.read(2 * PAGE, &mut ack);
        self.check(&ack == b"ack", || format!("{path}: the child's write did not show: {ack:?}"))?;
        self.futex_handoff(&path, &window)?;
        set_prot(&file, libc::PROT_READ).map_err(|e| fail("SET_PROT read-only", e))?;
        let code = in_child(|| {
            window.write(3 * PAGE, b"x");
            0
        });
        self.check(code == 128 + libc::SIGSEGV, || format!("{path}: a write after SET_PROT read-only gave {code}"))?;
        set_prot(&file, libc::PROT_READ | libc::PROT_WRITE).map_err(|e| fail("SET_PROT read-write", e))?;
        unmap_range(&file, GRANULE as u64, GRANULE as u64).map_err(|e| fail("UNMAP", e))?;
        let mut page = vec![0u8; PAGE];
        window.read(PAGE, &mut page);
        self.check(matches!(check_page(&page), Some((o, _)) if o == owner), || {
            format!("{path}: UNMAP of granule 1 changed granule 0")
        })?;
        let hole = in_child(|| {
            let mut byte = [0u8; 1];
            window.read(GRANULE, &mut byte);
            0
        });
        self.check(hole == 128 + libc::SIGSEGV, || format!("{path}: reading the UNMAPped granule gave {hole}"))?;
        fs::remove_file(&path).map_err(|e| fail("unlink", e))?;
        Ok(())
    }

    /// A child maps the region anew (another address) and waits on a futex word in it;
    /// this worker wakes it through its own window: the wake must find the waiter (the
    /// futex key is the region's page, not an address).
    fn futex_handoff(&mut self, path: &str, window: &Window) -> Result<(), Failure> {
        const WORD: usize = 5 * PAGE;
        // SAFETY: an aligned u32 inside the window, which outlives every use below.
        let word = unsafe { &*window.as_ptr().add(WORD).cast::<AtomicU32>() };
        word.store(0, Ordering::SeqCst);
        let child_path = path.to_owned();
        let child = spawn_child(|| {
            let Ok(w) = open_rw(&child_path).and_then(|f| Window::map(&f, 2 * GRANULE, 0, false)) else { return 2 };
            let timeout = libc::timespec { tv_sec: 30, tv_nsec: 0 };
            // SAFETY: FUTEX_WAIT on a u32 of the child's own window, with a timeout.
            let ret = unsafe {
                libc::syscall(libc::SYS_futex, w.as_ptr().add(WORD), libc::FUTEX_WAIT, 0, &timeout, 0usize, 0)
            };
            let errno = std::io::Error::last_os_error().raw_os_error();
            match (ret, errno) {
                (0, _) | (_, Some(libc::EAGAIN)) => 0,
                (_, Some(libc::ETIMEDOUT)) => 4,
                _ => 5,
            }
        })
        .ok_or_else(|| format!("{path}: fork for the futex hand-off failed"))?;
        let started = Instant::now();
        let mut woken = 0;
        while woken == 0 && started.elapsed() < Duration::from_secs(20) {
            // SAFETY: FUTEX_WAKE on the same word through this worker's window.
            woken = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1, 0usize, 0usize, 0) };
            if woken == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        word.store(1, Ordering::SeqCst);
        // SAFETY: as above; releases the child if the wake above found no waiter.
        unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1, 0usize, 0usize, 0) };
        let code = wait_child(child);
        self.check(woken == 1 && code == 0, || {
            format!("{path}: futex hand-off: the wake found {woken} waiters, the child ended {code}")
        })
    }

    /// The same through /dev/mshare, with a region that has no name.
    fn device_cycle(&mut self) -> Result<(), Failure> {
        let id = self.id;
        let fail = |what: &str, e: std::io::Error| format!("worker {id}: /dev/mshare {what}: {e}");
        let dev = Device::open().map_err(|e| fail("open", e))?;
        let region = dev.create(true).map_err(|e| fail("MSHARE_CREATE", e))?;
        region.set_len(GRANULE as u64).map_err(|e| fail("ftruncate", e))?;
        dev.map(&region, 0, GRANULE as u64).map_err(|e| fail("MSHARE_MAP", e))?;
        let window = dev.attach(&region, 0, GRANULE, false).map_err(|e| fail("MSHARE_ATTACH", e))?;
        let owner = 2_000_000 + self.id as u64;
        write_page(&window, 7, owner, self.ops);
        let second = dev.attach(&region, 0, GRANULE, true).map_err(|e| fail("MSHARE_ATTACH read-only", e))?;
        let page = read_stable(&second, 7);
        self.check(page.as_deref().and_then(check_page) == Some((owner, self.ops)), || {
            "a second window of an unnamed region saw other data".to_owned()
        })?;
        dev.detach(second).map_err(|e| fail("MSHARE_DETACH", e))?;
        dev.detach(window).map_err(|e| fail("MSHARE_DETACH", e))?;
        Ok(())
    }

    /// Runs until `deadline`; `Ok(true)` when it chose to exit early (to be replaced).
    fn run(&mut self, deadline: Instant, max_ops: u64) -> Result<bool, Failure> {
        while Instant::now() < deadline && self.ops < max_ops {
            self.ops += 1;
            let op = match self.rng.below(100) {
                0..=14 => 'a',
                15..=54 => 'w',
                55..=69 => 'c',
                70..=79 => 'd',
                80..=85 => 'f',
                86..=91 => 'r',
                92..=97 => 'v',
                _ => 'x',
            };
            if !self.ops_enabled.contains(op) {
                continue;
            }
            match op {
                'a' => self.attach()?,
                'w' => self.write_own()?,
                'c' => self.check_others()?,
                'd' => self.detach(),
                'f' => self.fork_check()?,
                'r' => self.region_cycle()?,
                'v' => self.device_cycle()?,
                _ => return Ok(true),
            }
        }
        Ok(false)
    }
}

/// Memory in KiB that is free or in the kernel's own caches that come and go with processes
/// and files (slab, kernel stacks): MemFree, plus the pages waiting on per-CPU free lists
/// (freed 2 MiB chunks go there first, and MemFree does not count them), plus Slab and
/// KernelStack. Memory a region lost would show as a drop in it.
fn free_kib() -> u64 {
    let per_cpu_pages: u64 = fs::read_to_string("/proc/zoneinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("count:")?.trim().parse::<u64>().ok())
        .sum();
    meminfo_kib("MemFree:") + per_cpu_pages * 4 + meminfo_kib("Slab:") + meminfo_kib("KernelStack:")
}

/// Starts worker `id`; it reports `ops checks exited_early` on `report`, or a failure line.
fn spawn(id: usize, generation: u64, seed: u64, deadline: Instant, max_ops: u64, report: &File) -> libc::pid_t {
    // SAFETY: fork; the worker only runs its loop, writes one line and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid != 0 {
        return pid;
    }
    let mut worker = Worker {
        id,
        rng: Rng::new(seed ^ (id as u64) << 20 ^ generation << 40),
        windows: Vec::new(),
        ops: 0,
        checks: 0,
        cycles: generation * 1000,
        ops_enabled: std::env::args().nth(4).unwrap_or_else(|| ALL_OPS.to_owned()),
    };
    let line = match worker.run(deadline, max_ops) {
        Ok(early) => format!("{id} {} {} {}\n", worker.ops, worker.checks, u8::from(early)),
        Err(why) => format!("FAIL {why}\n"),
    };
    let _ = (&*report).write_all(line.as_bytes());
    // SAFETY: leaving the worker.
    unsafe { libc::_exit(0) }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(procs), Some(seconds)) =
        (args.first().and_then(|p| p.parse::<usize>().ok()), args.get(1).and_then(|s| s.parse::<u64>().ok()))
    else {
        eprintln!("usage: mshare-stress PROCS SECONDS [SEED]");
        return ExitCode::from(2);
    };
    if procs == 0 || procs > SHARED_SIZE / PAGE {
        eprintln!("mshare-stress: PROCS must be 1 to {}", SHARED_SIZE / PAGE);
        return ExitCode::from(2);
    }
    let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0x6d73_6861_7265);
    println!("mshare-stress: {procs} processes for {seconds} s, seed {seed} (replay: mshare-stress {procs} {seconds} {seed})");
    let before = (SystemStats::read().ok(), meminfo_kib("PageTables:"), free_kib());
    for k in 0..SHARED_REGIONS {
        let made = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(shared_name(k))
            .and_then(|f| set_size(&f, SHARED_SIZE as u64).map(|()| f))
            .and_then(|f| create_mapping(&f, &MshareCreate::anonymous(0, SHARED_SIZE as u64)));
        if let Err(e) = made {
            eprintln!("mshare-stress: making {}: {e}", shared_name(k));
            return ExitCode::FAILURE;
        }
    }
    let (mut reports, report_w) = match pipe() {
        Ok(ends) => ends,
        Err(e) => {
            eprintln!("mshare-stress: pipe: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let max_ops = 2_000;
    let mut live = 0;
    let mut workers = std::collections::HashMap::new();
    for id in 0..procs {
        workers.insert(spawn(id, 0, seed, deadline, max_ops, &report_w), id);
        live += 1;
    }
    let (mut ops, mut checks, mut respawns, mut failures) = (0u64, 0u64, 0u64, Vec::new());
    let mut pending = String::new();
    let mut buf = [0u8; 4096];
    while live > 0 {
        // A worker that dies without reporting (a signal) must not hang the run: poll, and
        // reap between reads.
        let mut poll = libc::pollfd { fd: reports.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, 1000) } > 0;
        loop {
            let mut status = 0;
            // SAFETY: non-blocking wait for our own children.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            let clean = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            if let (Some(id), false) = (workers.remove(&pid), clean) {
                failures.push(format!("worker {id} died without reporting (status {status:#x})"));
                live -= 1;
            }
        }
        if !ready {
            continue;
        }
        let n = match reports.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            live -= 1;
            if let Some(why) = line.strip_prefix("FAIL ") {
                failures.push(why.trim().to_owned());
                continue;
            }
            let f: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            if f.len() != 4 {
                failures.push(format!("a worker's report is garbled: {line:?}"));
                continue;
            }
            ops += f[1];
            checks += f[2];
            if f[3] == 1 && Instant::now() < deadline {
                respawns += 1;
                workers.insert(spawn(f[0] as usize, respawns, seed, deadline, max_ops, &report_w), f[0] as usize);
                live += 1;
            }
        }
    }
    // SAFETY: waiting for every remaining child.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0 {}
    let elapsed = started.elapsed().as_secs_f64();
    for k in 0..SHARED_REGIONS {
        if let Err(e) = fs::remove_file(shared_name(k)) {
            failures.push(format!("removing {}: {e}", shared_name(k)));
        }
    }
    let leftovers: Vec<String> = fs::read_dir(MOUNT)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("stress-"))
        .collect();
    if !leftovers.is_empty() {
        failures.push(format!("regions left behind: {leftovers:?}"));
    }
    // Page tables and stacks of exited processes go after an RCU grace period: wait for them
    // (up to 30 s: under make test, five emulated VMs share two cores and it takes longer).
    let mut after = (SystemStats::read().ok(), meminfo_kib("PageTables:"), free_kib());
    for _ in 0..300 {
        if after.1 <= before.1 + 64 && after.2 + FREE_TOLERANCE_KIB >= before.2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        after = (SystemStats::read().ok(), meminfo_kib("PageTables:"), free_kib());
    }
    match (&before.0, &after.0) {
        (Some(b), Some(a))
            if (a.regions, a.memory_bytes, a.windows, a.shared_tables, a.shared_pmd_tables)
                == (b.regions, b.memory_bytes, b.windows, b.shared_tables, b.shared_pmd_tables) => {}
        (b, a) => failures.push(format!("module counters did not return: before {b:?}, after {a:?}")),
    }
    let pagetables_growth = after.1 as i64 - before.1 as i64;
    let memfree_drop = before.2 as i64 - after.2 as i64;
    if pagetables_growth > 64 {
        failures.push(format!("PageTables grew by {pagetables_growth} KiB (tolerance 64 KiB)"));
    }
    // Coarse: the module's memory_bytes above is the exact check on region memory; this one
    // catches memory lost per operation (a 2 MiB chunk per region cycle would be hundreds
    // of MiB), not one stray allocation.
    if memfree_drop > FREE_TOLERANCE_KIB as i64 {
        failures.push(format!("free memory fell by {memfree_drop} KiB (tolerance {FREE_TOLERANCE_KIB} KiB)"));
    }
    // How often a whole-GiB window linked a shared PMD table (mode B), since the module loaded.
    let pmd_links = after.0.as_ref().map_or(0, |s| s.pmd_table_links);
    println!(
        "STRESS procs={procs} seconds={elapsed:.1} seed={seed} ops={ops} checks={checks} respawns={respawns} \
         pagetables_growth_kib={pagetables_growth} free_drop_kib={memfree_drop} pmd_table_links={pmd_links} failures={}",
        failures.len()
    );
    for why in &failures {
        println!("mshare-stress: FAILED: {why}");
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
