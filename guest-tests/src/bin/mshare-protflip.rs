//! mshare-protflip: write faults racing SET_PROT flips, then an exact check that nothing
//! can write once the last read-only SET_PROT has returned (mode B only).
//!
//! ```text
//! mshare-protflip PROCS THREADS SECONDS [SEED]
//! ```
//! The parent makes a region of two granules and starts PROCS processes of THREADS
//! threads each (odd processes map a whole GiB, sharing the region's PMD table, the others
//! the region's size, sharing its PTE tables). Every thread writes 8 bytes at a random
//! page through the kernel (`pread` into the window: the write fault is the core's, with
//! an EFAULT instead of a signal when it is refused) and reads another page directly (which
//! relinks the tables SET_PROT unlinked). Meanwhile the parent flips the region read-write
//! and read-only as fast as it can for SECONDS (and at least 200 times), ending read-only.
//! From then on:
//! - the region's contents, copied right after the last flip, must never change;
//! - every write of every thread (they go on for a second) must be refused;
//! - a process forked then, linking the tables anew, must be refused a write to each page.
//!
//! A writable entry left in a shared table (what a driver's page_mkwrite returning 0 let
//! the core do) breaks all three. Prints `PROTFLIP ...`; exit 0 if all held, 77 if page
//! tables are not shared (mode C has no SET_PROT).

use guest_tests::memfd;
use guest_tests::msharefs::{create_mapping, set_prot, set_size, MshareCreate, SystemStats, MOUNT};
use guest_tests::process::{spawn_child, wait_child};
use guest_tests::rng::Rng;
use mshare_uapi::Window;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const GRANULE: usize = 2 << 20;
const PAGE: usize = 4096;
const REGION_SIZE: usize = 2 * GRANULE;
const GIB: usize = 1 << 30;
const MAX_THREADS: usize = 256;
/// The fewest flips a run makes, however long they take: on a machine busy with something
/// else, SECONDS alone gave 96, too few for the race to mean anything.
const MIN_FLIPS: u64 = 200;
/// How long the writers go on after the last read-only flip.
const TAIL: Duration = Duration::from_secs(1);

/// Where the writers are (0: the parent is flipping): after the last read-only flip, told
/// to stop.
const FINAL: u32 = 1;
const STOP: u32 = 2;

/// What the parent and every writer thread share (a MAP_SHARED anonymous page, made
/// before the fork).
#[repr(C)]
struct Control {
    phase: AtomicU32,
    /// Writer threads running (each maps its window before the flips begin: a read-write
    /// mapping of a read-only region is refused).
    ready: AtomicU64,
    /// Writes that landed, in total.
    written: AtomicU64,
    /// Writes refused with EFAULT.
    refused: AtomicU64,
    /// Writes that landed after the thread saw `FINAL`: must stay 0.
    written_after_final: AtomicU64,
    /// Errors other than EFAULT (must stay 0).
    odd_errors: AtomicU64,
    /// Threads that saw `FINAL` and wrote at least once after it.
    final_writers: AtomicU64,
}

/// The shared control page, mapped before any fork.
struct SharedControl(*mut Control);

// SAFETY: the page is only reached through the atomics in `Control`.
unsafe impl Send for SharedControl {}
// SAFETY: as above.
unsafe impl Sync for SharedControl {}

impl SharedControl {
    fn new() -> std::io::Result<Self> {
        // SAFETY: a fresh anonymous shared mapping of one page, zeroed: every atomic 0.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if page == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self(page.cast()))
    }

    fn get(&self) -> &Control {
        // SAFETY: mapped in `new` for the life of the process (never unmapped), zeroed
        // atomics are valid.
        unsafe { &*self.0 }
    }
}

