//! mshare-lmdb: an LMDB database (the real library, lmdb-master-sys through heed) whose
//! data file is an msharefs region, so every process that opens it maps the one region.
//!
//! ```text
//! mshare-lmdb load REGION FILE                  FILE's "key value" lines (tab or space) into REGION
//! mshare-lmdb get REGION KEY [--snapshot]       print KEY's value
//! mshare-lmdb bench REGION READERS SECONDS [--snapshot] [--seed N]
//!                                               READERS processes reading while a writer
//!                                               commits; one LMDB line of figures
//! ```
//! A bench reader draws keys with a Zipfian distribution (theta 0.99, hot keys scattered
//! over the key space); 90 % of its operations are gets, 10 % short cursor scans (10
//! entries from the drawn key); every value is checked against its key and the writer's
//! generation must never go back. The figures: gets, scans, operations per second over the
//! measured time (the slowest reader's), p50 (the readers' median) and p99 (the worst
//! reader's) per operation in microseconds ("n/a" when the clock is coarser than 1 us, as a
//! guest's on the jiffies is under QEMU TCG), the clock's resolution. `--seed` varies the
//! draws (give each VM its own).
//! `--snapshot` opens the database read-only and without a lock file (MDB_RDONLY |
//! MDB_NOLOCK), as a VM does with a region another VM loaded and the VMM attached to it
//! read-only: nothing may write then (LMDB's lock table cannot span VMs, so a writer in
//! one VM and readers without locks in another would read pages the writer is reusing),
//! and the bench runs readers only.
//! REGION is a region under /sys/fs/mshare made with memory for all of it (`mshare create
//! db 64M`); LMDB maps all of it (its map size is the region's size). The lock file lives
//! in /tmp: LMDB sizes it with ftruncate to a few KiB, which a region (whole 2 MiB granules)
//! refuses; the environment is /tmp/mshare-lmdb-REGION, whose data.mdb is a symlink to the
//! region.
//! `load` builds the database in a scratch file and copies it into the region with
//! write(2) (a fresh region holds zeros, which LMDB would not take for a database).
//! Exit status: 0 done, 1 failed (the error says why), 2 bad usage.

use guest_tests::msharefs::MOUNT;
use guest_tests::process::{spawn_child, wait_child};
use guest_tests::rng::Rng;
use guest_tests::workload::{clock_resolution_ns, scatter, Latencies, Zipf};
use heed::types::Str;
use heed::{CompactionOption, Database, Env, EnvFlags, EnvOpenOptions};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: mshare-lmdb load REGION FILE | get REGION KEY [--snapshot] | \
                     bench REGION READERS SECONDS [--snapshot] [--seed N]";
/// The key the bench's writer bumps in every commit.
const GENERATION: &str = "mshare-lmdb:generation";
/// The bench's key skew (YCSB's).
const THETA: f64 = 0.99;
/// Entries a bench scan reads.
const SCAN: usize = 10;
/// One operation in this many is a scan.
const SCAN_EVERY: u64 = 10;

/// What one bench reader did.
struct ReaderFigures {
    gets: u64,
    scans: u64,
    newest: u64,
    bad: u64,
    p50_ns: u64,
    p99_ns: u64,
    elapsed_ns: u64,
}

type Error = Box<dyn std::error::Error>;

/// The LMDB environment over region `name`: /tmp/mshare-lmdb-NAME with data.mdb -> the region.
fn env_dir(name: &str) -> Result<PathBuf, Error> {
    let region = Path::new(MOUNT).join(name);
    let size = fs::metadata(&region)
        .map_err(|e| format!("{}: {e} (make it with: mshare create {name} SIZE)", region.display()))?
        .len();
    if size == 0 {
        return Err(
            format!("{}: the region has no size (make it with: mshare create {name} SIZE)", region.display()).into()
        );
    }
    let dir = PathBuf::from(format!("/tmp/mshare-lmdb-{}", name.replace('/', "_")));
    fs::create_dir_all(&dir)?;
    let data = dir.join("data.mdb");
    if fs::read_link(&data).ok().as_deref() != Some(region.as_path()) {
        let _ = fs::remove_file(&data);
        std::os::unix::fs::symlink(&region, &data)?;
    }
    Ok(dir)
}

