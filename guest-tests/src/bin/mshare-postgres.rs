//! mshare-postgres: PostgreSQL 15, unmodified, on mshare in the guest. Runs in the
//! PostgreSQL image (POSTGRES_INITRAMFS, images/scripts/postgres.sh): starts the server on
//! the image's cluster, as its postgres user, runs pgbench against it, and reads what the
//! server's memory is made of (guest_tests::postgres).
//!
//! ```text
//! mshare-postgres preload
//! mshare-postgres server [--way mshare|mmap] [--clients N] [--seconds S] [--shared-buffers SIZE]
//! mshare-postgres bench [--ways W,W...] [--clients N,N...] [--seconds S] [--storm-seconds S]
//!                       [--shared-buffers SIZE] [--scale N]
//! ```
//! `preload`: the preload library's C test programs (guest-preload/c), a shared anonymous
//! mapping and a System V segment, each with forked workers counting under a futex, run
//! under `mshare run` (their segment must be an msharefs window, and both of a granule
//! and of a size that is not whole granules), then the library's refusals: `mshare run`
//! in the other mode, and the library itself in the other mode, without and with
//! MSHARE_FALLBACK=1.
//!
//! `server`: `--way mshare` (the default) starts the server under `mshare run`, in the
//! module's mode, so that its buffer pool (one shared anonymous mapping) is an msharefs
//! window; `--way mmap` starts it as it is, on ordinary shared memory, where the window
//! checks fail. Then `pgbench -S` with N clients (default 4) for S seconds (default 5),
//! and `pg_ctl stop -m fast`.
//!
//! `bench`: `pgbench -i` at the scale given, then for each way (mmap, huge, mshare-c,
//! mshare-b; the module is reloaded in the way's mode, the hugetlbfs pool sized for the
//! server) the server with the buffer pool given, prewarmed (pg_prewarm), and for each N:
//! `pgbench -S` with N clients (tps, the time to open the N connections, the server's
//! minor faults per backend, PageTables and each backend's VmPTE sampled while they run),
//! then a connect storm (`pgbench -S -C`: a connection per transaction). One `BENCH` line
//! of `name=value` figures per way and N.
//!
//! Output: `mshare-postgres: ok|not ok N - what` lines, then `mshare-postgres: N checks,
//! F failed`; figures as `mshare-postgres: figure NAME=VALUE`; the server's log when a
//! check fails. Exit status 0 when every check passed, 1 otherwise, 2 bad usage.

use guest_tests::msharefs::SystemStats;
use guest_tests::postgres::{
    children_of, live_windows, log_lines, pgbench, pgbench_init, print_log, psql, reaped_children_faults, span,
    windows_of, PgbenchReport, Server, SharedMemory, DATA, PG_BIN,
};
use guest_tests::suite::{eq, Suite};
use guest_tests::{meminfo_kib, settled_pagetables_kib};
use mshare_uapi::formats::parse_size;
use mshare_uapi::preload::Mode;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: mshare-postgres preload | server [--way mshare|mmap] [--clients N] [--seconds S] [--shared-buffers SIZE] | bench [--ways W,W...] [--clients N,N...] [--seconds S] [--storm-seconds S] [--shared-buffers SIZE] [--scale N]";
const PROGRAM: &str = "mshare-postgres";

/// Options of `server` and `bench`.
#[derive(Debug)]
struct Options {
    /// `server`'s way: under `mshare run` or not.
    mshare: bool,
    ways: Vec<SharedMemory>,
    clients: Vec<u32>,
    seconds: u32,
    storm_seconds: u32,
    shared_buffers_mib: u64,
    scale: u32,
}

