//! mshare-lmdb: an LMDB database (the real library, lmdb-master-sys through heed) whose
//! data file is an msharefs region, so every process that opens it maps the one region;
//! or, for comparison, an ordinary file (a private copy on tmpfs).
//!
//! ```text
//! mshare-lmdb load DB FILE                  FILE's "key value" lines (tab or space) into DB
//! mshare-lmdb load DB --generate PAIRS      PAIRS generated pairs: kN -> "vN-" and filler
//!                                           to 100 bytes, N from 1 (fast: in key order)
//! mshare-lmdb get DB KEY [--snapshot]       print KEY's value
//! mshare-lmdb copy DB PATH                  copy DB's used pages to the file PATH (a
//!                                           private copy), timed
//! mshare-lmdb storm DB PROCESSES [--snapshot]
//!                                           connect storm: PROCESSES fresh processes open
//!                                           DB and read one key; time until all are ready
//! mshare-lmdb bench DB READERS SECONDS [--snapshot | --hold-snapshot] [--seed N]
//!                                           READERS processes reading (while a writer
//!                                           commits, unless --snapshot); one LMDB line;
//!                                           --hold-snapshot: one more process holds a
//!                                           read transaction from before the writer's
//!                                           first commit until its deadline
//! mshare-lmdb serve DB SOCKET WORKERS [--snapshot]
//!                                           a server: WORKERS pre-forked processes with
//!                                           DB open answer `get KEY` and `scan KEY N`
//!                                           lines on the Unix socket SOCKET, until
//!                                           SIGTERM or SIGINT
//! mshare-lmdb ask SOCKET (get KEY | scan KEY N)
//!                                           one request to a server; prints the reply
//!                                           (`VALUE v`, `NONE`, `ENTRY k v`... `END`)
//! mshare-lmdb publish HEADER SLOT0 SLOT1 (FILE | --generate PAIRS)
//!                                           build the next snapshot generation into the
//!                                           slot readers are not using, then switch them
//! mshare-lmdb follow HEADER SLOT0 SLOT1 READERS SECONDS [--seed N]
//!                                           READERS processes reading whatever generation
//!                                           is newest, switching as it is published
//! ```
//! DB is a region under /sys/fs/mshare (`db`, `ivshmem/<device>`) made with memory for all
//! of it (`mshare create db 64M`), or the absolute path of a file holding a database (what
//! `copy` makes). LMDB maps all of a region (its map size is the region's size). The lock
//! file lives in /tmp: LMDB sizes it with ftruncate to a few KiB, which a region (whole
//! 2 MiB granules) refuses; the environment is /tmp/mshare-lmdb-DB, whose data.mdb is a
//! symlink to the database.
//!
//! A bench reader draws keys with a Zipfian distribution (theta 0.99, hot keys scattered
//! over the key space; keys are `k1`..`kN` as `--generate` and the tests make them); 90 %
//! of its operations are gets, 10 % short cursor scans (10 entries from the drawn key);
//! every value is checked against its key and the writer's generation must never go back.
//! The figures: gets, scans, operations per second over the measured time (from the
//! first reader's start to the last one's end), p50 (the readers' median) and p99 (the worst reader's) per operation in
//! microseconds ("n/a" when the clock steps by more than 10 us, as a guest's on the jiffies
//! does under QEMU TCG), the clock's observed step; `pagetables_kib`, the growth of the kernel's
//! page tables with every reader alive at the end of its run, and `pmd_mapped_kib`, how much
//! of the file memory then was mapped by 2 MiB entries (shmem THP, region folios); and
//! `minor_faults`, all bench processes' together. `--seed` varies the draws (give each VM
//! its own). A storm's line: `STORM db=.. processes=.. ms=.. pagetables_kib=.. minor_faults=..`.
//!
//! The bench's writer commits as fast as it can, but never lets the map's high-water mark
//! (the pages up to the last one LMDB has used) pass half the map: LMDB reuses a page a
//! commit freed only once every reader's snapshot is newer than that commit, so a reader
//! that holds an old snapshot (descheduled in its read transaction, or `--hold-snapshot`'s
//! process, the worst case) makes every commit take fresh pages, and the writer would
//! otherwise fill the map (MDB_MAP_FULL) at the speed of the machine. Before each commit it
//! checks that the mark plus what one commit can take (`COMMIT_RESERVE_PAGES`) stays
//! within half the map; if not it commits no more and stays idle until its deadline. The
//! LMDB line says how it ended: `commits=..`, `writer_stopped_at_high_water=0|1`,
//! `writer_high_water_pages=..` (the mark at its end), `writer_max_commit_pages=..` (the
//! most one commit raised it), `map_pages=..`, `hold_snapshot=true|false`. The holder, when
//! there is one, is counted in `pagetables_kib` and `minor_faults` like the readers. The
//! mark never goes down: a bench on a database whose writer stopped at it before commits
//! nothing (`commits=0 writer_stopped_at_high_water=1`); load it afresh.
//!
//! `--snapshot` opens the database read-only and without a lock file (MDB_RDONLY |
//! MDB_NOLOCK), as a VM does with a region another VM loaded and the VMM attached to it
//! read-only: nothing may write then (LMDB's lock table cannot span VMs, so a writer in
//! one VM and readers without locks in another would read pages the writer is reusing),
//! and the bench runs readers only.
//! `publish` and `follow` are how one writer updates a database that readers in other VMs
//! read without locks: two data regions take turns, a third, small region holds the
//! generation (`guest_tests::publication` has the protocol and its one assumption). A
//! generated snapshot's values carry their generation (`vN-gG-...`), and its generation
//! key is G: a follower checks that the snapshot it reads is the generation the header
//! named. Its line: `FOLLOW header=.. readers=.. gets=.. scans=.. first_generation=..
//! newest_generation_seen_by_every_reader=.. switches_of_every_reader=.. retried=.. bad=..`.
//! `load` builds the database in a scratch file and copies it into DB with write(2) (a
//! fresh region holds zeros, which LMDB would not take for a database).
//! Exit status: 0 done, 1 failed (the error says why), 2 bad usage.

