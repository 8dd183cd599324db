//! PostgreSQL 15 in the guest's PostgreSQL image (images/scripts/postgres.sh): the server
//! on the image's cluster, run as its postgres user with its shared memory made one of
//! four ways, pgbench and psql against it, and what /proc says about its processes.

use mshare_uapi::preload::Mode;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The image's cluster and its owner (images/postgres/passwd).
pub const DATA: &str = "/var/lib/postgresql/data";
pub const POSTGRES_UID: u32 = 1000;
/// Where the server's socket is: in /run, which /init mounts afresh.
pub const SOCKET_DIR: &str = "/run/postgresql";
/// The server's output: its own file, which nothing else writes.
pub const SERVER_LOG: &str = "/tmp/postgres.log";
/// How long an emulated guest may take to start the server, and to stop it.
pub const START_TIMEOUT: Duration = Duration::from_secs(300);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(180);

/// How the server's shared memory (its buffer pool and the rest of its main segment) is
/// made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedMemory {
    /// As PostgreSQL makes it: shared anonymous memory, 4 KiB pages.
    Mmap,
    /// `huge_pages=on`: from the hugetlbfs pool, 2 MiB pages (the pool must hold it).
    HugePages,
    /// Under `mshare run --mode M`: an msharefs region.
    Mshare(Mode),
}

impl SharedMemory {
    /// The name benchmarks and options use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mmap => "mmap",
            Self::HugePages => "huge",
            Self::Mshare(Mode::C) => "mshare-c",
            Self::Mshare(Mode::B) => "mshare-b",
        }
    }

    /// The way called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Mmap, Self::HugePages, Self::Mshare(Mode::C), Self::Mshare(Mode::B)]
            .into_iter()
            .find(|w| w.name() == name)
    }
}