fn options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        mshare: true,
        ways: vec![
            SharedMemory::Mmap,
            SharedMemory::HugePages,
            SharedMemory::Mshare(Mode::C),
            SharedMemory::Mshare(Mode::B),
        ],
        clients: vec![4],
        seconds: 5,
        storm_seconds: 5,
        shared_buffers_mib: 64,
        scale: 1,
    };
    let mut rest = args;
    while let [flag, value, more @ ..] = rest {
        let number = |text: &str| {
            text.parse::<u32>().ok().filter(|&n| n > 0).ok_or(format!("{flag} {value}: expected numbers above 0"))
        };
        match flag.as_str() {
            "--way" => {
                options.mshare = match value.as_str() {
                    "mshare" => true,
                    "mmap" => false,
                    _ => return Err(format!("--way {value}: expected mshare or mmap")),
                }
            }
            "--ways" => {
                options.ways = value
                    .split(',')
                    .map(|w| {
                        SharedMemory::from_name(w)
                            .ok_or(format!("--ways: {w}: expected mmap, huge, mshare-c or mshare-b"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--clients" => options.clients = value.split(',').map(number).collect::<Result<_, _>>()?,
            "--seconds" => options.seconds = number(value)?,
            "--storm-seconds" => options.storm_seconds = number(value)?,
            "--scale" => options.scale = number(value)?,
            "--shared-buffers" => {
                options.shared_buffers_mib = parse_size(value)
                    .filter(|&b| b >= 1 << 20)
                    .map(|b| b >> 20)
                    .ok_or(format!("--shared-buffers {value}: expected a size of at least 1M"))?
            }
            _ => return Err(format!("unknown option {flag}")),
        }
        rest = more;
    }
    match rest {
        [] => Ok(options),
        [flag, ..] => Err(format!("{flag}: expected a value")),
    }
}

fn max_clients(options: &Options) -> u32 {
    options.clients.iter().copied().max().unwrap_or(1)
}

/// The server settings every run shares: every process but the backends starts with the
/// server (no autovacuum in the image's configuration, no logical replication launcher),
/// and each backend says when it connected.
fn settings(options: &Options) -> Vec<String> {
    vec![
        format!("shared_buffers={}MB", options.shared_buffers_mib),
        format!("max_connections={}", max_clients(options) + 10),
        "max_logical_replication_workers=0".to_owned(),
        "log_connections=on".to_owned(),
    ]
}

fn server(options: &Options) -> ExitCode {
    let mut t = Suite::new(PROGRAM);
    if !std::path::Path::new(&format!("{PG_BIN}/postgres")).is_file() {
        t.check("PostgreSQL is in this image", Err("boot the PostgreSQL image (POSTGRES_INITRAMFS)".to_owned()));
        return t.finish();
    }
    let before = match SystemStats::read() {
        Ok(stats) => stats,
        Err(e) => {
            t.check("mshare.ko is loaded", Err(format!("/sys/fs/mshare/mshare_stats: {e}")));
            return t.finish();
        }
    };
    let memory = match (options.mshare, before.shares_tables()) {
        (false, _) => SharedMemory::Mmap,
        (true, true) => SharedMemory::Mshare(Mode::B),
        (true, false) => SharedMemory::Mshare(Mode::C),
    };
    let server = match Server::start(memory, &settings(options)) {
        Ok(server) => server,
        Err(e) => {
            t.check("the server starts", Err(e));
            print_log(PROGRAM);
            return t.finish();
        }
    };
    t.check("the server starts", Ok(()));
    for line in log_lines("mshare-preload[") {
        println!("{PROGRAM}: server: {line}");
    }
    let pool = options.shared_buffers_mib << 20;
    let postmaster_windows = windows_of(server.pid());
    t.check(
        "the buffer pool is an msharefs window of the postmaster",
        match postmaster_windows.as_slice() {
            [window] if span(window) >= pool => Ok(()),
            [] => Err("no msharefs window in /proc/PID/maps".to_owned()),
            windows => Err(format!("windows {windows:?}, want one of at least {pool} bytes")),
        },
    );
    let processes = server.settled_processes(pool);
    t.check(
        &format!("and of each of its {} processes", processes.len()),
        if processes.is_empty() {
            Err("the postmaster has no children".to_owned())
        } else if postmaster_windows.is_empty() {
            Err("the postmaster has no window to share".to_owned())
        } else {
            processes.iter().try_for_each(|&pid| {
                eq(windows_of(pid), postmaster_windows.clone()).map_err(|e| format!("process {pid}: {e}"))
            })
        },
    );
    let stats = SystemStats::read().unwrap_or_default();
    let clients = max_clients(options);
    let args =
        ["-S", "-n", "-c", &clients.to_string(), "-j", &clients.min(2).to_string(), "-T", &options.seconds.to_string()];
    let run = measured_run(&server, &processes, &args.map(str::to_owned));
    t.check(
        "a backend serving pgbench maps the same window",
        match run.sample.first_backend {
            Some((pid, windows)) if !postmaster_windows.is_empty() => {
                eq(windows, postmaster_windows.clone()).map_err(|e| format!("backend {pid}: {e}"))
            }
            Some(_) => Err("the postmaster has no window to share".to_owned()),
            None => Err("no backend seen while pgbench ran".to_owned()),
        },
    );
    let (bench, backends, backend_faults) = (run.report, run.backends, run.faults);
    let after = SystemStats::read().unwrap_or_default();
    if let Ok(report) = &bench {
        for line in report.output.lines() {
            println!("{PROGRAM}: pgbench: {line}");
        }
    }
    t.check(
        &format!("pgbench -S, {clients} clients for {} s: every transaction done", options.seconds),
        bench.as_ref().map(|_| ()).map_err(String::clone),
    );
    if let Ok(report) = &bench {
        println!("{PROGRAM}: figure tps={:.1} transactions={}", report.tps, report.transactions);
    }
    println!(
        "{PROGRAM}: figure backends={backends} minor_faults_per_backend={}",
        backend_faults.checked_div(backends).unwrap_or(0)
    );
    let links = after.pmd_table_links - stats.pmd_table_links;
    let pte_links = after.table_links - stats.table_links;
    println!(
        "{PROGRAM}: figure mode={} pmd_table_links={links} table_links={pte_links} pfn_faults={}",
        before.mode,
        after.pfn_faults - stats.pfn_faults
    );
    // Whatever the way: without the library, these fail.
    if before.shares_tables() {
        t.check(
            &format!(
                "mode B: each of the {backends} backends linked the pool's shared PMD table once, and no PTE table"
            ),
            eq((links, pte_links), (backends, 0)),
        );
    } else {
        t.check(
            "mode C: the backends' pool faults were the module's",
            if after.pfn_faults > stats.pfn_faults { Ok(()) } else { Err("no fault".to_owned()) },
        );
    }
    t.check("pg_ctl stop -m fast: the server exits 0", server.stop());
    t.check(
        "the server says it shut down",
        if log_lines("database system is shut down").is_empty() { Err("no such line".to_owned()) } else { Ok(()) },
    );
    let end = SystemStats::read().unwrap_or_default();
    t.check(
        "the region went with the server (regions, windows, memory as before it started)",
        eq((end.regions, end.windows, end.memory_bytes), (before.regions, before.windows, before.memory_bytes)),
    );
    let bad: Vec<String> =
        ["PANIC", "terminated by signal", "cannot move"].iter().flat_map(|text| log_lines(text)).collect();
    t.check(
        "the server's log has no PANIC, crash or refusal",
        if bad.is_empty() { Ok(()) } else { Err(bad.join(" | ")) },
    );
    if t.failed() > 0 {
        print_log(PROGRAM);
    }
    t.finish()
}

/// A program's run: status code (`None`: killed), stdout, stderr.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let out = Command::new(program).args(args).envs(env.iter().copied()).output();
    let ran = match out {
        Ok(out) => Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Err(e) => Ran { code: None, stdout: String::new(), stderr: format!("{program}: {e}") },
    };
    for line in ran.stdout.lines().chain(ran.stderr.lines()) {
        println!("{PROGRAM}: | {line}");
    }
    ran
}

/// Checks a counter program's run: exit 0, its "ok" line, its segment on msharefs or not.
fn counted(ran: &Ran, program: &str, on_msharefs: bool) -> Result<(), String> {
    let segment = ran.stdout.lines().find(|l| l.starts_with(&format!("{program}: segment ")));
    let is_window = segment.is_some_and(|l| l.contains(" /sys/fs/mshare/"));
    if ran.code != Some(0) || !ran.stdout.lines().any(|l| l.starts_with(&format!("{program}: ok "))) {
        Err(format!("exit {:?}, no ok line", ran.code))
    } else if is_window != on_msharefs {
        Err(format!("segment {segment:?}, on msharefs: want {on_msharefs}"))
    } else {
        Ok(())
    }
}

fn preload() -> ExitCode {
    let mut t = Suite::new(PROGRAM);
    let mode = match SystemStats::read() {
        Ok(stats) => stats.mode,
        Err(e) => {
            t.check("mshare.ko is loaded", Err(format!("/sys/fs/mshare/mshare_stats: {e}")));
            return t.finish();
        }
    };
    let other = if mode == "B" { "C" } else { "B" };
    let mshare_run = |program: &str, args: &[&str]| {
        let mut all = vec!["run", "--mode", mode.as_str(), "--", program];
        all.extend_from_slice(args);
        run("/usr/bin/mshare", &all, &[])
    };
    // 63 MiB: not whole granules, so munmap must take the window's hidden rest too.
    for size in ["64", "63"] {
        let ran = mshare_run("shm-anon-counter", &[size, "4", "2000"]);
        t.check(
            &format!("shared anonymous memory of {size} MiB moves; 4 workers count under a futex; munmap takes it all"),
            counted(&ran, "shm-anon-counter", true),
        );
    }
    let ran = mshare_run("shm-sysv-counter", &["63", "4", "2000"]);
    t.check(
        "a System V segment of 63 MiB moves; 4 workers attach it by key and count; IPC_STAT and IPC_RMID hold",
        counted(&ran, "shm-sysv-counter", true),
    );
    let ran = mshare_run("shm-anon-counter", &["1", "2", "100"]);
    t.check("1 MiB, under the threshold, stays ordinary", counted(&ran, "shm-anon-counter", false));
    let ran = run("/usr/bin/mshare", &["run", "--mode", other, "--", "shm-anon-counter", "8", "2", "10"], &[]);
    t.check(
        &format!("mshare run --mode {other} in mode {mode} refuses to start the program (exit 1, says why)"),
        if ran.code == Some(1) && ran.stderr.contains("but the module is in mode") && ran.stdout.is_empty() {
            Ok(())
        } else {
            Err(format!("exit {:?}", ran.code))
        },
    );
    let library = mshare_uapi::preload::LIBRARY_PATH;
    let env = [("LD_PRELOAD", library), ("MSHARE_MODE", other)];
    let ran = run("/usr/bin/shm-anon-counter", &["8", "2", "10"], &env);
    t.check(
        "the library in the other mode: the mmap fails (EINVAL), and stderr says why",
        if ran.code == Some(1) && ran.stderr.contains("cannot move") && ran.stderr.contains("Invalid argument") {
            Ok(())
        } else {
            Err(format!("exit {:?}", ran.code))
        },
    );
    let env = [("LD_PRELOAD", library), ("MSHARE_MODE", other), ("MSHARE_FALLBACK", "1")];
    let ran = run("/usr/bin/shm-anon-counter", &["8", "2", "10"], &env);
    t.check(
        "and with MSHARE_FALLBACK=1 the memory stays ordinary, said on stderr",
        counted(&ran, "shm-anon-counter", false).and_then(|()| {
            if ran.stderr.contains("stays ordinary (MSHARE_FALLBACK=1)") {
                Ok(())
            } else {
                Err("no line on stderr".to_owned())
            }
        }),
    );
    let stats = SystemStats::read().unwrap_or_default();
    t.check("no region or window left behind", eq((stats.regions, stats.windows), (0, 0)));
    t.finish()
}

/// Runs a command of /init's busybox; why not, if it failed.
fn sh(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}: {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Loads mshare.ko in `mode` (unloading it first if it is in the other), msharefs mounted
/// as /init mounts it.
fn load_module(mode: Mode) -> Result<(), String> {
    if SystemStats::read().is_ok_and(|stats| stats.is_mode(mode)) {
        return Ok(());
    }
    if SystemStats::read().is_ok() {
        sh("umount", &["/sys/fs/mshare"])?;
        sh("rmmod", &["mshare"])?;
    }
    sh("insmod", &["/lib/modules/mshare.ko", &format!("shared_tables={}", mode.shared_tables())])?;
    sh("mount", &["-t", "msharefs", "msharefs", "/sys/fs/mshare"])?;
    sh("chmod", &["0666", "/dev/mshare"])?;
    match SystemStats::read() {
        Ok(stats) if stats.is_mode(mode) => Ok(()),
        Ok(stats) => Err(format!("mshare.ko loaded in mode {}, not {mode}", stats.mode)),
        Err(e) => Err(format!("mshare.ko: {e}")),
    }
}

/// Sizes the hugetlbfs pool to `pages` 2 MiB pages; an error if the kernel gives fewer.
fn huge_pages(pages: u64) -> Result<(), String> {
    std::fs::write("/proc/sys/vm/nr_hugepages", pages.to_string()).map_err(|e| format!("nr_hugepages: {e}"))?;
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("HugePages_Total:").and_then(|v| v.trim().parse().ok())))
        .unwrap_or(0u64);
    if total == pages {
        Ok(())
    } else {
        Err(format!("asked for {pages} huge pages, the kernel has {total}"))
    }
}

/// The huge pages the server needs (its own count: `postgres -C
/// shared_memory_size_in_huge_pages`).
fn server_huge_pages(settings: &[String]) -> Result<u64, String> {
    let mut command = guest_tests::postgres::as_postgres(&format!("{PG_BIN}/postgres"));
    command.args(["-D", DATA, "-C", "shared_memory_size_in_huge_pages"]);
    for setting in settings {
        command.args(["-c", setting]);
    }
    let out = command.output().map_err(|e| format!("postgres -C: {e}"))?;
    String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| {
        format!("postgres -C shared_memory_size_in_huge_pages: {}", String::from_utf8_lossy(&out.stderr).trim())
    })
}

/// What is sampled while pgbench runs: the most page tables the guest had, each
/// backend's own (VmPTE) when the most backends were there, and the windows of the first
/// backend seen.
#[derive(Debug, Default)]
struct Sample {
    pagetables_peak_kib: u64,
    backends: u64,
    vmpte_kib: u64,
    first_backend: Option<(u32, Vec<String>)>,
}

/// Samples the postmaster's backends (its children but `others`) until `running` is false.
fn sample_while(running: &AtomicBool, postmaster: u32, others: &[u32]) -> Sample {
    let mut sample = Sample::default();
    while running.load(Ordering::Relaxed) {
        sample.pagetables_peak_kib = sample.pagetables_peak_kib.max(meminfo_kib("PageTables:"));
        let backends: Vec<u32> = children_of(postmaster).into_iter().filter(|pid| !others.contains(pid)).collect();
        if sample.first_backend.is_none() {
            sample.first_backend = backends.iter().find_map(|&pid| live_windows(pid).map(|windows| (pid, windows)));
        }
        if backends.len() as u64 > sample.backends {
            sample.backends = backends.len() as u64;
            sample.vmpte_kib = backends.iter().map(|&pid| guest_tests::status_kib_of(pid, "VmPTE:")).sum();
        }
        thread::sleep(Duration::from_millis(200));
    }
    sample
}

/// One pgbench run against the server and what the server took for it.
struct Measured {
    report: Result<PgbenchReport, String>,
    /// The backends it started (from the log).
    backends: u64,
    /// Their minor faults.
    faults: u64,
    sample: Sample,
}

/// Runs pgbench with `args` against the server, whose processes besides the backends are
/// `others`, and measures it.
fn measured_run(server: &Server, others: &[u32], args: &[String]) -> Measured {
    let connections = log_lines("connection authorized:").len();
    let faults = reaped_children_faults(server.pid());
    let running = AtomicBool::new(true);
    let (report, sample) = thread::scope(|scope| {
        let sampler = scope.spawn(|| sample_while(&running, server.pid(), others));
        let report = pgbench(args);
        running.store(false, Ordering::Relaxed);
        (report, sampler.join().unwrap_or_default())
    });
    server.wait_for_children(others.len());
    Measured {
        report,
        backends: (log_lines("connection authorized:").len() - connections) as u64,
        faults: reaped_children_faults(server.pid()).saturating_sub(faults),
        sample,
    }
}

/// One way of the benchmark: the server made that way, prewarmed, then each N.
fn bench_way(memory: SharedMemory, options: &Options) -> Result<(), String> {
    match memory {
        SharedMemory::Mshare(mode) => load_module(mode)?,
        SharedMemory::HugePages => huge_pages(server_huge_pages(&settings(options))?)?,
        SharedMemory::Mmap => {}
    }
    let started = Instant::now();
    let server = Server::start(memory, &settings(options))?;
    let start_s = started.elapsed().as_secs_f64();
    let prewarm = Instant::now();
    psql("SELECT pg_prewarm('pgbench_accounts'), pg_prewarm('pgbench_accounts_pkey'), pg_prewarm('pgbench_branches'), pg_prewarm('pgbench_tellers')")?;
    let prewarm_s = prewarm.elapsed().as_secs_f64();
    let pool = options.shared_buffers_mib << 20;
    let others = server.settled_processes(pool);
    let idle_kib = settled_pagetables_kib();
    let on_msharefs = !windows_of(server.pid()).is_empty();
    println!(
        "BENCH-WAY way={} start_s={start_s:.2} prewarm_s={prewarm_s:.2} pagetables_idle_kib={idle_kib} on_msharefs={}",
        memory.name(),
        u8::from(on_msharefs)
    );
    for &clients in &options.clients {
        let threads = clients.min(2).to_string();
        // pgbench's clock runs while its clients connect, tens of ms each under emulation:
        // the run is longer by that, so that about `seconds` are left for transactions (its
        // tps leaves the connecting out).
        let duration = options.seconds + clients / 40;
        let steady = ["-S", "-n", "-c", &clients.to_string(), "-j", &threads, "-T", &duration.to_string()];
        let run = measured_run(&server, &others, &steady.map(str::to_owned));
        let (report, backends, faults, sample) = (run.report?, run.backends, run.faults, run.sample);
        let storm =
            ["-S", "-n", "-C", "-c", &clients.to_string(), "-j", &threads, "-T", &options.storm_seconds.to_string()];
        let storm_run = measured_run(&server, &others, &storm.map(str::to_owned));
        let (storm, connections, storm_faults) = (storm_run.report?, storm_run.backends, storm_run.faults);
        let per = |total: u64, n: u64| total as f64 / n.max(1) as f64;
        println!(
            "BENCH way={} clients={clients} tps={:.1} connect_ms={:.1} storm_tps={:.1} backends={backends} \
             faults_per_backend={:.0} storm_connections={connections} storm_faults_per_connection={:.0} \
             pagetables_idle_kib={idle_kib} pagetables_peak_kib={} pagetables_per_backend_kib={:.1} \
             sampled_backends={} vmpte_per_backend_kib={:.1}",
            memory.name(),
            report.tps,
            report.connect_ms,
            storm.tps,
            per(faults, backends),
            per(storm_faults, connections),
            sample.pagetables_peak_kib,
            per(sample.pagetables_peak_kib.saturating_sub(idle_kib), u64::from(clients)),
            sample.backends,
            per(sample.vmpte_kib, sample.backends),
        );
    }
    server.stop()?;
    if memory == SharedMemory::HugePages {
        huge_pages(0)?;
    }
    Ok(())
}

fn bench(options: &Options) -> ExitCode {
    let init = Instant::now();
    // Loading writes no WAL for the tables it makes (wal_level=minimal), and checkpoints
    // only when it is done.
    let mut loading = settings(options);
    loading.extend(["wal_level=minimal", "max_wal_senders=0", "max_wal_size=4GB"].map(str::to_owned));
    let loaded = Server::start(SharedMemory::Mmap, &loading).and_then(|server| {
        pgbench_init(options.scale)?;
        server.stop()
    });
    if let Err(e) = loaded {
        println!("BENCH-FAILED step=init: {e}");
        print_log(PROGRAM);
        return ExitCode::FAILURE;
    }
    println!("BENCH-INIT scale={} seconds={:.1}", options.scale, init.elapsed().as_secs_f64());
    for &way in &options.ways {
        if let Err(e) = bench_way(way, options) {
            println!("BENCH-FAILED way={}: {e}", way.name());
            print_log(PROGRAM);
            return ExitCode::FAILURE;
        }
    }
    println!("BENCH-DONE");
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = |rest: &[String], run: fn(&Options) -> ExitCode| match options(rest) {
        Ok(options) => run(&options),
        Err(e) => {
            eprintln!("{PROGRAM}: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    };
    match args.split_first() {
        Some((command, [])) if command == "preload" => preload(),
        Some((command, rest)) if command == "server" => parsed(rest, server),
        Some((command, rest)) if command == "bench" => parsed(rest, bench),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