/// Opens the environment of region `name`, mapping all of the region; a `snapshot`
/// read-only and without the lock file.
fn open(name: &str, snapshot: bool) -> Result<(Env, Database<Str, Str>), Error> {
    let dir = env_dir(name)?;
    let size = fs::metadata(dir.join("data.mdb"))?.len() as usize;
    let mut options = EnvOpenOptions::new();
    options.map_size(size).max_readers(126);
    let flags = if snapshot { EnvFlags::READ_ONLY | EnvFlags::NO_LOCK } else { EnvFlags::WRITE_MAP };
    // SAFETY: WRITE_MAP writes through the shared mapping of the region, which is what the
    // region is for; a snapshot is only read, by readers that take no locks because nothing
    // writes it (see the module's documentation).
    unsafe { options.flags(flags) };
    // SAFETY: the environment is opened once per process (each bench process opens its own
    // after fork), as LMDB requires.
    let env = unsafe { options.open(&dir)? };
    let rtxn = env.read_txn()?;
    let db = env.open_database(&rtxn, None)?.ok_or("the region holds no database (run mshare-lmdb load first)")?;
    drop(rtxn);
    Ok((env, db))
}

fn load(name: &str, input: &Path) -> Result<String, Error> {
    let region = Path::new(MOUNT).join(name);
    let size = fs::metadata(&region)?.len() as usize;
    let scratch = PathBuf::from(format!("/tmp/mshare-lmdb-load-{}", std::process::id()));
    fs::create_dir_all(&scratch)?;
    let mut options = EnvOpenOptions::new();
    options.map_size(size);
    // SAFETY: a fresh environment in a scratch directory, opened once.
    let env = unsafe { options.open(&scratch)? };
    let mut wtxn = env.write_txn()?;
    let db: Database<Str, Str> = env.create_database(&mut wtxn, None)?;
    let mut count = 0u64;
    for line in BufReader::new(File::open(input)?).lines() {
        let line = line?;
        let Some((key, value)) = line.split_once(['\t', ' ']) else { continue };
        db.put(&mut wtxn, key, value)?;
        count += 1;
    }
    db.put(&mut wtxn, GENERATION, "0")?;
    wtxn.commit()?;
    let mut target = OpenOptions::new().write(true).open(&region)?;
    env.copy_to_file(&mut target, CompactionOption::Enabled)?;
    drop(env);
    fs::remove_dir_all(&scratch)?;
    // The region's old environment (if any) describes another database: start afresh.
    let _ = fs::remove_dir_all(format!("/tmp/mshare-lmdb-{}", name.replace('/', "_")));
    let (env, db) = open(name, false)?;
    let rtxn = env.read_txn()?;
    let entries = db.len(&rtxn)?;
    Ok(format!(
        "mshare-lmdb: loaded {count} pairs into {} ({entries} entries, map {} MiB)",
        region.display(),
        size >> 20
    ))
}

fn get(name: &str, key: &str, snapshot: bool) -> Result<Option<String>, Error> {
    let (env, db) = open(name, snapshot)?;
    let rtxn = env.read_txn()?;
    Ok(db.get(&rtxn, key)?.map(str::to_owned))
}

/// Whether `value` is what the load or the writer put under `key` ("kN" -> "vN..."). The
/// generation key is the writer's.
fn value_matches(key: &str, value: &str) -> bool {
    key == GENERATION
        || key.strip_prefix('k').is_some_and(|n| value.strip_prefix('v').is_some_and(|v| v.starts_with(n)))
}

