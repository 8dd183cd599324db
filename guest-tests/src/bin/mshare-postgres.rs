//! mshare-postgres: PostgreSQL 15, unmodified, on mshare in the guest. Runs in the
//! PostgreSQL image (POSTGRES_INITRAMFS, images/scripts/postgres.sh): starts the server on
//! the image's cluster, as its postgres user, runs pgbench against it, and reads what the
//! server's memory is made of.
//!
//! ```text
//! mshare-postgres preload
//! mshare-postgres server [--way mshare|mmap] [--clients N] [--seconds S] [--shared-buffers SIZE]
//! ```
//! `preload`: the preload library's C test programs (guest-preload/c), a shared anonymous
//! mapping and a System V segment, each with forked workers counting under a futex, run
//! under `mshare run` (their segment must be an msharefs window, and both of a granule
//! and of a size that is not whole granules), then the library's refusals: `mshare run`
//! in the other mode, and the library itself in the other mode, without and with
//! MSHARE_FALLBACK=1.
//!
//! `server`: `--way mshare` (the default) starts the server under `mshare run`, so that its buffer
//! pool (one shared anonymous mapping) is an msharefs window; `--way mmap` starts it as
//! it is, on ordinary shared memory, where the window checks fail. Then `pgbench -S` with
//! N clients (default 4) for S seconds (default 5), and `pg_ctl stop -m fast`.
//!
//! Output: `mshare-postgres: ok|not ok N - what` lines, then `mshare-postgres: N checks,
//! F failed`; figures as `mshare-postgres: figure NAME=VALUE`; the server's log when a
//! check fails. Exit status 0 when every check passed, 1 otherwise, 2 bad usage.

use guest_tests::msharefs::SystemStats;
use guest_tests::suite::{eq, Suite};
use mshare_uapi::formats::parse_size;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The image's cluster and its owner (images/postgres/passwd).
const DATA: &str = "/var/lib/postgresql/data";
const POSTGRES_UID: u32 = 1000;
/// Where the server's socket is: in /run, which /init mounts afresh.
const SOCKET_DIR: &str = "/run/postgresql";
/// The server's output: its own file, which nothing else writes.
const SERVER_LOG: &str = "/tmp/postgres.log";
/// How long an emulated guest may take to start the server, and to stop it.
const START_TIMEOUT: Duration = Duration::from_secs(180);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

const USAGE: &str =
    "usage: mshare-postgres preload | server [--way mshare|mmap] [--clients N] [--seconds S] [--shared-buffers SIZE]";

/// How the server's shared memory is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Under `mshare run`: an msharefs region.
    Mshare,
    /// As it is: shared anonymous memory.
    Mmap,
}

#[derive(Debug)]
struct Options {
    way: Way,
    clients: u32,
    seconds: u32,
    shared_buffers_mib: u64,
}

fn options(args: &[String]) -> Result<Options, String> {
    let mut options = Options { way: Way::Mshare, clients: 4, seconds: 5, shared_buffers_mib: 64 };
    let mut rest = args;
    while let [flag, value, more @ ..] = rest {
        let number =
            || value.parse::<u32>().ok().filter(|&n| n > 0).ok_or(format!("{flag} {value}: expected a number above 0"));
        match flag.as_str() {
            "--way" => {
                options.way = match value.as_str() {
                    "mshare" => Way::Mshare,
                    "mmap" => Way::Mmap,
                    _ => return Err(format!("--way {value}: expected mshare or mmap")),
                }
            }
            "--clients" => options.clients = number()?,
            "--seconds" => options.seconds = number()?,
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
    if rest.is_empty() {
        Ok(options)
    } else {
        Err(format!("{}: expected a value", rest[0]))
    }
}

/// A command run as the cluster's owner, with an environment of its own.
fn as_postgres(program: &str) -> Command {
    let mut command = Command::new(program);
    command
        .uid(POSTGRES_UID)
        .gid(POSTGRES_UID)
        .env_clear()
        .env("PATH", format!("{PG_BIN}:/usr/bin:/bin"))
        .env("HOME", "/var/lib/postgresql")
        .env("LC_ALL", "C")
        .current_dir("/var/lib/postgresql");
    command
}

/// Waits up to `timeout` for `child` to end; its status, or `None` if it did not.
fn wait_for(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if start.elapsed() < timeout => sleep(Duration::from_millis(100)),
            _ => return None,
        }
    }
}

/// The running server: killed if dropped before it was stopped, so that nothing is left
/// running behind a failed check.
struct Server {
    postmaster: Child,
}