use guest_tests::msharefs::MOUNT;
use guest_tests::process::Crew;
use guest_tests::publication::{self, Header};
use guest_tests::rng::Rng;
use guest_tests::workload::{clock_resolution_ns, monotonic_ns, scatter, Latencies, Zipf};
use guest_tests::{children_minor_faults, meminfo_kib, settled_pagetables_kib};
use heed::types::Str;
use heed::{CompactionOption, Database, Env, EnvFlags, EnvOpenOptions, PutFlags};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::ops::Bound;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: mshare-lmdb load DB (FILE | --generate PAIRS) | get DB KEY [--snapshot] | copy DB PATH | \
                     storm DB PROCESSES [--snapshot] | \
                     bench DB READERS SECONDS [--snapshot | --hold-snapshot] [--seed N] | \
                     publish HEADER SLOT0 SLOT1 (FILE | --generate PAIRS) | \
                     follow HEADER SLOT0 SLOT1 READERS SECONDS [--seed N] | \
                     serve DB SOCKET WORKERS [--snapshot] | ask SOCKET (get KEY | scan KEY N)";
/// The key the bench's writer bumps in every commit.
const GENERATION: &str = "mshare-lmdb:generation";
/// The bench's key skew (YCSB's).
const THETA: f64 = 0.99;
/// Entries a bench scan reads.
const SCAN: usize = 10;
/// One operation in this many is a scan.
const SCAN_EVERY: u64 = 10;
/// Bytes of a generated value.
const VALUE_BYTES: usize = 100;
/// Generated pairs per write transaction: LMDB caps a transaction's dirty pages.
const PAIRS_PER_COMMIT: u64 = 200_000;
/// The clock step up to which per-operation times are reported: a TSC clock under QEMU TCG
/// steps by about 1 us (the cost of reading it), a jiffies clock by 4-10 ms.
const CLOCK_FINE_NS: u64 = 10_000;
/// LMDB's page size on x86-64.
const LMDB_PAGE: u64 = 4096;
/// The most fresh pages (from the end of the map) one bench writer commit can take, with
/// room to spare: what [`may_commit`] keeps free below half the map. A commit rewrites two
/// keys of the main tree (depth d) and adds one record to the free-page tree (depth f).
/// Copy-on-write gives each key a new root-to-leaf path (d pages), and a leaf that grows
/// too full splits up to a new root (d + 1 more): 2 (2d + 1) pages. The free tree takes
/// this commit's record of freed pages (a path and a split: 2f + 1) and, when earlier
/// records were reused, loses them (a path and its rebalancing: 2f), the leftover being
/// written back into pages taken from the free list itself. So at most 4d + 4f + 3 pages.
/// Both trees' keys are short (at most 22 bytes: `k1`.., the generation key, 8-byte
/// transaction ids), so a branch page holds more than 100 entries (at least 30 however
/// sparse LMDB lets it get) and a tree in a map of up to 2^18 pages (1 GiB) is at most
/// 5 deep: 4 * 5 + 4 * 5 + 3 = 43 pages. 64 covers that. Measured (the tests below, behind
/// a held snapshot): 6 pages for the boot test's 20,000 short pairs (depth 2), 8 for 50,000
/// 100-byte values (depth 3); the bench reports its own (`writer_max_commit_pages`). Were
/// the bound ever wrong, the other half of the map still lies between the stopped writer
/// and MDB_MAP_FULL.
const COMMIT_RESERVE_PAGES: u64 = 64;

/// What one bench reader did.
struct ReaderFigures {
    gets: u64,
    scans: u64,
    newest: u64,
    bad: u64,
    p50_ns: u64,
    p99_ns: u64,
    /// When its timed loop began and ended, on the guest's monotonic clock.
    started_ns: u64,
    ended_ns: u64,
}

type Error = Box<dyn std::error::Error>;

/// The data file of `db`: a region's file under the msharefs mount, or an absolute path.
fn data_path(db: &str) -> PathBuf {
    if db.starts_with('/') {
        PathBuf::from(db)
    } else {
        Path::new(MOUNT).join(db)
    }
}

/// The LMDB environment of `db`: /tmp/mshare-lmdb-DB with data.mdb -> the data file.
fn env_dir(db: &str) -> Result<PathBuf, Error> {
    let data = data_path(db);
    let how = if db.starts_with('/') {
        "make it with: mshare-lmdb copy REGION PATH".to_owned()
    } else {
        format!("make it with: mshare create {db} SIZE")
    };
    let size = fs::metadata(&data).map_err(|e| format!("{}: {e} ({how})", data.display()))?.len();
    if size == 0 {
        return Err(format!("{}: it has no size ({how})", data.display()).into());
    }
    let dir = env_path(db);
    fs::create_dir_all(&dir)?;
    let link = dir.join("data.mdb");
    if fs::read_link(&link).ok().as_deref() != Some(data.as_path()) {
        // Made under a name of this process's and renamed into place: processes opening
        // the same database at once (followers switching slots) never see it missing.
        let fresh = dir.join(format!("data.mdb.{}", std::process::id()));
        let _ = fs::remove_file(&fresh);
        std::os::unix::fs::symlink(&data, &fresh)?;
        fs::rename(&fresh, &link)?;
    }
    Ok(dir)
}

/// Opens the environment of `db`, mapping all of its file; a `snapshot` read-only and
/// without the lock file.
fn open(db: &str, snapshot: bool) -> Result<(Env, Database<Str, Str>), Error> {
    let dir = env_dir(db)?;
    let size = fs::metadata(dir.join("data.mdb"))?.len() as usize;
    let mut options = EnvOpenOptions::new();
    options.map_size(size).max_readers(126);
    let flags = if snapshot { EnvFlags::READ_ONLY | EnvFlags::NO_LOCK } else { EnvFlags::WRITE_MAP };
    // SAFETY: WRITE_MAP writes through the shared mapping of the data file, which is what
    // a region is for; a snapshot is only read, by readers that take no locks because
    // nothing writes it (see the module's documentation).
    unsafe { options.flags(flags) };
    // SAFETY: the environment is opened once per process (each bench process opens its own
    // after fork, the parent having closed any it opened), as LMDB requires.
    let env = unsafe { options.open(&dir)? };
    let rtxn = env.read_txn()?;
    let database = env.open_database(&rtxn, None)?.ok_or("no database there (run mshare-lmdb load first)")?;
    drop(rtxn);
    Ok((env, database))
}