/// A reader process: Zipfian gets and scans for `seconds` (see the module's
/// documentation), each value checked, the writer's generation never going back.
fn reader(name: &str, seed: u64, seconds: u64, snapshot: bool) -> Result<ReaderFigures, Error> {
    let (env, db) = open(name, snapshot)?;
    let mut rng = Rng::new(seed);
    let keys = {
        let rtxn = env.read_txn()?;
        (db.len(&rtxn)?.saturating_sub(1) as usize).max(2)
    };
    let zipf = Zipf::new(keys, THETA);
    let mut latencies = Latencies::new();
    let mut f = ReaderFigures { gets: 0, scans: 0, newest: 0, bad: 0, p50_ns: 0, p99_ns: 0, elapsed_ns: 0 };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        let rtxn = env.read_txn()?;
        let generation: u64 = db.get(&rtxn, GENERATION)?.and_then(|g| g.parse().ok()).unwrap_or(u64::MAX);
        if generation == u64::MAX || generation < f.newest {
            f.bad += 1;
        }
        f.newest = f.newest.max(generation.min(u64::MAX - 1));
        for _ in 0..64 {
            let key = format!("k{}", scatter(zipf.sample(&mut rng), keys) + 1);
            let start = Instant::now();
            if rng.below(SCAN_EVERY) == 0 {
                let mut seen = 0;
                for entry in db.range(&rtxn, &(Bound::Included(key.as_str()), Bound::Unbounded))?.take(SCAN) {
                    let (k, v) = entry?;
                    f.bad += u64::from(!value_matches(k, v));
                    seen += 1;
                }
                // A scan from an existing key finds it at least.
                f.bad += u64::from(seen == 0);
                f.scans += 1;
            } else {
                match db.get(&rtxn, &key)? {
                    Some(value) if value_matches(&key, value) => {}
                    _ => f.bad += 1,
                }
                f.gets += 1;
            }
            latencies.record(start.elapsed().as_nanos());
        }
    }
    f.elapsed_ns = started.elapsed().as_nanos() as u64;
    (f.p50_ns, f.p99_ns) = (latencies.quantile(0.5), latencies.quantile(0.99));
    Ok(f)
}

/// The writer: commits as fast as it can for `seconds`, each commit bumping the
/// generation and rewriting one key's value. Returns the commits.
fn writer(name: &str, seconds: u64) -> Result<u64, Error> {
    let (env, db) = open(name, false)?;
    let keys = {
        let rtxn = env.read_txn()?;
        db.len(&rtxn)?.saturating_sub(1).max(1)
    };
    let mut commits = 0u64;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        let mut wtxn = env.write_txn()?;
        let generation: u64 = db.get(&wtxn, GENERATION)?.and_then(|g| g.parse().ok()).unwrap_or(0) + 1;
        let key = format!("k{}", generation % keys + 1);
        db.put(&mut wtxn, &key, &format!("v{}-{generation}", &key[1..]))?;
        db.put(&mut wtxn, GENERATION, &generation.to_string())?;
        wtxn.commit()?;
        commits += 1;
    }
    Ok(commits)
}

/// Runs `work` in a child process that writes its figures to `out` and exits 0 (1 on error).
fn child(out: PathBuf, work: impl FnOnce() -> Result<String, Error>) -> Option<libc::pid_t> {
    spawn_child(move || match work() {
        Ok(figures) => i32::from(fs::write(&out, figures).is_err()),
        Err(e) => {
            eprintln!("mshare-lmdb: {e}");
            1
        }
    })
}

