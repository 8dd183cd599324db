//! The database tier: K VMs x N reader processes over one LMDB database (the real library,
//! `mshare-lmdb`), four ways side by side in one run:
//! - **private**: each VM copies the database into its own tmpfs (the copy-in time is
//!   charged, and the fleet's memory is measured after the source is dropped);
//! - **private-thp**: the same on a tmpfs mounted `huge=always` (2 MiB pages and
//!   mappings: the strong baseline);
//! - **mshare-c**: one host copy (a file given to every VM as an ivshmem-plain device),
//!   mapped in each VM through msharefs in mode C (shared memory, each process's own page
//!   tables, 2 MiB entries);
//! - **mshare-b**: the same in mode B (page tables shared by the VM's processes).
//!
//! Each VM first opens the database with N fresh processes at once (the connect storm:
//! time until the last has read a key), then runs N readers (Zipfian gets and short scans,
//! every value checked) for BENCH_DB_SECONDS, BENCH_DB_REPEATS times, for each N. All
//! readers open the database read-only without locks (a snapshot: a writer cannot share
//! LMDB's lock table across VMs), in every way alike.
//!
//! The VMs are QEMU TCG guests (guest user space cannot run under this machine's KVM), all
//! K at once, 2 vCPUs each, the guest clock on the TSC, a start barrier before each storm
//! and bench (a small second region: every VM waits until all K got there, so the K VMs'
//! readers run at the same time). Host memory is the PSS of the fleet's QEMU processes,
//! sampled while every VM's readers run. The database is built once
//! per size by a builder VM (`mshare-lmdb load --generate`: 100-byte values filling about
//! 70 % of the size).
//!
//! `make bench-dbtier`; BENCH_DB_SIZES_MIB ("256 1024"), BENCH_DB_VMS ("1 2 4"),
//! BENCH_DB_READERS ("8 64 256"), BENCH_DB_SECONDS (3), BENCH_DB_REPEATS (3) and
//! BENCH_DB_WAYS (all four) change it. Writes target/bench/dbtier.md and dbtier.json.

use guest_runner::images::{write_bench_report, ImagePaths};
use guest_runner::lmdb_tier::{self, TierFigures, Way, READY};
use guest_runner::qemu::{log_path, user_port_log, Boot};
use serde_json::{json, Value};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Guest memory besides a private copy of the database.
const BASE_MEMORY_MIB: u64 = 768;
/// How often the host samples the fleet's memory.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

struct Params {
    sizes_mib: Vec<u64>,
    vms: Vec<usize>,
    readers: Vec<u64>,
    seconds: u64,
    repeats: u64,
    ways: Vec<Way>,
    tsc_khz: u64,
}

fn env_list<T: std::str::FromStr>(name: &str, default: &str) -> Vec<T> {
    let text = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    text.split_whitespace().map(|w| w.parse().unwrap_or_else(|_| panic!("{name}: '{w}' is not a number"))).collect()
}

/// Host memory of the QEMU processes whose command line carries `tag`, KiB of PSS: all of
/// it, and the part that is file memory (the ivshmem backing; the rest is guest RAM, QEMU's
/// heap and its translated code).
#[derive(Clone, Copy, Default)]
struct Pss {
    total_kib: u64,
    file_kib: u64,
}

fn fleet_pss(tag: &str) -> Pss {
    let mut pss = Pss::default();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(tag) {
            continue;
        }
        let rollup = std::fs::read_to_string(entry.path().join("smaps_rollup")).unwrap_or_default();
        let kib = mshare_uapi::formats::kib_lines(&rollup);
        let figure = |key: &str| kib.get(key).copied().unwrap_or(0);
        pss.total_kib += figure("Pss");
        pss.file_kib += figure("Pss_File") + figure("Pss_Shmem");
    }
    pss
}