/// 1..=n in the order of their decimal strings ("1", "10", "100", "11", ...): LMDB's key
/// order for generated keys, so that they can be appended.
fn lexicographic(n: u64) -> impl Iterator<Item = u64> {
    let (mut current, mut left) = (1u64, n);
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        left -= 1;
        let out = current;
        if current.saturating_mul(10) <= n {
            current *= 10;
        } else {
            while current % 10 == 9 || current + 1 > n {
                current /= 10;
            }
            current += 1;
        }
        Some(out)
    })
}

/// Where `load` takes its pairs from.
enum Source<'a> {
    Lines(&'a Path),
    Generate(u64),
}

/// Builds a database of `source` in a scratch environment of `size` bytes, its generation
/// key set to `generation`, and writes it compacted into the data file `target`. Returns
/// the pairs put.
fn build_into(target: &Path, size: usize, source: Source<'_>, generation: u64) -> Result<u64, Error> {
    let scratch = PathBuf::from(format!("/tmp/mshare-lmdb-load-{}", std::process::id()));
    fs::create_dir_all(&scratch)?;
    let mut options = EnvOpenOptions::new();
    options.map_size(size);
    // SAFETY: a fresh environment in a scratch directory, opened once.
    let env = unsafe { options.open(&scratch)? };
    let mut wtxn = env.write_txn()?;
    let database: Database<Str, Str> = env.create_database(&mut wtxn, None)?;
    let mut count = 0u64;
    match source {
        Source::Lines(input) => {
            for line in BufReader::new(File::open(input)?).lines() {
                let line = line?;
                let Some((key, value)) = line.split_once(['\t', ' ']) else { continue };
                database.put(&mut wtxn, key, value)?;
                count += 1;
            }
        }
        Source::Generate(pairs) => {
            for n in lexicographic(pairs) {
                let head = format!("v{n}-g{generation}-");
                let value = format!("{head}{:x<width$}", "", width = VALUE_BYTES.saturating_sub(head.len()));
                database.put_with_flags(&mut wtxn, PutFlags::APPEND, &format!("k{n}"), &value)?;
                count += 1;
                if count.is_multiple_of(PAIRS_PER_COMMIT) {
                    wtxn.commit()?;
                    wtxn = env.write_txn()?;
                }
            }
        }
    }
    database.put(&mut wtxn, GENERATION, &generation.to_string())?;
    wtxn.commit()?;
    let mut out = OpenOptions::new().write(true).open(target)?;
    env.copy_to_file(&mut out, CompactionOption::Enabled)?;
    drop(env);
    fs::remove_dir_all(&scratch)?;
    Ok(count)
}

/// Where `db`'s environment (lock file, data link) lives.
fn env_path(db: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/mshare-lmdb-{}", db.trim_start_matches('/').replace('/', "_")))
}

fn load(db: &str, source: Source<'_>) -> Result<String, Error> {
    let target = data_path(db);
    let size = fs::metadata(&target)?.len() as usize;
    let count = build_into(&target, size, source, 0)?;
    // The old environment (if any) describes another database: start afresh.
    let _ = fs::remove_dir_all(env_path(db));
    let (env, database) = open(db, false)?;
    let rtxn = env.read_txn()?;
    let entries = database.len(&rtxn)?;
    let used = (env.info().last_page_number as u64 + 1) * LMDB_PAGE;
    Ok(format!(
        "mshare-lmdb: loaded {count} pairs into {} ({entries} entries, {} MiB used of a {} MiB map)",
        target.display(),
        used >> 20,
        size >> 20
    ))
}

/// Publishes the next generation of snapshots behind `header` (see
/// `guest_tests::publication`): built from `source` into the slot readers are not using.
fn publish(header: &str, slots: [&str; 2], source: Source<'_>) -> Result<String, Error> {
    let header = Header::open(&data_path(header), true).map_err(|e| format!("{header}: {e}"))?;
    header.initialize();
    let next = header.generation() + 1;
    header.announce(next);
    std::thread::sleep(publication::GRACE);
    let slot = slots[publication::slot(next)];
    let target = data_path(slot);
    let size = fs::metadata(&target).map_err(|e| format!("{}: {e}", target.display()))?.len() as usize;
    let started = Instant::now();
    let count = build_into(&target, size, source, next)?;
    header.publish(next);
    Ok(format!(
        "mshare-lmdb: published generation {next} ({count} pairs) in {slot} after {} ms",
        started.elapsed().as_millis()
    ))
}

fn get(db: &str, key: &str, snapshot: bool) -> Result<Option<String>, Error> {
    let (env, database) = open(db, snapshot)?;
    let rtxn = env.read_txn()?;
    Ok(database.get(&rtxn, key)?.map(str::to_owned))
}

/// Copies the pages `db` uses (not the rest of its region) to the new file `path`.
fn copy(db: &str, path: &Path) -> Result<String, Error> {
    let used = {
        let (env, _) = open(db, true)?;
        (env.info().last_page_number as u64 + 1) * LMDB_PAGE
    };
    let started = Instant::now();
    let mut from = File::open(data_path(db))?.take(used);
    let mut to =
        OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        to.write_all(&buffer[..n])?;
    }
    let copied = to.metadata()?.len();
    if copied != used {
        return Err(format!("{}: copied {copied} bytes of {used}", path.display()).into());
    }
    Ok(format!(
        "mshare-lmdb: copied {} MiB from {db} to {} in {} ms",
        used >> 20,
        path.display(),
        started.elapsed().as_millis()
    ))
}

/// Whether `value` is what the load or the writer put under `key`: "kN" -> "vN" or
/// "vN-...". The generation key is the writer's.
fn value_matches(key: &str, value: &str) -> bool {
    key == GENERATION
        || key.strip_prefix('k').is_some_and(|n| {
            value
                .strip_prefix('v')
                .and_then(|v| v.strip_prefix(n))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
        })
}

/// The keys `k1`..`kN` of `db` (its entries but the writer's generation).
fn key_count(db: &str, snapshot: bool) -> Result<usize, Error> {
    let (env, database) = open(db, snapshot)?;
    let rtxn = env.read_txn()?;
    Ok((database.len(&rtxn)?.saturating_sub(1) as usize).max(2))
}