fn bench(name: &str, readers: u64, seconds: u64, snapshot: bool, seed: u64) -> Result<String, Error> {
    env_dir(name)?;
    let dir = PathBuf::from(format!("/tmp/mshare-lmdb-bench-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let mut pids = Vec::new();
    for i in 0..readers {
        let out = dir.join(format!("reader{i}"));
        let work = move || {
            reader(name, seed ^ (0x6c6d_6462 + i).rotate_left(17), seconds, snapshot).map(|f| {
                format!("{} {} {} {} {} {} {}", f.gets, f.scans, f.newest, f.bad, f.p50_ns, f.p99_ns, f.elapsed_ns)
            })
        };
        pids.push(child(out, work).ok_or("fork failed")?);
    }
    if !snapshot {
        let work = move || writer(name, seconds).map(|c| c.to_string());
        pids.push(child(dir.join("writer"), work).ok_or("fork failed")?);
    }
    let failed = pids.iter().map(|pid| wait_child(*pid)).filter(|status| *status != 0).count();
    if failed > 0 {
        return Err(format!("{failed} of {} bench processes failed (see above)", pids.len()).into());
    }
    let read = |file: &str| fs::read_to_string(dir.join(file));
    let commits: u64 = if snapshot { 0 } else { read("writer")?.trim().parse()? };
    let (mut gets, mut scans, mut newest_min, mut bad, mut slowest_ns) = (0u64, 0u64, u64::MAX, 0u64, 0u64);
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for i in 0..readers {
        let figures: Vec<u64> =
            read(&format!("reader{i}"))?.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        let [g, s, newest, b, p50, p99, elapsed] = figures[..] else {
            return Err(format!("reader {i} reported {figures:?}").into());
        };
        gets += g;
        scans += s;
        newest_min = newest_min.min(newest);
        bad += b;
        p50s.push(p50);
        p99s.push(p99);
        slowest_ns = slowest_ns.max(elapsed);
    }
    fs::remove_dir_all(&dir)?;
    p50s.sort_unstable();
    // Per-operation times need a clock finer than an operation: under QEMU TCG the guest's
    // is the jiffies (10 ms), and the figures say so rather than print zeros.
    let resolution = clock_resolution_ns();
    let micros = |ns: u64| if resolution <= 1000 { format!("{:.1}", ns as f64 / 1000.0) } else { "n/a".to_owned() };
    let (p50_us, p99_us) = (micros(p50s[p50s.len() / 2]), micros(p99s.iter().copied().max().unwrap_or(0)));
    let measured_s = slowest_ns as f64 / 1e9;
    Ok(format!(
        "LMDB region={name} snapshot={snapshot} readers={readers} seconds={seconds} seed={seed} gets={gets} scans={scans} \
         ops_per_s={:.0} p50_us={p50_us} p99_us={p99_us} clock_resolution_ns={resolution} measured_s={measured_s:.2} \
         commits={commits} newest_generation_seen_by_every_reader={newest_min} bad={bad}",
        (gets + scans) as f64 / measured_s.max(1e-9)
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let snapshot = args.iter().any(|a| a == "--snapshot");
    let seed = match args.iter().position(|a| a == "--seed").map(|i| args.get(i + 1).map(|s| s.parse::<u64>())) {
        None => 1,
        Some(Some(Ok(seed))) => seed,
        Some(_) => {
            eprintln!("mshare-lmdb: --seed takes a number\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let seed_value = args.iter().position(|a| a == "--seed").map(|i| i + 1);
    let words: Vec<&str> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| *a != "--snapshot" && *a != "--seed" && Some(*i) != seed_value)
        .map(|(_, a)| a.as_str())
        .collect();
    let result = match words.as_slice() {
        ["load", region, file] if !snapshot => load(region, Path::new(file)),
        ["get", region, key] => match get(region, key, snapshot) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(format!("no key '{key}' in {region}").into()),
            Err(e) => Err(e),
        },
        ["bench", region, readers, seconds] => match (readers.parse(), seconds.parse()) {
            (Ok(readers), Ok(seconds)) if readers > 0 && seconds > 0 => bench(region, readers, seconds, snapshot, seed),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mshare-lmdb: {e}");
            ExitCode::FAILURE
        }
    }
}