/// Frees a file's blocks, keeping its size: the private ways' source, once every VM copied it.
fn punch_hole(path: &Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len() as libc::off_t;
    // SAFETY: fallocate on a descriptor we own.
    let rc =
        unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The barrier region's size (ivshmem-plain wants a power of two; a granule or more for
/// msharefs).
const BARRIER_BYTES: u64 = 4 << 20;
/// How often the host looks at the barrier.
const BARRIER_POLL: Duration = Duration::from_millis(50);

/// A fleet's barrier region: zeros, and step 0 said at `lmdb_tier::BARRIER_GO`.
fn create_barrier(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(path)?;
    file.set_len(BARRIER_BYTES)?;
    file.write_all_at(format!("{:07}", 0).as_bytes(), lmdb_tier::BARRIER_GO)
}

/// Lets the fleet's VMs past their barrier once each of the `vms` has said the same step
/// (at 8 × its index), by writing that step at `lmdb_tier::BARRIER_GO`; writes
/// `lmdb_tier::BARRIER_ABORT` instead once a VM ended (`any_done`): a VM that ended has
/// passed every step, so only a VM that failed early leaves others waiting.
fn open_barrier(path: &Path, vms: usize, any_done: bool) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let mut said = vec![0u8; vms * 8];
    file.read_exact_at(&mut said, 0)?;
    let steps: Vec<Option<u64>> =
        said.chunks(8).map(|c| std::str::from_utf8(&c[..7]).ok().and_then(|t| t.parse().ok())).collect();
    let go = match steps.first() {
        _ if any_done => lmdb_tier::BARRIER_ABORT,
        Some(Some(step)) if steps.iter().all(|s| *s == Some(*step)) => *step,
        _ => return Ok(()),
    };
    file.write_all_at(format!("{go:07}").as_bytes(), lmdb_tier::BARRIER_GO)
}

fn boot(images: &ImagePaths, p: &Params, log: &str, memory_mib: u64) -> Boot {
    let mut boot = Boot::guest_image(images).unwrap_or_else(|e| panic!("{e}"));
    boot.memory_mib = memory_mib as u32;
    boot.timeout = Duration::from_secs(3600);
    boot.console_log = Some(log_path(log));
    boot.host_thp = false;
    // The module's KUnit suites, which the guest image runs when it loads the module, touch
    // some 100 MiB of guest RAM that stays the host's after they free it: not a cost of
    // any way.
    boot.cmdline.extend([
        format!("tsc_early_khz={}", p.tsc_khz),
        "tsc=reliable".to_owned(),
        "kunit.enable=0".to_owned(),
    ]);
    boot
}

/// Builds the database of `size_mib` into a new host file in `dir` with a builder VM.
fn build_database(images: &ImagePaths, p: &Params, dir: &Path, size_mib: u64) -> (PathBuf, String) {
    let file = dir.join(format!("lmdb-{size_mib}M"));
    std::fs::File::create(&file).and_then(|f| f.set_len(size_mib << 20)).unwrap_or_else(|e| panic!("{e}"));
    let mut builder = boot(images, p, &format!("dbtier-build-{size_mib}M"), BASE_MEMORY_MIB + size_mib);
    builder.ivshmem = vec![(file.clone(), size_mib << 20)];
    builder.command = vec!["sh".to_owned(), "-c".to_owned(), lmdb_tier::build_script(size_mib)];
    let run = builder.run_command().unwrap_or_else(|e| panic!("building the {size_mib} MiB database: {e}"));
    let line = run.output.stdout.lines().find(|l| l.starts_with("mshare-lmdb: loaded")).map(str::to_owned);
    assert_eq!(run.result.status, 0, "builder: {:?}", run.output.console_log);
    (file, line.unwrap_or_else(|| panic!("builder printed no 'loaded' line: {:?}", run.output.console_log)))
}

/// What one fleet printed and how much host memory it held.
struct Fleet {
    consoles: Vec<String>,
    logs: Vec<PathBuf>,
    /// The sample with the largest total.
    pss_peak: Pss,
    pss_samples: u64,
}