/// A connect storm: `processes` fresh processes each open `db` and read one key, then wait
/// until all are ready; the figure is the time from the first fork to the last ready.
fn storm(db: &str, processes: u64, snapshot: bool) -> Result<String, Error> {
    env_dir(db)?;
    let (pagetables, faults) = (settled_pagetables_kib(), children_minor_faults());
    let mut crew = Crew::new()?;
    let started = Instant::now();
    for _ in 0..processes {
        // Each process keeps its environment (its mapping) open until the gate opens.
        crew.spawn(move || {
            let opened = open(db, snapshot).and_then(|(env, database)| {
                let rtxn = env.read_txn()?;
                database.get(&rtxn, "k1")?.ok_or_else(|| Error::from("k1 is missing"))?;
                drop(rtxn);
                Ok(env)
            });
            held("storm: ", opened)
        })?;
    }
    let gathered = crew.gather();
    let elapsed = started.elapsed();
    let grown = meminfo_kib("PageTables:").saturating_sub(pagetables);
    let finished = crew.finish();
    gathered?;
    finished?;
    Ok(format!(
        "STORM db={db} processes={processes} ms={} pagetables_kib={grown} minor_faults={}",
        elapsed.as_millis(),
        children_minor_faults() - faults
    ))
}

/// A reader process: Zipfian gets and scans for `seconds` (see the module's
/// documentation), each value checked, the writer's generation never going back.
/// Returns the environment too, for the reader to hold (mapped) until every reader is done.
fn reader(
    db: &str,
    zipf: &Zipf,
    keys: usize,
    seed: u64,
    seconds: u64,
    snapshot: bool,
) -> Result<(ReaderFigures, Env), Error> {
    let (env, database) = open(db, snapshot)?;
    let mut rng = Rng::new(seed);
    let mut latencies = Latencies::new();
    let mut f =
        ReaderFigures { gets: 0, scans: 0, newest: 0, bad: 0, p50_ns: 0, p99_ns: 0, started_ns: 0, ended_ns: 0 };
    f.started_ns = monotonic_ns();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        let rtxn = env.read_txn()?;
        let generation: u64 = database.get(&rtxn, GENERATION)?.and_then(|g| g.parse().ok()).unwrap_or(u64::MAX);
        if generation == u64::MAX || generation < f.newest {
            f.bad += 1;
        }
        f.newest = f.newest.max(generation.min(u64::MAX - 1));
        for _ in 0..64 {
            let key = format!("k{}", scatter(zipf.sample(&mut rng), keys) + 1);
            let start = Instant::now();
            if rng.below(SCAN_EVERY) == 0 {
                let mut seen = 0;
                for entry in database.range(&rtxn, &(Bound::Included(key.as_str()), Bound::Unbounded))?.take(SCAN) {
                    let (k, v) = entry?;
                    f.bad += u64::from(!value_matches(k, v));
                    seen += 1;
                }
                // A scan from an existing key finds it at least.
                f.bad += u64::from(seen == 0);
                f.scans += 1;
            } else {
                match database.get(&rtxn, &key)? {
                    Some(value) if value_matches(&key, value) => {}
                    _ => f.bad += 1,
                }
                f.gets += 1;
            }
            latencies.record(start.elapsed().as_nanos());
        }
    }
    f.ended_ns = monotonic_ns();
    (f.p50_ns, f.p99_ns) = (latencies.quantile(0.5), latencies.quantile(0.99));
    Ok((f, env))
}

/// How the bench's writer ended.
#[derive(Debug, Default, Clone, Copy)]
struct Written {
    commits: u64,
    /// It stopped committing because one more commit could have taken the map's high-water
    /// mark past half the map (see [`may_commit`]).
    stopped_at_high_water: bool,
    /// The map's high-water mark at the end: its pages up to the last one LMDB has used.
    high_water_pages: u64,
    /// The most one commit raised the high-water mark, in pages: what
    /// [`COMMIT_RESERVE_PAGES`] bounds.
    max_commit_pages: u64,
}

/// Whether the writer may commit once more, with the map's high-water mark at
/// `high_water_pages` (LMDB's last page number + 1) of `map_pages`: only if the mark stays
/// within half the map even if the commit takes [`COMMIT_RESERVE_PAGES`] fresh pages.
///
/// Why a bound at all: LMDB takes a commit's pages from its free list only when every
/// reader's snapshot is newer than the transaction that freed them (`mdb_find_oldest`), so
/// while one reader holds an old snapshot (a reader descheduled in its read transaction,
/// or `--hold-snapshot`) every commit takes fresh pages at the end of the map, and a writer
/// committing at the speed of the machine fills any map (MDB_MAP_FULL) if the reader is
/// slow enough. The high-water mark never goes down, so once this says no it says no for
/// the rest of the run; half the map is far from full whatever the bound's error.
fn may_commit(high_water_pages: u64, map_pages: u64) -> bool {
    high_water_pages.saturating_add(COMMIT_RESERVE_PAGES) <= map_pages / 2
}

/// Commits as fast as it can until `deadline` (each commit bumping the generation and
/// rewriting one key's value) or until [`may_commit`] says no.
fn commit_until(env: &Env, database: Database<Str, Str>, keys: usize, deadline: Instant) -> Result<Written, Error> {
    let map_pages = env.info().map_size as u64 / u64::from(env.stat().page_size);
    let high_water = || env.info().last_page_number as u64 + 1;
    let mut w = Written { high_water_pages: high_water(), ..Written::default() };
    while Instant::now() < deadline {
        if !may_commit(w.high_water_pages, map_pages) {
            w.stopped_at_high_water = true;
            break;
        }
        let mut wtxn = env.write_txn()?;
        let generation: u64 = database.get(&wtxn, GENERATION)?.and_then(|g| g.parse().ok()).unwrap_or(0) + 1;
        let key = format!("k{}", generation % keys as u64 + 1);
        database.put(&mut wtxn, &key, &format!("v{}-{generation}", &key[1..]))?;
        database.put(&mut wtxn, GENERATION, &generation.to_string())?;
        wtxn.commit()?;
        w.commits += 1;
        // The meta page of the commit just made (this process is the only writer).
        let now = high_water();
        w.max_commit_pages = w.max_commit_pages.max(now.saturating_sub(w.high_water_pages));
        w.high_water_pages = now;
    }
    Ok(w)
}