/// A command run as the cluster's owner, with an environment of its own.
pub fn as_postgres(program: &str) -> Command {
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
pub fn wait_for(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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
pub struct Server {
    postmaster: Child,
}

impl Server {
    /// Starts the server with `settings` (`-c name=value` each), its shared memory made
    /// `memory`'s way, and waits until it takes connections.
    pub fn start(memory: SharedMemory, settings: &[String]) -> Result<Self, String> {
        fs::create_dir_all(SOCKET_DIR).map_err(|e| format!("{SOCKET_DIR}: {e}"))?;
        std::os::unix::fs::chown(SOCKET_DIR, Some(POSTGRES_UID), Some(POSTGRES_UID))
            .map_err(|e| format!("chown {SOCKET_DIR}: {e}"))?;
        let log = File::create(SERVER_LOG).map_err(|e| format!("{SERVER_LOG}: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("{SERVER_LOG}: {e}"))?;
        let postgres = format!("{PG_BIN}/postgres");
        let mut command = match memory {
            SharedMemory::Mshare(mode) => {
                let mut command = as_postgres("/usr/bin/mshare");
                command.args(["run", "--mode", &mode.to_string(), "--verbose", "--", &postgres]);
                command
            }
            SharedMemory::Mmap | SharedMemory::HugePages => as_postgres(&postgres),
        };
        let huge = if memory == SharedMemory::HugePages { "huge_pages=on" } else { "huge_pages=off" };
        command.args(["-D", DATA, "-c", huge]);
        for setting in settings {
            command.args(["-c", setting]);
        }
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

    pub fn pid(&self) -> u32 {
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
    pub fn stop(mut self) -> Result<(), String> {
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

    /// The server's processes besides the backends, once each has touched the main segment
    /// of at least `pool_bytes` (the last of them may still be starting when the server
    /// takes connections): from then on, what the server's processes take (faults, page
    /// tables, links of shared tables) is the backends'.
    pub fn settled_processes(&self, pool_bytes: u64) -> Vec<u32> {
        let start = Instant::now();
        loop {
            let processes = children_of(self.pid());
            let untouched = processes.iter().any(|&pid| pool_touched_kib(pid, pool_bytes) == 0);
            if !untouched || start.elapsed() > START_TIMEOUT {
                return processes;
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the postmaster has at most `processes` children (its backends gone and
    /// reaped, their faults in its count of its children's).
    pub fn wait_for_children(&self, processes: usize) {
        let start = Instant::now();
        while children_of(self.pid()).len() > processes && start.elapsed() < STOP_TIMEOUT {
            sleep(Duration::from_millis(100));
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

/// Runs `sql` through psql against the postgres database; its output, or why not.
pub fn psql(sql: &str) -> Result<String, String> {
    let out = as_postgres(&format!("{PG_BIN}/psql"))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", SOCKET_DIR, "-U", "postgres", "-d", "postgres"])
        .args(["-c", sql])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("psql -c {sql:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// What pgbench reported.
#[derive(Debug, Clone, Default)]
pub struct PgbenchReport {
    pub tps: f64,
    pub transactions: u64,
    /// Milliseconds to open every client's connection (0 with `-C`, where each transaction
    /// opens its own).
    pub connect_ms: f64,
    /// Every line it printed.
    pub output: String,
}

/// Runs pgbench with `args` against the postgres database; its report once it finished
/// with no failed transaction, or why not.
pub fn pgbench(args: &[String]) -> Result<PgbenchReport, String> {
    let out = as_postgres(&format!("{PG_BIN}/pgbench"))
        .args(args)
        .args(["-h", SOCKET_DIR, "-U", "postgres", "postgres"])
        .output()
        .map_err(|e| format!("pgbench: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let output = stdout.clone() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("pgbench: {}: {}", out.status, output.trim()));
    }
    let value = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
    };
    let said = |what: &str| format!("pgbench {}: {what}; it printed:\n{}", args.join(" "), output.trim());
    let failed = value("number of failed transactions:").ok_or_else(|| said("no failed-transaction count"))?;
    if failed != "0" {
        return Err(said(&format!("{failed} transactions failed")));
    }
    let transactions = value("number of transactions actually processed:")
        .and_then(|v| v.split('/').next()?.parse().ok())
        .ok_or_else(|| said("no transaction count"))?;
    let tps = value("tps =").and_then(|v| v.parse().ok()).ok_or_else(|| said("no tps"))?;
    let connect_ms = value("initial connection time =").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    Ok(PgbenchReport { tps, transactions, connect_ms, output })
}

/// `pgbench -i` at `scale`: fills the database (pgbench's tables) anew.
pub fn pgbench_init(scale: u32) -> Result<(), String> {
    let out = as_postgres(&format!("{PG_BIN}/pgbench"))
        .args(["-i", "-q", "-s", &scale.to_string(), "-h", SOCKET_DIR, "-U", "postgres", "postgres"])
        .output()
        .map_err(|e| format!("pgbench -i: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("pgbench -i -s {scale}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The lines of `/proc/PID/maps` for msharefs windows.
pub fn windows_of(pid: u32) -> Vec<String> {
    live_windows(pid).unwrap_or_default()
}

/// [`windows_of`] a live process; `None` for one that maps nothing: gone, or exited and
/// not yet reaped (a backend whose client just left), whose maps are empty.
pub fn live_windows(pid: u32) -> Option<Vec<String>> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok().filter(|maps| !maps.is_empty())?;
    Some(maps.lines().filter(|line| line.contains(" /sys/fs/mshare/")).map(str::to_owned).collect())
}

/// What `pid` has touched of its largest shared mapping of at least `min_bytes` (the
/// server's main segment, whichever way it is made), KiB: its Rss, hugetlb pages included
/// (smaps counts those apart); 0 before it touched any.
pub fn pool_touched_kib(pid: u32, min_bytes: u64) -> u64 {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut in_pool = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let (first, second) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        if first.contains('-') && second.len() == 4 {
            // A mapping's first line: its range and permissions.
            if in_pool {
                break;
            }
            in_pool = second.ends_with('s') && span(line) >= min_bytes;
        } else if in_pool && matches!(first, "Rss:" | "Shared_Hugetlb:" | "Private_Hugetlb:") {
            kib += second.parse::<u64>().unwrap_or(0);
        }
    }
    kib
}

/// Bytes a maps line's mapping spans.
pub fn span(line: &str) -> u64 {
    let range = line.split_whitespace().next().unwrap_or("");
    let (start, end) = range.split_once('-').unwrap_or(("0", "0"));
    let parse = |hex| u64::from_str_radix(hex, 16).unwrap_or(0);
    parse(end).saturating_sub(parse(start))
}

/// The processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| stat_field(*child, 4) == Some(u64::from(pid)))
        .collect()
}

/// Field `n` (1-based, as proc(5) counts) of `/proc/PID/stat`.
pub fn stat_field(pid: u32, n: usize) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold blanks and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(n - 3)?.parse().ok()
}

/// Minor faults of `pid`'s children that it has reaped (proc(5)'s cminflt).
pub fn reaped_children_faults(pid: u32) -> u64 {
    stat_field(pid, 11).unwrap_or(0)
}

/// Lines of the server's log that hold `text`.
pub fn log_lines(text: &str) -> Vec<String> {
    fs::read_to_string(SERVER_LOG).unwrap_or_default().lines().filter(|l| l.contains(text)).map(str::to_owned).collect()
}

/// Prints the server's log, each line prefixed with `prefix`.
pub fn print_log(prefix: &str) {
    for line in fs::read_to_string(SERVER_LOG).unwrap_or_default().lines() {
        println!("{prefix}: server log: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ways_round_trip_through_their_names() {
        for way in
            [SharedMemory::Mmap, SharedMemory::HugePages, SharedMemory::Mshare(Mode::C), SharedMemory::Mshare(Mode::B)]
        {
            assert_eq!(SharedMemory::from_name(way.name()), Some(way));
        }
        assert_eq!(SharedMemory::from_name("mshare"), None);
    }

    #[test]
    fn a_maps_line_spans_its_range() {
        assert_eq!(span("7f2980000000-7f29c0000000 rw-s 00000000 00:13 1 /sys/fs/mshare/anon-1-0 (deleted)"), 1 << 30);
    }
}