/// Runs K VMs of `way` over a copy of `database`.
fn fleet(images: &ImagePaths, p: &Params, database: &Path, size_mib: u64, way: Way, vms: usize) -> Fleet {
    let tag = format!("mshare_dbtier={}-{size_mib}-{vms}-{}", way.name(), std::process::id());
    let source = database.with_extension(format!("{}-{vms}", way.name()));
    std::fs::copy(database, &source).unwrap_or_else(|e| panic!("copying {}: {e}", database.display()));
    let memory = BASE_MEMORY_MIB + if way.private() { size_mib } else { 0 };
    let logs: Vec<PathBuf> =
        (0..vms).map(|vm| log_path(&format!("dbtier-{}-{size_mib}M-k{vms}-vm{vm}", way.name()))).collect();
    // What the sampler reads: each VM's ttyS1 (its script's READY and result lines). An
    // older run's logs say READY too: gone before the sampler looks.
    let logs: Vec<PathBuf> = logs.iter().map(|l| user_port_log(l)).collect();
    for log in &logs {
        let _ = std::fs::remove_file(log);
    }
    // The fleet's start barrier (lmdb_tier::vm_script): a small region of its own.
    let barrier = source.with_extension(format!("{}-{vms}-barrier", way.name()));
    create_barrier(&barrier).unwrap_or_else(|e| panic!("the barrier region {}: {e}", barrier.display()));
    let handles: Vec<_> = (0..vms)
        .map(|vm| {
            let mut b = boot(images, p, &format!("dbtier-{}-{size_mib}M-k{vms}-vm{vm}", way.name()), memory);
            b.cmdline.push(tag.clone());
            b.cmdline.extend(way.cmdline().iter().map(|w| (*w).to_owned()));
            b.ivshmem = vec![(source.clone(), size_mib << 20), (barrier.clone(), BARRIER_BYTES)];
            let seed = (vm as u64 + 1) * 1_000_000;
            let script = lmdb_tier::vm_script(way, &p.readers, p.seconds, p.repeats, seed, Some(vm));
            b.command = vec!["sh".to_owned(), "-c".to_owned(), script];
            std::thread::spawn(move || b.run_command())
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(Mutex::new((Pss::default(), 0u64)));
    let sampler = {
        let (done, peak, tag, logs, source) = (done.clone(), peak.clone(), tag.clone(), logs.clone(), source.clone());
        let barrier = barrier.clone();
        std::thread::spawn(move || -> Result<(), String> {
            let mut punched = !way.private();
            let mut ticks = 0u64;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(BARRIER_POLL);
                ticks += 1;
                let texts: Vec<String> = logs.iter().map(|l| std::fs::read_to_string(l).unwrap_or_default()).collect();
                let any_done = texts.iter().any(|t| t.lines().any(|l| l.starts_with("MSHARE-RESULT ")));
                open_barrier(&barrier, vms, any_done).map_err(|e| format!("the barrier {}: {e}", barrier.display()))?;
                let all_ready = texts.iter().all(|t| t.lines().any(|l| l.trim_end() == READY));
                let sample_now = ticks.is_multiple_of((SAMPLE_EVERY.as_millis() / BARRIER_POLL.as_millis()) as u64);
                if !sample_now || !all_ready || any_done {
                    continue;
                }
                if !punched {
                    punch_hole(&source).map_err(|e| format!("dropping the copied source {}: {e}", source.display()))?;
                    punched = true;
                    continue;
                }
                let now = fleet_pss(&tag);
                let mut p = peak.lock().map_err(|e| e.to_string())?;
                if now.total_kib > p.0.total_kib {
                    p.0 = now;
                }
                p.1 += 1;
            }
            Ok(())
        })
    };
    let mut consoles = Vec::new();
    for (vm, handle) in handles.into_iter().enumerate() {
        let run = handle.join().unwrap().unwrap_or_else(|e| panic!("{} S={size_mib}M K={vms} vm{vm}: {e}", way.name()));
        assert_eq!(run.result.status, 0, "{} K={vms} vm{vm} failed: {:?}", way.name(), run.output.console_log);
        consoles.push(run.output.stdout);
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_file(&source);
    let _ = std::fs::remove_file(&barrier);
    let (pss_peak, pss_samples) = *peak.lock().unwrap();
    assert!(
        pss_samples > 0,
        "{} K={vms}: the fleet's memory was never sampled while every VM's readers ran",
        way.name()
    );
    Fleet { consoles, logs, pss_peak, pss_samples }
}

/// One (size, K, way, N) row of the table from a fleet's consoles.
fn row(p: &Params, fleet: &Fleet, size_mib: u64, vms: usize, way: Way, n: u64) -> Value {
    let consoles: Vec<&str> = fleet.consoles.iter().map(String::as_str).collect();
    let f = TierFigures::read(&consoles, n, p.repeats)
        .unwrap_or_else(|e| panic!("{} {size_mib} MiB K={vms}: {e} (consoles: {:?})", way.name(), fleet.logs));
    let (ops, ops_min, ops_max) = f.ops_spread();
    json!({
        "size_mib": size_mib, "vms": vms, "way": way.name(), "readers_per_vm": n,
        "fleet_pss_mib": (fleet.pss_peak.total_kib >> 10), "fleet_pss_file_mib": (fleet.pss_peak.file_kib >> 10),
        "pss_samples": fleet.pss_samples,
        "pagetables_kib_per_vm": f.pagetables_kib, "minor_faults_per_vm": f.minor_faults,
        "pmd_mapped_kib_per_vm": f.thp_mapped_kib,
        "storm_ms": f.storm_ms, "storm_pagetables_kib_per_vm": f.storm_pagetables_kib,
        "ops_per_s": ops, "ops_per_s_min": ops_min, "ops_per_s_max": ops_max, "ops_per_s_runs": f.ops_per_s,
        "p50_us": f.p50_us, "p99_us": f.p99_us,
        "copy_in_ms": f.copy_in_ms,
        "seconds": p.seconds, "repeats": p.repeats,
    })
}

fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 100.0 || x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
        None => "n/a".to_owned(),
    }
}