/// Writes 8 bytes from `source` into `target` through the kernel: `Ok(true)` if they
/// landed, `Ok(false)` if the write fault was refused (EFAULT).
fn kernel_write(source: &File, target: *mut u8, seed: u64) -> std::io::Result<bool> {
    let from = (seed % (PAGE as u64 / 8)) * 8;
    // SAFETY: `target` is inside a live window with 8 bytes after it; the kernel checks
    // the access itself and answers EFAULT where it may not write.
    let n = unsafe { libc::pread(source.as_raw_fd(), target.cast(), 8, from as libc::off_t) };
    match n {
        8 => Ok(true),
        _ => {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EFAULT) {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

fn writer_thread(control: &Control, window: *mut u8, source: &File, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut wrote_after_final = false;
    control.ready.fetch_add(1, Ordering::Release);
    loop {
        let phase = control.phase.load(Ordering::Acquire);
        if phase == STOP {
            break;
        }
        let page = rng.below((REGION_SIZE / PAGE) as u64) as usize;
        let at = page * PAGE + rng.below((PAGE / 8) as u64) as usize * 8;
        // SAFETY: `at` + 8 is inside the region, which the window maps from its start.
        match kernel_write(source, unsafe { window.add(at) }, rng.next_u64()) {
            Ok(true) => {
                control.written.fetch_add(1, Ordering::Relaxed);
                if phase == FINAL {
                    control.written_after_final.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(false) => {
                control.refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                control.odd_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if phase == FINAL && !wrote_after_final {
            wrote_after_final = true;
            control.final_writers.fetch_add(1, Ordering::Relaxed);
        }
        let other = rng.below((REGION_SIZE / PAGE) as u64) as usize * PAGE;
        // SAFETY: inside the region; reading is allowed in either protection.
        unsafe { std::ptr::read_volatile(window.add(other)) };
    }
}

/// One writer process: THREADS threads over one window until told to stop.
fn writer_process(path: &str, index: usize, threads: usize, control: &SharedControl, seed: u64) -> i32 {
    let Ok(file) = OpenOptions::new().read(true).write(true).open(path) else { return 2 };
    let len = if index % 2 == 1 { GIB } else { REGION_SIZE };
    let Ok(window) = Window::map(&file, len, 0, false) else { return 3 };
    let Ok(source) = random_source(seed ^ index as u64) else { return 4 };
    let base = window.as_ptr() as usize;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (control, source) = (control.get(), &source);
            let seed = seed ^ (index as u64) << 16 ^ (t as u64) << 32;
            scope.spawn(move || writer_thread(control, base as *mut u8, source, seed));
        }
    });
    0
}

/// A memfd of one page of random bytes, what the writers copy from.
fn random_source(seed: u64) -> std::io::Result<File> {
    let mut file = memfd(c"protflip-source", 0)?;
    let mut rng = Rng::new(seed);
    let bytes: Vec<u8> = (0..PAGE / 8).flat_map(|_| rng.next_u64().to_ne_bytes()).collect();
    file.write_all(&bytes)?;
    Ok(file)
}

/// In a process forked after the last flip, which links the shared tables anew through
/// the window it inherits (mapped read-write before the flips): how many of the region's
/// pages it could write (must be 0).
fn fresh_process_writes(window: &Window) -> i32 {
    let Ok(source) = random_source(1) else { return 200 };
    let mut landed = 0;
    for page in 0..REGION_SIZE / PAGE {
        // SAFETY: inside the window.
        match kernel_write(&source, unsafe { window.as_ptr().add(page * PAGE) }, page as u64) {
            Ok(true) => landed += 1,
            Ok(false) => {}
            Err(_) => return 201,
        }
    }
    landed.min(199)
}

struct Args {
    procs: usize,
    threads: usize,
    seconds: u64,
    seed: u64,
}

fn parse_args() -> Option<Args> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize| args.get(i).and_then(|s| s.parse::<u64>().ok());
    let parsed = Args {
        procs: number(0)? as usize,
        threads: number(1)? as usize,
        seconds: number(2)?,
        seed: number(3).unwrap_or(0x7072_6f74),
    };
    (parsed.procs >= 1 && (1..=MAX_THREADS).contains(&parsed.threads)).then_some(parsed)
}

fn main() -> ExitCode {
    let Some(args) = parse_args() else {
        eprintln!("usage: mshare-protflip PROCS THREADS SECONDS [SEED] (THREADS 1 to {MAX_THREADS})");
        return ExitCode::from(2);
    };
    match SystemStats::read() {
        Ok(stats) if stats.shares_tables() => {}
        Ok(_) => {
            println!("PROTFLIP SKIP: page tables are not shared (mode C has no SET_PROT)");
            return ExitCode::from(77);
        }
        Err(e) => {
            eprintln!("mshare-protflip: reading {MOUNT}/mshare_stats: {e} (is the module loaded?)");
            return ExitCode::FAILURE;
        }
    }
    match run(&args) {
        Ok(failures) if failures.is_empty() => ExitCode::SUCCESS,
        Ok(failures) => {
            for why in failures {
                println!("mshare-protflip: FAILED: {why}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("mshare-protflip: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<Vec<String>, String> {
    let Args { procs, threads, seconds, seed } = *args;
    println!(
        "mshare-protflip: {procs} processes x {threads} threads for {seconds} s, seed {seed} \
         (replay: mshare-protflip {procs} {threads} {seconds} {seed})"
    );
    let path = format!("{MOUNT}/protflip");
    let fail = |what: &'static str| {
        let path = path.clone();
        move |e: std::io::Error| format!("{path}: {what}: {e}")
    };
    let file =
        OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path).map_err(fail("create"))?;
    set_size(&file, REGION_SIZE as u64).map_err(fail("SET_SIZE"))?;
    create_mapping(&file, &MshareCreate::anonymous(0, REGION_SIZE as u64)).map_err(fail("CREATE_MAPPING"))?;
    let window = Window::map(&file, REGION_SIZE, 0, false).map_err(fail("mmap"))?;
    let control = SharedControl::new().map_err(|e| format!("the control page: {e}"))?;
    let mut pids = Vec::new();
    for index in 0..procs {
        let pid = spawn_child(|| writer_process(&path, index, threads, &control, seed))
            .ok_or_else(|| format!("fork: {}", std::io::Error::last_os_error()))?;
        pids.push(pid);
    }
    let c = control.get();
    let writers = (procs * threads) as u64;
    let waiting = Instant::now();
    while c.ready.load(Ordering::Acquire) < writers {
        if waiting.elapsed() > Duration::from_secs(60) {
            c.phase.store(STOP, Ordering::Release);
            return Err(format!(
                "only {} of {writers} writer threads started in 60 s",
                c.ready.load(Ordering::Acquire)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut rng = Rng::new(seed);
    let mut flips = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) || flips < MIN_FLIPS {
        set_prot(&file, libc::PROT_READ | libc::PROT_WRITE).map_err(fail("SET_PROT read-write"))?;
        std::thread::sleep(Duration::from_micros(rng.below(200)));
        set_prot(&file, libc::PROT_READ).map_err(fail("SET_PROT read-only"))?;
        std::thread::sleep(Duration::from_micros(rng.below(200)));
        flips += 2;
    }
    // The region is read-only from here: its contents are final.
    let mut frozen = vec![0u8; REGION_SIZE];
    window.read(0, &mut frozen);
    let before_tail = (c.written.load(Ordering::Relaxed), c.refused.load(Ordering::Relaxed));
    c.phase.store(FINAL, Ordering::Release);
    std::thread::sleep(TAIL);
    let fresh = spawn_child(|| fresh_process_writes(&window)).map_or(255, wait_child);
    c.phase.store(STOP, Ordering::Release);
    let statuses: Vec<i32> = pids.into_iter().map(wait_child).collect();
    let mut now = vec![0u8; REGION_SIZE];
    window.read(0, &mut now);
    let changed_pages = frozen.chunks(PAGE).zip(now.chunks(PAGE)).filter(|(before, after)| before != after).count();
    drop(window);
    let removed = fs::remove_file(&path);

    let written = c.written.load(Ordering::Relaxed);
    let refused = c.refused.load(Ordering::Relaxed);
    let after_final = c.written_after_final.load(Ordering::Relaxed);
    let final_writers = c.final_writers.load(Ordering::Relaxed);
    let odd = c.odd_errors.load(Ordering::Relaxed);
    println!(
        "PROTFLIP procs={procs} threads={threads} seconds={seconds} seed={seed} flips={flips} \
         written={written} refused={refused} written_after_final={after_final} changed_pages={changed_pages} \
         final_writers={final_writers} tail_refused={} fresh_process_writes={fresh} odd_errors={odd}",
        refused - before_tail.1
    );
    let mut failures = Vec::new();
    let mut expect = |ok: bool, why: String| {
        if !ok {
            failures.push(why);
        }
    };
    expect(after_final == 0, format!("{after_final} writes landed after the last read-only SET_PROT"));
    expect(changed_pages == 0, format!("{changed_pages} pages changed after the last read-only SET_PROT"));
    expect(
        fresh == 0,
        format!("a process forked after the last flip wrote {fresh} pages (or failed: status 200 and up)"),
    );
    expect(odd == 0, format!("{odd} writes failed with an errno other than EFAULT"));
    expect(
        final_writers == writers,
        format!("only {final_writers} of {writers} threads tried to write after the last flip"),
    );
    expect(before_tail.0 > 0 && before_tail.1 > 0, format!("the flips never raced both outcomes: {before_tail:?}"));
    for (index, status) in statuses.into_iter().enumerate() {
        expect(status == 0, format!("writer process {index} ended with status {status}"));
    }
    expect(removed.is_ok(), format!("removing {path}: {removed:?}"));
    Ok(failures)
}