impl Server {
    fn start(options: &Options, mode: &str) -> Result<Self, String> {
        fs::create_dir_all(SOCKET_DIR).map_err(|e| format!("{SOCKET_DIR}: {e}"))?;
        std::os::unix::fs::chown(SOCKET_DIR, Some(POSTGRES_UID), Some(POSTGRES_UID))
            .map_err(|e| format!("chown {SOCKET_DIR}: {e}"))?;
        let log = File::create(SERVER_LOG).map_err(|e| format!("{SERVER_LOG}: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("{SERVER_LOG}: {e}"))?;
        let postgres = format!("{PG_BIN}/postgres");
        let mut command = match options.way {
            Way::Mshare => {
                let mut command = as_postgres("/usr/bin/mshare");
                command.args(["run", "--mode", mode, "--verbose", "--", &postgres]);
                command
            }
            Way::Mmap => as_postgres(&postgres),
        };
        // Every process but the backends starts with the server: no autovacuum (the image's
        // configuration), no logical replication launcher.
        command.args(["-D", DATA, "-c", "huge_pages=off", "-c", "log_connections=on"]);
        command.args(["-c", "max_logical_replication_workers=0"]);
        command.args(["-c", &format!("shared_buffers={}MB", options.shared_buffers_mib)]);
        command.args(["-c", &format!("max_connections={}", options.clients + 10)]);
        let postmaster = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("starting {postgres}: {e}"))?;
        let mut server = Self { postmaster };
        server.wait_ready()?;
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.postmaster.id()
    }

    /// Polls `pg_isready` until the server takes connections.
    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < START_TIMEOUT {
            if let Ok(Some(status)) = self.postmaster.try_wait() {
                return Err(format!("the server exited during startup ({status})"));
            }
            let ready = as_postgres(&format!("{PG_BIN}/pg_isready"))
                .args(["-q", "-h", SOCKET_DIR, "-U", "postgres", "-d", "postgres"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            sleep(Duration::from_millis(500));
        }
        Err(format!("the server took no connection within {} s", START_TIMEOUT.as_secs()))
    }

    /// `pg_ctl stop -m fast`, then the server's own exit status.
    fn stop(mut self) -> Result<(), String> {
        let pg_ctl = as_postgres(&format!("{PG_BIN}/pg_ctl"))
            .args(["stop", "-D", DATA, "-m", "fast", "-w", "-t", &STOP_TIMEOUT.as_secs().to_string()])
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        let status = wait_for(&mut self.postmaster, STOP_TIMEOUT);
        if !pg_ctl.status.success() {
            return Err(format!("pg_ctl stop: {}: {}", pg_ctl.status, String::from_utf8_lossy(&pg_ctl.stderr).trim()));
        }
        match status {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("the server exited with {status}")),
            None => Err(format!("the server did not exit within {} s of pg_ctl stop", STOP_TIMEOUT.as_secs())),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.postmaster.try_wait() {
            let _ = self.postmaster.kill();
            let _ = self.postmaster.wait();
        }
    }
}

/// The lines of `/proc/PID/maps` for msharefs windows.
fn windows_of(pid: u32) -> Vec<String> {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(" /sys/fs/mshare/"))
        .map(str::to_owned)
        .collect()
}

/// The Rss of `pid`'s msharefs window (smaps), once it has touched it: 0 before.
fn window_rss_kib(pid: u32) -> u64 {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut in_window = false;
    for line in smaps.lines() {
        if line.contains(" /sys/fs/mshare/") {
            in_window = true;
        } else if in_window {
            if let Some(kib) = line.strip_prefix("Rss:") {
                return kib.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            }
        }
    }
    0
}

/// Bytes a maps line's mapping spans.
fn span(line: &str) -> u64 {
    let range = line.split_whitespace().next().unwrap_or("");
    let (start, end) = range.split_once('-').unwrap_or(("0", "0"));
    let parse = |hex| u64::from_str_radix(hex, 16).unwrap_or(0);
    parse(end).saturating_sub(parse(start))
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| stat_field(*child, 4) == Some(u64::from(pid)))
        .collect()
}

/// Field `n` (1-based, as proc(5) counts) of `/proc/PID/stat`.
fn stat_field(pid: u32, n: usize) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold blanks and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(n - 3)?.parse().ok()
}

/// Lines of the server's log that hold `text`.
fn log_lines(text: &str) -> Vec<String> {
    fs::read_to_string(SERVER_LOG).unwrap_or_default().lines().filter(|l| l.contains(text)).map(str::to_owned).collect()
}

/// What pgbench reported.
#[derive(Debug)]
struct Pgbench {
    tps: f64,
    transactions: u64,
}