fn table(rows: &[Value], size_mib: u64) -> String {
    let mut text = String::from(
        "| K VMs | N readers/VM | way | fleet PSS, MiB (of it file) | PageTables growth/VM, KiB | minor faults/VM | connect storm, ms | \
         ops/s, fleet: median [min-max] | p50 us | p99 us | THP-mapped/VM, MiB | copy-in, ms |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows.iter().filter(|r| r["size_mib"] == size_mib) {
        text += &format!(
            "| {} | {} | {} | {} ({}) | {} | {} | {} | {} [{}-{}] | {} | {} | {} | {} |\n",
            r["vms"],
            r["readers_per_vm"],
            r["way"].as_str().unwrap_or("?"),
            number(&r["fleet_pss_mib"]),
            number(&r["fleet_pss_file_mib"]),
            number(&r["pagetables_kib_per_vm"]),
            number(&r["minor_faults_per_vm"]),
            number(&r["storm_ms"]),
            number(&r["ops_per_s"]),
            number(&r["ops_per_s_min"]),
            number(&r["ops_per_s_max"]),
            number(&r["p50_us"]),
            number(&r["p99_us"]),
            number(&json!(r["pmd_mapped_kib_per_vm"].as_f64().map(|k| (k / 1024.0).round()))),
            number(&r["copy_in_ms"]),
        );
    }
    text
}

/// The figure of the row (size, K, way, N), if it ran.
fn cell(rows: &[Value], size: u64, vms: usize, way: &str, n: u64, key: &str) -> Option<f64> {
    rows.iter()
        .find(|r| r["size_mib"] == size && r["vms"] == vms && r["way"] == way && r["readers_per_vm"] == n)
        .and_then(|r| r[key].as_f64())
}

/// The anchors of the mshare series, with this run's figures beside them.
fn anchors(p: &Params, rows: &[Value]) -> String {
    let (Some(&size), Some(&n_lo), Some(&n_hi)) = (p.sizes_mib.last(), p.readers.first(), p.readers.last()) else {
        return String::new();
    };
    let vms = p.vms[0];
    let mut text = format!(
        "**Connect storm** (the series' PostgreSQL run, Wartak 2025, 16,000 clients: 50-70 s to connect with \
         mmap(MAP_SHARED)+fork, 6 s with msharefs). Here, {n_hi} fresh processes per VM opening the {size} MiB \
         database at once, K = {vms}:"
    );
    for way in &p.ways {
        if let Some(ms) = cell(rows, size, vms, way.name(), n_hi, "storm_ms") {
            text += &format!(" {} {ms:.0} ms;", way.name());
        }
    }
    text += " (under TCG: compare the ways, not the seconds.)\n\n";
    text += &format!(
        "**The SGA arithmetic** (the series' cover letter: 1,500 processes mapping a 300 GB SGA would need 878 GB \
         of PTEs). Per-process page-table cost measured here, (PageTables at N = {n_hi} - at N = {n_lo}) / \
         ({n_hi} - {n_lo}), K = {vms}, {size} MiB database, scaled to 1,500 processes x 300 GiB as the series \
         does (the readers touch a Zipfian hot set, not every page: bench-pagetables has the every-page figures):"
    );
    for way in &p.ways {
        let (Some(hi), Some(lo)) = (
            cell(rows, size, vms, way.name(), n_hi, "pagetables_kib_per_vm"),
            cell(rows, size, vms, way.name(), n_lo, "pagetables_kib_per_vm"),
        ) else {
            continue;
        };
        let per_process = (hi - lo) / (n_hi - n_lo) as f64;
        let sga_gib = per_process * (300.0 * 1024.0 / size as f64) * 1500.0 / (1024.0 * 1024.0);
        text += &format!(" {} {per_process:.1} KiB/process -> {sga_gib:.1} GiB;", way.name());
    }
    text + "\n"
}