/// The writer: commits for `seconds` (until `deadline` when given: `--hold-snapshot`'s) as
/// [`commit_until`] does; stopped at the high-water mark, it stays idle until the deadline.
/// Returns how it ended and the environment.
fn writer(db: &str, keys: usize, seconds: u64, deadline: Option<Instant>) -> Result<(Written, Env), Error> {
    let (env, database) = open(db, false)?;
    let deadline = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(seconds));
    let written = commit_until(&env, database, keys, deadline)?;
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    Ok((written, env))
}

/// The `--hold-snapshot` process: opens a read transaction, says so on `ready` (one byte),
/// and holds the snapshot until `deadline` (the writer's), so that LMDB reuses none of the
/// pages the writer's commits free meanwhile. Returns the environment, to hold at the gate.
fn hold_snapshot(db: &str, ready: File, deadline: Instant) -> Result<Env, Error> {
    let (env, database) = open(db, false)?;
    {
        let rtxn = env.read_txn()?;
        database.get(&rtxn, GENERATION)?;
        (&ready).write_all(b"+")?;
        drop(ready);
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    }
    Ok(env)
}

/// What a crew member holds at the gate, or its error said on stderr (prefixed by `what`)
/// and nothing held: the crew then counts it failed.
fn held<T>(what: &str, result: Result<T, Error>) -> Option<T> {
    result.map_err(|e| eprintln!("mshare-lmdb: {what}{e}")).ok()
}

/// Runs `work` in a crew member that writes its figures to `out` and holds its
/// environment open at the gate.
fn member(crew: &mut Crew, out: PathBuf, work: impl FnOnce() -> Result<(String, Env), Error>) -> Result<(), Error> {
    crew.spawn(move || held("", work().and_then(|(figures, env)| Ok(fs::write(&out, figures).map(|()| env)?))))?;
    Ok(())
}