fn pgbench(options: &Options) -> Result<Pgbench, String> {
    let threads = options.clients.min(2).to_string();
    let out = as_postgres(&format!("{PG_BIN}/pgbench"))
        .args(["-S", "-n", "-c", &options.clients.to_string(), "-j", &threads])
        .args(["-T", &options.seconds.to_string(), "-h", SOCKET_DIR, "-U", "postgres", "postgres"])
        .output()
        .map_err(|e| format!("pgbench: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines().chain(String::from_utf8_lossy(&out.stderr).lines()) {
        println!("mshare-postgres: pgbench: {line}");
    }
    if !out.status.success() {
        return Err(format!("pgbench: {}", out.status));
    }
    let value = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
    };
    let failed = value("number of failed transactions:").ok_or("pgbench printed no failed-transaction count")?;
    if failed != "0" {
        return Err(format!("{failed} transactions failed"));
    }
    let transactions = value("number of transactions actually processed:")
        .and_then(|v| v.split('/').next()?.parse().ok())
        .ok_or("pgbench printed no transaction count")?;
    let tps = value("tps =").and_then(|v| v.parse().ok()).ok_or("pgbench printed no tps")?;
    Ok(Pgbench { tps, transactions })
}

fn server(options: &Options) -> ExitCode {
    let mut t = Suite::new("mshare-postgres");
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
    let server = match Server::start(options, &before.mode) {
        Ok(server) => server,
        Err(e) => {
            t.check("the server starts", Err(e));
            print_log();
            return t.finish();
        }
    };
    t.check("the server starts", Ok(()));
    for line in log_lines("mshare-preload[") {
        println!("mshare-postgres: server: {line}");
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
    let children = children_of(server.pid());
    t.check(
        &format!("and of each of its {} processes", children.len()),
        if children.is_empty() {
            Err("the postmaster has no children".to_owned())
        } else if postmaster_windows.is_empty() {
            Err("the postmaster has no window to share".to_owned())
        } else {
            children.iter().try_for_each(|&child| {
                eq(windows_of(child), postmaster_windows.clone()).map_err(|e| format!("process {child}: {e}"))
            })
        },
    );
    // The counts below are the backends' alone once every other server process has
    // touched the pool (the last of them may still be starting when the server is ready).
    let settled = Instant::now();
    let mut children = children;
    while !postmaster_windows.is_empty()
        && children.iter().any(|&child| window_rss_kib(child) == 0)
        && settled.elapsed() < START_TIMEOUT
    {
        sleep(Duration::from_millis(100));
        children = children_of(server.pid());
    }
    let stats = SystemStats::read().unwrap_or_default();
    let connections = log_lines("connection authorized:").len();
    let faults = stat_field(server.pid(), 11).unwrap_or(0);
    let bench = pgbench(options);
    // The backends' faults reach the postmaster's count of its children's as it reaps them.
    let reaped = Instant::now();
    while children_of(server.pid()).len() > children.len() && reaped.elapsed() < STOP_TIMEOUT {
        sleep(Duration::from_millis(100));
    }
    let backends = log_lines("connection authorized:").len() - connections;
    let backend_faults = stat_field(server.pid(), 11).unwrap_or(0).saturating_sub(faults);
    let after = SystemStats::read().unwrap_or_default();
    t.check(
        &format!("pgbench -S, {} clients for {} s: every transaction done", options.clients, options.seconds),
        bench.as_ref().map(|_| ()).map_err(String::clone),
    );
    if let Ok(bench) = &bench {
        println!("mshare-postgres: figure tps={:.1} transactions={}", bench.tps, bench.transactions);
    }
    println!(
        "mshare-postgres: figure backends={backends} minor_faults_per_backend={}",
        backend_faults.checked_div(backends as u64).unwrap_or(0)
    );
    let links = after.pmd_table_links - stats.pmd_table_links;
    let pte_links = after.table_links - stats.table_links;
    println!(
        "mshare-postgres: figure mode={} pmd_table_links={links} table_links={pte_links} pfn_faults={}",
        before.mode,
        after.pfn_faults - stats.pfn_faults
    );
    // Whatever the way: without the library, these fail.
    if before.shares_tables() {
        t.check(
            &format!(
                "mode B: each of the {backends} backends linked the pool's shared PMD table once, and no PTE table"
            ),
            eq((links, pte_links), (backends as u64, 0)),
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
        print_log();
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
        println!("mshare-postgres: | {line}");
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
    let mut t = Suite::new("mshare-postgres");
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

fn print_log() {
    for line in fs::read_to_string(SERVER_LOG).unwrap_or_default().lines() {
        println!("mshare-postgres: server log: {line}");
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((command, [])) if command == "preload" => preload(),
        Some((command, rest)) if command == "server" => match options(rest) {
            Ok(options) => server(&options),
            Err(e) => {
                eprintln!("mshare-postgres: {e}\n{USAGE}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