fn main() {
    let p = Params {
        sizes_mib: env_list("BENCH_DB_SIZES_MIB", "256 1024"),
        vms: env_list("BENCH_DB_VMS", "1 2 4"),
        readers: env_list("BENCH_DB_READERS", "8 64 256"),
        seconds: env_list::<u64>("BENCH_DB_SECONDS", "3").first().copied().unwrap_or(3),
        repeats: env_list::<u64>("BENCH_DB_REPEATS", "3").first().copied().unwrap_or(3).max(1),
        ways: std::env::var("BENCH_DB_WAYS")
            .map(|w| {
                w.split_whitespace()
                    .map(|name| {
                        Way::from_name(name).unwrap_or_else(|| {
                            panic!("BENCH_DB_WAYS: '{name}' (ways: private private-thp mshare-c mshare-b)")
                        })
                    })
                    .collect()
            })
            .unwrap_or_else(|_| Way::ALL.to_vec()),
        tsc_khz: guest_runner::nested::host_tsc_khz(),
    };
    let images = ImagePaths::discover().unwrap_or_else(|e| panic!("{e}"));
    let scratch = std::env::temp_dir().join(format!("mshare-dbtier-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap_or_else(|e| panic!("{}: {e}", scratch.display()));
    let started = std::time::Instant::now();
    let mut rows = Vec::new();
    let mut built = Vec::new();
    for &size in &p.sizes_mib {
        eprintln!("dbtier bench: building the {size} MiB database");
        let (database, loaded) = build_database(&images, &p, &scratch, size);
        built.push(loaded);
        for &vms in &p.vms {
            for &way in &p.ways {
                eprintln!("dbtier bench: {size} MiB, {} VM(s), {}, N = {:?}", vms, way.name(), p.readers);
                let fleet = fleet(&images, &p, &database, size, way, vms);
                rows.extend(p.readers.iter().map(|&n| row(&p, &fleet, size, vms, way, n)));
            }
        }
        let _ = std::fs::remove_file(&database);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let mut report = format!(
        "# Database tier: LMDB, K VMs x N readers, four ways\n\n\
         Command: `make bench-dbtier` ({:.0} min on this host's {} cores). Guests: Linux 7.3 (core-mm patch) under \
         QEMU TCG, 2 vCPUs each, all K VMs of a row at once, the guest clock on the TSC. Each VM: a connect storm \
         (N processes open the database and read a key: ms until the last is ready, worst VM), then N readers \
         (Zipfian gets, 10 % 10-entry scans, every value checked) for {} s, {} times (ops/s: the sum of the VMs' \
         rates, whose runs overlap only as their unsynchronised scripts make them; median and range of the runs; p50: median; p99: worst VM, median of the runs). Read-only snapshot opens \
         (MDB_RDONLY | MDB_NOLOCK) in every way. Fleet PSS: the QEMU processes' peak, sampled every {} ms while \
         every VM's readers ran, after the private ways' source was dropped. PageTables growth and minor faults: \
         per VM, median, with the N readers alive. Ways: **private** (a copy per VM on tmpfs, huge=never; \
         copy-in charged), **private-thp** (tmpfs huge=always), **mshare-c** (one host copy, an ivshmem device \
         attached through msharefs, own page tables with 2 MiB entries), **mshare-b** (the same, page tables \
         shared). THP-mapped: the guest's ShmemPmdMapped + FilePmdMapped with the readers alive (mshare-c maps the \
         device's 2 MiB granules with PMD entries too, but as PFN mappings, which no counter shows). Fleet PSS includes \
         each VM's own baseline (its kernel, and QEMU's emulator state: translated code and the like), the same in \
         every way; QEMU runs with host THP off for its guest RAM, so that a VM counts the 4 KiB pages its guest \
         touched rather than whole 2 MiB pages around them.\n\nDatabases: {}\n\n",
        started.elapsed().as_secs_f64() / 60.0,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        p.seconds,
        p.repeats,
        SAMPLE_EVERY.as_millis(),
        built.join("; ")
    );
    for &size in &p.sizes_mib {
        report += &format!("## {size} MiB region\n\n{}\n", table(&rows, size));
    }
    report += &format!("## Anchors\n\n{}\n", anchors(&p, &rows));
    report += "Where this machine distorts: QEMU TCG emulates the guests' CPUs and K VMs x 2 vCPUs share 2 host \
               cores, so ops/s, latencies and storm times are emulation- and contention-bound (compare the ways \
               within a row, not with a real host), and TCG has no TLB cost to show for 2 MiB mappings; page-table \
               bytes, faults and host memory are what the ways really cost.\n";
    let json = json!({"rows": rows, "databases": built, "command": "make bench-dbtier"});
    write_bench_report("dbtier", &report, &json);
}