fn bench(db: &str, readers: u64, seconds: u64, snapshot: bool, hold: bool, seed: u64) -> Result<String, Error> {
    // Counted and the Zipfian constants computed once, before the fork.
    let keys = key_count(db, snapshot)?;
    let zipf = Zipf::new(keys, THETA);
    let dir = PathBuf::from(format!("/tmp/mshare-lmdb-bench-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let (pagetables, faults) = (settled_pagetables_kib(), children_minor_faults());
    let mut crew = Crew::new()?;
    for i in 0..readers {
        let zipf = &zipf;
        let work = move || {
            reader(db, zipf, keys, seed ^ (0x6c6d_6462 + i).rotate_left(17), seconds, snapshot).map(|(f, env)| {
                let line = format!(
                    "{} {} {} {} {} {} {} {}",
                    f.gets, f.scans, f.newest, f.bad, f.p50_ns, f.p99_ns, f.started_ns, f.ended_ns
                );
                (line, env)
            })
        };
        member(&mut crew, dir.join(format!("reader{i}")), work)?;
    }
    // With --hold-snapshot, one more process holds a snapshot from before the writer's
    // first commit until its deadline: the writer's SECONDS then count from before that
    // process starts (both share the deadline), and it waits until the snapshot is taken.
    let deadline = hold.then(|| Instant::now() + Duration::from_secs(seconds));
    if let Some(deadline) = deadline {
        let (mut taken, ready) = guest_tests::process::pipe()?;
        crew.spawn(move || held("snapshot holder: ", hold_snapshot(db, ready, deadline)))?;
        // The holder's byte, or nothing if it failed (its end closed with it).
        let mut byte = [0u8; 1];
        if taken.read(&mut byte)? != 1 {
            return Err("the snapshot holder failed (see above)".into());
        }
    }
    if !snapshot {
        member(&mut crew, dir.join("writer"), move || {
            writer(db, keys, seconds, deadline).map(|(w, env)| {
                let line = format!(
                    "{} {} {} {}",
                    w.commits,
                    u8::from(w.stopped_at_high_water),
                    w.high_water_pages,
                    w.max_commit_pages
                );
                (line, env)
            })
        })?;
    }
    let gathered = crew.gather();
    let grown = meminfo_kib("PageTables:").saturating_sub(pagetables);
    let pmd_mapped = meminfo_kib("ShmemPmdMapped:") + meminfo_kib("FilePmdMapped:");
    let finished = crew.finish();
    gathered?;
    finished?;
    let minor_faults = children_minor_faults() - faults;
    let read = |file: &str| fs::read_to_string(dir.join(file));
    let written = if snapshot {
        Written::default()
    } else {
        let figures: Vec<u64> = read("writer")?.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        let [commits, stopped, high_water_pages, max_commit_pages] = figures[..] else {
            return Err(format!("the writer reported {figures:?}").into());
        };
        Written { commits, stopped_at_high_water: stopped != 0, high_water_pages, max_commit_pages }
    };
    let map_pages = fs::metadata(data_path(db))?.len() / LMDB_PAGE;
    let (mut gets, mut scans, mut newest_min, mut bad) = (0u64, 0u64, u64::MAX, 0u64);
    let (mut first_start_ns, mut last_end_ns) = (u64::MAX, 0u64);
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for i in 0..readers {
        let figures: Vec<u64> =
            read(&format!("reader{i}"))?.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        let [g, s, newest, b, p50, p99, started, ended] = figures[..] else {
            return Err(format!("reader {i} reported {figures:?}").into());
        };
        gets += g;
        scans += s;
        newest_min = newest_min.min(newest);
        bad += b;
        p50s.push(p50);
        p99s.push(p99);
        first_start_ns = first_start_ns.min(started);
        last_end_ns = last_end_ns.max(ended);
    }
    fs::remove_dir_all(&dir)?;
    p50s.sort_unstable();
    // Per-operation times need a clock finer than an operation: under QEMU TCG the guest's
    // is the jiffies (10 ms) unless the kernel is told the TSC's rate, and the figures say
    // so rather than print zeros.
    let resolution = clock_resolution_ns();
    let micros =
        |ns: u64| if resolution <= CLOCK_FINE_NS { format!("{:.1}", ns as f64 / 1000.0) } else { "n/a".to_owned() };
    let (p50_us, p99_us) = (micros(p50s[p50s.len() / 2]), micros(p99s.iter().copied().max().unwrap_or(0)));
    // All readers' operations over the time any of them ran: readers forked one after
    // the other do not all run at once, and the slowest one's own time would overstate.
    let measured_s = last_end_ns.saturating_sub(first_start_ns) as f64 / 1e9;
    Ok(format!(
        "LMDB db={db} snapshot={snapshot} readers={readers} seconds={seconds} seed={seed} keys={keys} gets={gets} \
         scans={scans} ops_per_s={:.0} p50_us={p50_us} p99_us={p99_us} clock_resolution_ns={resolution} \
         measured_s={measured_s:.2} pagetables_kib={grown} pmd_mapped_kib={pmd_mapped} minor_faults={minor_faults} \
         commits={} newest_generation_seen_by_every_reader={newest_min} bad={bad} hold_snapshot={hold} \
         writer_stopped_at_high_water={} writer_high_water_pages={} writer_max_commit_pages={} map_pages={map_pages}",
        (gets + scans) as f64 / measured_s.max(1e-9),
        written.commits,
        u8::from(written.stopped_at_high_water),
        written.high_water_pages,
        written.max_commit_pages,
    ))
}

/// How long `follow` waits for a first publication.
const FIRST_PUBLICATION_WAIT: Duration = Duration::from_secs(120);

/// What one following reader did.
#[derive(Default)]
struct Following {
    gets: u64,
    scans: u64,
    bad: u64,
    first: u64,
    newest: u64,
    switches: u64,
    retried: u64,
}

/// The snapshot of one generation, open.
struct Opened {
    generation: u64,
    env: Env,
    database: Database<Str, Str>,
    keys: usize,
    zipf: Zipf,
}

fn open_generation(slots: [&str; 2], generation: u64) -> Result<Opened, Error> {
    let slot = slots[publication::slot(generation)];
    let (env, database) = open(slot, true)?;
    let keys = {
        let rtxn = env.read_txn()?;
        (database.len(&rtxn)?.saturating_sub(1) as usize).max(2)
    };
    Ok(Opened { generation, env, database, keys, zipf: Zipf::new(keys, THETA) })
}

/// A reader following publications for `seconds`: before each batch of 64 operations it
/// takes the newest generation (reopening when it changed), checks that the snapshot is
/// that generation, and after the batch discards it if the writer began overwriting the
/// slot meanwhile.
fn follower(header: &Header, slots: [&str; 2], seed: u64, seconds: u64) -> Result<Following, Error> {
    let mut rng = Rng::new(seed);
    let mut f = Following::default();
    let mut current: Option<Opened> = None;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        let generation = header.generation();
        if current.as_ref().map(|c| c.generation) != Some(generation) {
            // The environment of the other slot closes before this one opens.
            drop(current.take());
            current = match open_generation(slots, generation) {
                Ok(opened) => Some(opened),
                // Its slot is being rewritten already: the next generation is on its way.
                Err(_) if publication::overwritten(generation, header.writing()) => {
                    f.retried += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            f.switches += u64::from(f.first != 0);
            if f.first == 0 {
                f.first = generation;
            }
        }
        let Some(snapshot) = current.as_ref() else { continue };
        let (mut gets, mut scans, mut bad) = (0u64, 0u64, 0u64);
        {
            let rtxn = snapshot.env.read_txn()?;
            let stored = snapshot.database.get(&rtxn, GENERATION)?.and_then(|g| g.parse::<u64>().ok());
            bad += u64::from(stored != Some(generation));
            for _ in 0..64 {
                let key = format!("k{}", scatter(snapshot.zipf.sample(&mut rng), snapshot.keys) + 1);
                if rng.below(SCAN_EVERY) == 0 {
                    let range = (Bound::Included(key.as_str()), Bound::Unbounded);
                    let mut seen = 0;
                    for entry in snapshot.database.range(&rtxn, &range)?.take(SCAN) {
                        let (k, v) = entry?;
                        bad += u64::from(!value_matches(k, v));
                        seen += 1;
                    }
                    bad += u64::from(seen == 0);
                    scans += 1;
                } else {
                    bad += u64::from(!snapshot.database.get(&rtxn, &key)?.is_some_and(|v| value_matches(&key, v)));
                    gets += 1;
                }
            }
        }
        if publication::overwritten(generation, header.writing()) {
            f.retried += 1;
            current = None;
            continue;
        }
        (f.gets, f.scans, f.bad) = (f.gets + gets, f.scans + scans, f.bad + bad);
        f.newest = f.newest.max(generation);
    }
    Ok(f)
}

/// `readers` processes following the publications behind `header` for `seconds`.
fn follow(header_name: &str, slots: [&str; 2], readers: u64, seconds: u64, seed: u64) -> Result<String, Error> {
    let header = Header::open(&data_path(header_name), false).map_err(|e| format!("{header_name}: {e}"))?;
    let waited = Instant::now();
    while header.generation() == 0 {
        if waited.elapsed() > FIRST_PUBLICATION_WAIT {
            return Err(format!("{header_name}: nothing published in {} s", FIRST_PUBLICATION_WAIT.as_secs()).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for slot in slots {
        env_dir(slot)?;
    }
    let dir = PathBuf::from(format!("/tmp/mshare-lmdb-follow-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let mut crew = Crew::new()?;
    for i in 0..readers {
        let (header, out) = (&header, dir.join(format!("reader{i}")));
        crew.spawn(move || {
            let figures = follower(header, slots, seed ^ (0x666f_6c6c + i).rotate_left(17), seconds).and_then(|f| {
                let line =
                    format!("{} {} {} {} {} {} {}", f.gets, f.scans, f.bad, f.first, f.newest, f.switches, f.retried);
                Ok(fs::write(&out, line)?)
            });
            held("follow: ", figures)
        })?;
    }
    let gathered = crew.gather();
    let finished = crew.finish();
    gathered?;
    finished?;
    let mut total = [0u64; 7];
    let (mut first_max, mut newest_min, mut switches_min) = (0u64, u64::MAX, u64::MAX);
    for i in 0..readers {
        let figures: Vec<u64> = fs::read_to_string(dir.join(format!("reader{i}")))?
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [_, _, _, first, newest, switches, _] = figures[..] else {
            return Err(format!("reader {i} reported {figures:?}").into());
        };
        total.iter_mut().zip(&figures).for_each(|(t, f)| *t += f);
        first_max = first_max.max(first);
        newest_min = newest_min.min(newest);
        switches_min = switches_min.min(switches);
    }
    fs::remove_dir_all(&dir)?;
    Ok(format!(
        "FOLLOW header={header_name} readers={readers} seconds={seconds} seed={seed} gets={} scans={} \
         first_generation={first_max} newest_generation_seen_by_every_reader={newest_min} \
         switches_of_every_reader={switches_min} retried={} bad={}",
        total[0], total[1], total[6], total[2]
    ))
}

/// Answers one request line of the `serve` protocol.
fn answer(env: &Env, database: Database<Str, Str>, request: &str) -> Result<String, Error> {
    let rtxn = env.read_txn()?;
    let words: Vec<&str> = request.split_whitespace().collect();
    Ok(match words.as_slice() {
        ["get", key] => match database.get(&rtxn, key)? {
            Some(value) => format!("VALUE {value}\n"),
            None => "NONE\n".to_owned(),
        },
        ["scan", key, n] => {
            let n: usize = n.parse().map_err(|_| format!("scan: '{n}' is not a count"))?;
            let mut reply = String::new();
            for entry in database.range(&rtxn, &(Bound::Included(*key), Bound::Unbounded))?.take(n) {
                let (k, v) = entry?;
                reply += &format!("ENTRY {k} {v}\n");
            }
            reply + "END\n"
        }
        _ => format!("ERROR unknown request '{request}' (get KEY | scan KEY N)\n"),
    })
}

/// A server worker: accepts connections on the shared listener and answers their lines.
fn serve_connections(db: &str, listener: &UnixListener, snapshot: bool) -> Result<(), Error> {
    let (env, database) = open(db, snapshot)?;
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            // A client that gave up before it was accepted, or a signal: not the server's.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EINTR)) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut out = &stream;
        // A client's bad bytes or early close end its connection, never the worker.
        for line in BufReader::new(&stream).lines() {
            let Ok(line) = line else { break };
            let reply = answer(&env, database, &line).unwrap_or_else(|e| format!("ERROR {e}\n"));
            if out.write_all(reply.as_bytes()).is_err() {
                break;
            }
        }
    }
}

/// Serves `db` on the Unix socket `socket` with `workers` pre-forked processes (each with
/// the database open, all accepting on one listener) until SIGTERM or SIGINT; a worker
/// that dies stops the server with an error. Nothing is left behind: the workers die with
/// the server (PR_SET_PDEATHSIG too), the socket file is removed.
fn serve(db: &str, socket: &Path, workers: u64, snapshot: bool) -> Result<String, Error> {
    env_dir(db)?;
    let listener = UnixListener::bind(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    // SAFETY: sigset_t is plain data, filled by sigemptyset/sigaddset.
    let mut signals: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid set; blocked here (the workers unblock them) so that sigwait takes them.
    unsafe {
        libc::sigemptyset(&mut signals);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
            libc::sigaddset(&mut signals, signal);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut());
    }
    let mut pids = Vec::new();
    for _ in 0..workers {
        let (listener, signals) = (&listener, &signals);
        let pid = guest_tests::process::spawn_child(move || {
            // SAFETY: the server's signals back to their defaults in the worker, which also
            // ends when the server does.
            unsafe {
                libc::sigprocmask(libc::SIG_UNBLOCK, signals, std::ptr::null_mut());
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            }
            match serve_connections(db, listener, snapshot) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("mshare-lmdb: serve: {e}");
                    1
                }
            }
        });
        match pid {
            Some(pid) => pids.push(pid),
            None => break,
        }
    }
    let started_all = pids.len() as u64 == workers;
    eprintln!("mshare-lmdb: serving {db} on {} with {} workers", socket.display(), pids.len());
    // Until SIGTERM or SIGINT, or SIGCHLD: a worker ended, which they only do by failing.
    let mut signal = 0;
    // SAFETY: waiting for one of the signals blocked above.
    if started_all && unsafe { libc::sigwait(&signals, &mut signal) } != 0 {
        signal = 0;
    }
    for pid in &pids {
        // SAFETY: our own children.
        unsafe { libc::kill(*pid, libc::SIGTERM) };
    }
    let statuses: Vec<i32> = pids.iter().map(|pid| guest_tests::process::wait_child(*pid)).collect();
    let _ = fs::remove_file(socket);
    if !started_all {
        return Err(format!("fork failed after {} of {workers} workers", pids.len()).into());
    }
    if signal == libc::SIGCHLD {
        return Err(format!("a worker died (statuses {statuses:?}); stopped").into());
    }
    Ok(format!("mshare-lmdb: stopped serving {db} (signal {signal})"))
}

/// Sends one request to a `serve` socket and returns the reply.
fn ask(socket: &Path, request: &str) -> Result<String, Error> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    if let Some(error) = reply.strip_prefix("ERROR ") {
        return Err(error.trim_end().into());
    }
    Ok(reply.trim_end().to_owned())
}

/// A positive count from the command line.
fn count(word: &str) -> Option<u64> {
    word.parse().ok().filter(|n| *n > 0)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let snapshot = args.iter().any(|a| a == "--snapshot");
    let hold = args.iter().any(|a| a == "--hold-snapshot");
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
        .filter(|(i, a)| *a != "--snapshot" && *a != "--hold-snapshot" && *a != "--seed" && Some(*i) != seed_value)
        .map(|(_, a)| a.as_str())
        .collect();
    // Holding a snapshot is a bench's, and only one with a writer.
    if hold && (snapshot || words.first() != Some(&"bench")) {
        eprintln!("mshare-lmdb: --hold-snapshot is for a bench without --snapshot\n{USAGE}");
        return ExitCode::from(2);
    }
    let result = match words.as_slice() {
        ["load", db, "--generate", pairs] if !snapshot => match count(pairs) {
            Some(pairs) => load(db, Source::Generate(pairs)),
            None => Err(format!("--generate takes a positive number of pairs, not '{pairs}'").into()),
        },
        ["load", db, file] if !snapshot => load(db, Source::Lines(Path::new(file))),
        ["get", db, key] => match get(db, key, snapshot) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(format!("no key '{key}' in {db}").into()),
            Err(e) => Err(e),
        },
        ["copy", db, path] if !snapshot => copy(db, Path::new(path)),
        ["serve", db, socket, workers] => match count(workers) {
            Some(workers) => serve(db, Path::new(socket), workers, snapshot),
            None => Err(format!("serve takes a positive number of workers, not '{workers}'").into()),
        },
        ["ask", socket, request @ ..] if !request.is_empty() => ask(Path::new(socket), &request.join(" ")),
        ["publish", header, slot0, slot1, "--generate", pairs] => match count(pairs) {
            Some(pairs) => publish(header, [slot0, slot1], Source::Generate(pairs)),
            None => Err(format!("--generate takes a positive number of pairs, not '{pairs}'").into()),
        },
        ["publish", header, slot0, slot1, file] => publish(header, [slot0, slot1], Source::Lines(Path::new(file))),
        ["follow", header, slot0, slot1, readers, seconds] => match (count(readers), count(seconds)) {
            (Some(readers), Some(seconds)) => follow(header, [slot0, slot1], readers, seconds, seed),
            _ => Err(format!("follow takes positive READERS and SECONDS, not '{readers}' '{seconds}'").into()),
        },
        ["storm", db, processes] => match count(processes) {
            Some(processes) => storm(db, processes, snapshot),
            None => Err(format!("storm takes a positive number of processes, not '{processes}'").into()),
        },
        ["bench", db, readers, seconds] => match (count(readers), count(seconds)) {
            (Some(readers), Some(seconds)) => bench(db, readers, seconds, snapshot, hold, seed),
            _ => Err(format!("bench takes positive READERS and SECONDS, not '{readers}' '{seconds}'").into()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_come_in_lmdb_order() {
        for n in [1, 9, 10, 11, 99, 100, 101, 1234] {
            let order: Vec<u64> = lexicographic(n).collect();
            let mut sorted: Vec<u64> = (1..=n).collect();
            sorted.sort_by_key(|k| k.to_string());
            assert_eq!(order, sorted, "n={n}");
        }
    }

    #[test]
    fn the_writer_commits_only_while_a_commit_stays_within_half_the_map() {
        // 256 MiB: 65,536 pages, half of them 32,768.
        let map = 65_536;
        assert!(may_commit(2, map));
        assert!(may_commit(32_768 - COMMIT_RESERVE_PAGES, map), "the last commit can end at half the map exactly");
        assert!(!may_commit(32_768 - COMMIT_RESERVE_PAGES + 1, map));
        assert!(!may_commit(40_000, map));
        assert!(!may_commit(u64::MAX, map), "no overflow");
        // A map too small for one commit in its first half takes none.
        assert!(!may_commit(2, 2 * COMMIT_RESERVE_PAGES + 3));
        assert!(may_commit(2, 2 * COMMIT_RESERVE_PAGES + 4));
        // Whatever the mark, a commit allowed cannot take it past half the map.
        for high_water in (0..40_000).step_by(7) {
            if may_commit(high_water, map) {
                assert!(high_water + COMMIT_RESERVE_PAGES <= map / 2, "{high_water}");
            }
        }
    }

    /// The real library on the host: a snapshot held from before the writer's first commit
    /// to its end (what `bench --hold-snapshot` does) makes every commit take fresh pages;
    /// the writer stops at half the map instead of failing with MDB_MAP_FULL, and no commit
    /// took more than the reserve. Two databases: the boot test's (20,000 short pairs, a
    /// 8 MiB map) and generated 100-byte values (a 32 MiB map, a deeper tree).
    #[test]
    fn a_writer_behind_a_held_snapshot_stops_at_half_the_map() {
        let dir = std::env::temp_dir().join(format!("mshare-lmdb-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let kv = dir.join("kv");
        fs::write(&kv, (1..=20_000).map(|i| format!("k{i} v{i}\n")).collect::<String>()).unwrap();
        let cases: [(&str, u64, Source<'_>); 2] =
            [("short", 8 << 20, Source::Lines(&kv)), ("generated", 32 << 20, Source::Generate(50_000))];
        for (name, size, source) in cases {
            let data = dir.join(name);
            File::create(&data).unwrap().set_len(size).unwrap();
            let db = data.to_str().unwrap();
            load(db, source).unwrap();
            let (env, database) = open(db, false).unwrap();
            let keys = {
                let rtxn = env.read_txn().unwrap();
                database.len(&rtxn).unwrap() as usize - 1
            };
            let depth = env.stat().depth;
            let (taken_tx, taken_rx) = std::sync::mpsc::channel();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            let written = std::thread::scope(|s| {
                let (shared, taken_tx) = (&env, taken_tx);
                let holder = s.spawn(move || {
                    let rtxn = shared.read_txn().unwrap();
                    let before = database.get(&rtxn, GENERATION).unwrap().map(str::to_owned);
                    taken_tx.send(()).unwrap();
                    let _ = done_rx.recv();
                    let after = database.get(&rtxn, GENERATION).unwrap().map(str::to_owned);
                    assert_eq!((before.as_deref(), after.as_deref()), (Some("0"), Some("0")), "{name}: held");
                });
                taken_rx.recv().unwrap();
                let written = commit_until(&env, database, keys, Instant::now() + Duration::from_secs(120));
                done_tx.send(()).unwrap();
                holder.join().unwrap();
                written.unwrap_or_else(|e| panic!("{name}: {e}"))
            });
            eprintln!("{name}: keys={keys} depth={depth} {written:?}");
            let map_pages = size / LMDB_PAGE;
            assert!(written.stopped_at_high_water, "{name}: {written:?}");
            assert!(written.commits > 0, "{name}: {written:?}");
            assert!(written.high_water_pages <= map_pages / 2, "{name}: {written:?}");
            assert!(written.high_water_pages + COMMIT_RESERVE_PAGES > map_pages / 2, "{name}: {written:?}");
            assert!(written.max_commit_pages <= COMMIT_RESERVE_PAGES, "{name}: {written:?}");
            assert_eq!(env.info().last_page_number as u64 + 1, written.high_water_pages, "{name}");
            drop(env);
            fs::remove_dir_all(env_path(db)).unwrap();
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn values_match_their_keys_only() {
        assert!(value_matches("k42", "v42"));
        assert!(value_matches("k42", "v42-xxxx"));
        assert!(value_matches("k42", "v42-17"));
        assert!(!value_matches("k4", "v42"));
        assert!(!value_matches("k42", "v4"));
        assert!(!value_matches("k42", "w42"));
    }
}
