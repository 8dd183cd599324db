//! PostgreSQL 15, unmodified, four ways side by side in each run: its shared memory as
//! PostgreSQL makes it (**mmap**: shared anonymous memory, 4 KiB pages), from the
//! hugetlbfs pool (**huge**: `huge_pages=on`, the strong baseline), and on an msharefs
//! region under `mshare run` (**mshare-c**: the module's huge mappings per process;
//! **mshare-b**: page tables shared by every server process). The guest's
//! `mshare-postgres bench` fills the database (`pgbench -i` at BENCH_PG_SCALE), then for
//! each way starts the server with a buffer pool of BENCH_PG_SHARED_BUFFERS, prewarms it
//! (pg_prewarm) and for each N runs `pgbench -S` with N clients for BENCH_PG_SECONDS and a
//! connect storm (`pgbench -S -C`, a connection per transaction) for
//! BENCH_PG_STORM_SECONDS. BENCH_PG_RUNS boots, the ways in a different order in each.
//!
//! The figure the series' one published benchmark (PostgreSQL 15 on Linux 6.14, v2 of the
//! series, June 2025) reports are tps, the time to open N connections and minor faults;
//! this adds page tables (the growth of PageTables with N backends connected, per
//! backend, and each backend's own VmPTE).
//!
//! `make bench-postgres`; BENCH_PG_CLIENTS ("16 64 256 800"), BENCH_PG_SECONDS (10),
//! BENCH_PG_STORM_SECONDS (5), BENCH_PG_SHARED_BUFFERS ("1G"), BENCH_PG_SCALE (64),
//! BENCH_PG_MEMORY_MIB (6144), BENCH_PG_RUNS (3) and BENCH_PG_WAYS (all four) change it.
//! Writes target/bench/postgres.md and postgres.json.

use guest_runner::console;
use guest_runner::images::{write_bench_report, ImagePaths};
use guest_runner::qemu::{log_path, Boot};
use guest_runner::spread::Spread;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

/// The ways, as `mshare-postgres` names them, with the report's labels.
const WAYS: [(&str, &str); 4] =
    [("mmap", "mmap (4 KiB)"), ("huge", "huge_pages=on"), ("mshare-c", "mshare C"), ("mshare-b", "mshare B")];

/// The figures of each (way, N), with the report's titles; `true`: more is better.
const FIGURES: [(&str, &str, bool); 7] = [
    ("tps", "pgbench -S, transactions/s", true),
    ("connect_ms", "time to open the N connections, ms", false),
    ("storm_tps", "connect storm (pgbench -S -C: a connection per transaction), transactions/s", true),
    ("faults_per_backend", "minor faults per backend (steady run)", false),
    ("storm_faults_per_connection", "minor faults per connection (storm)", false),
    ("pagetables_per_backend_kib", "PageTables growth per connected backend, KiB", false),
    ("vmpte_per_backend_kib", "each backend's own page tables (VmPTE), KiB", false),
];

/// The anchor: the series' PostgreSQL figures (linux-mm, June 2025: 4-socket Xeon, 128 GB,
/// shared_buffers=32GB, scale 2000, `pgbench -S -j 64 -T 60`, no huge pages).
const ANCHOR: &str = "| clients | mmap (default): tps / time to connect | msharefs: tps / time to connect |\n\
|---|---|---|\n\
| 8,000 | 143-150k / ~4 s | ~189k / 3 s |\n\
| 16,000 | 130-140k / 50-70 s | ~189k / 6 s |\n\n\
and minor faults 256,302 with mmap against 34,304 with msharefs.\n";

struct Params {
    clients: Vec<u64>,
    seconds: u64,
    storm_seconds: u64,
    shared_buffers: String,
    scale: u64,
    memory_mib: u32,
    runs: usize,
    ways: Vec<String>,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn number(name: &str, default: &str) -> u64 {
    env_or(name, default).trim().parse().unwrap_or_else(|_| panic!("{name}: not a number"))
}

impl Params {
    fn from_env() -> Self {
        let ways: Vec<String> =
            env_or("BENCH_PG_WAYS", "mmap huge mshare-c mshare-b").split_whitespace().map(str::to_owned).collect();
        for way in &ways {
            assert!(
                WAYS.iter().any(|(w, _)| w == way),
                "BENCH_PG_WAYS: {way}: expected mmap, huge, mshare-c or mshare-b"
            );
        }
        Self {
            clients: env_or("BENCH_PG_CLIENTS", "16 64 256 800")
                .split_whitespace()
                .map(|n| n.parse().unwrap_or_else(|_| panic!("BENCH_PG_CLIENTS: {n}: not a number")))
                .collect(),
            seconds: number("BENCH_PG_SECONDS", "10"),
            storm_seconds: number("BENCH_PG_STORM_SECONDS", "5"),
            shared_buffers: env_or("BENCH_PG_SHARED_BUFFERS", "1G"),
            scale: number("BENCH_PG_SCALE", "64"),
            memory_mib: number("BENCH_PG_MEMORY_MIB", "6144") as u32,
            runs: number("BENCH_PG_RUNS", "3") as usize,
            ways,
        }
    }

    /// The guest command of run `run`: the ways rotated by it, so that no way always goes
    /// first (on a freshly filled database) or last.
    fn command(&self, run: usize) -> Vec<String> {
        let mut ways = self.ways.clone();
        let turn = run % ways.len().max(1);
        ways.rotate_left(turn);
        let clients: Vec<String> = self.clients.iter().map(u64::to_string).collect();
        [
            "mshare-postgres",
            "bench",
            "--ways",
            &ways.join(","),
            "--clients",
            &clients.join(","),
            "--seconds",
            &self.seconds.to_string(),
            "--storm-seconds",
            &self.storm_seconds.to_string(),
            "--shared-buffers",
            &self.shared_buffers,
            "--scale",
            &self.scale.to_string(),
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// Boots the PostgreSQL image once for run `run`; its output.
fn measure(images: &ImagePaths, params: &Params, run: usize) -> String {
    let mut boot = Boot::guest_image(images).unwrap_or_else(|e| panic!("{e}"));
    boot.initrd = Some(images.get("POSTGRES_INITRAMFS").unwrap_or_else(|e| panic!("{e}")).to_path_buf());
    boot.memory_mib = params.memory_mib;
    boot.timeout = Duration::from_secs(7200);
    boot.command = params.command(run);
    boot.console_log = Some(log_path(&format!("bench-postgres-{run}")));
    eprintln!("postgres bench: run {} of {}: {}", run + 1, params.runs, boot.command.join(" "));
    let started = Instant::now();
    let out = boot.run_command().unwrap_or_else(|e| panic!("{e}"));
    let stdout = out.output.stdout;
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("BENCH-FAILED")).collect();
    assert!(failed.is_empty() && out.result.status == 0, "run {run} failed: {failed:?}\n{stdout}");
    eprintln!("postgres bench: run {} took {:.0} s", run + 1, started.elapsed().as_secs_f64());
    stdout
}

fn main() {
    let params = Params::from_env();
    let images = ImagePaths::discover().unwrap_or_else(|e| panic!("guest images: {e}"));
    let started = Instant::now();
    let outputs: Vec<String> = (0..params.runs).map(|run| measure(&images, &params, run)).collect();
    let lines: Vec<&str> = outputs.iter().flat_map(|o| o.lines()).filter(|l| l.starts_with("BENCH ")).collect();
    let way_lines: Vec<&str> = outputs.iter().flat_map(|o| o.lines()).filter(|l| l.starts_with("BENCH-WAY ")).collect();
    let spread = |way: &str, clients: u64, key: &str| -> Option<Spread> {
        Spread::of(
            lines
                .iter()
                .filter(|l| {
                    console::field(l, "way") == Some(way) && console::field(l, "clients") == Some(&clients.to_string())
                })
                .filter_map(|l| console::field(l, key)?.parse::<f64>().ok())
                .collect(),
        )
    };
    let way_spread = |way: &str, key: &str| -> Option<Spread> {
        Spread::of(
            way_lines
                .iter()
                .filter(|l| console::field(l, "way") == Some(way))
                .filter_map(|l| console::field(l, key)?.parse::<f64>().ok())
                .collect(),
        )
    };
    let ways: Vec<(&str, &str)> = WAYS.iter().copied().filter(|(w, _)| params.ways.iter().any(|p| p == w)).collect();

    let mut report = format!(
        "# PostgreSQL on mshare: pgbench, four ways\n\n\
         PostgreSQL 15.18 (Debian), unmodified, in the PostgreSQL guest image under QEMU TCG (2 vCPUs, {} MiB; Linux 7.3 \
         with the core-mm patches), `shared_buffers={}`, pgbench scale {} (the database in the guest's RAM, prewarmed with \
         pg_prewarm), {} runs (a boot each, the ways in a rotated order); each cell is the median with the range over the \
         runs. pgbench -S for {} s per N, `-j 2`; the storm for {} s. {:.0} s in all. Command: `make bench-postgres`.\n\n\
         Times and rates are the emulator's: QEMU TCG runs guest code 10-100x slower than a real host, and a fault or a \
         context switch costs it more than a cached read does. Counts (faults, page tables) do not depend on it.\n\n",
        params.memory_mib,
        params.shared_buffers,
        params.scale,
        params.runs,
        params.seconds,
        params.storm_seconds,
        started.elapsed().as_secs_f64(),
    );
    report += "## The anchor: the series' one published benchmark\n\n";
    report += ANCHOR;
    report += "\nThis machine cannot hold thousands of backends; the largest N here is what the guest holds.\n";
    report += "\n## Starting the server\n\n| | ";
    report += &ways.iter().map(|(_, label)| *label).collect::<Vec<_>>().join(" | ");
    report += &format!(" |\n|---|{}\n", "---|".repeat(ways.len()));
    for (key, title) in
        [("start_s", "start, s"), ("prewarm_s", "prewarm, s"), ("pagetables_idle_kib", "PageTables prewarmed, KiB")]
    {
        let cells: Vec<String> =
            ways.iter().map(|(w, _)| way_spread(w, key).map_or("-".into(), |s| s.cell())).collect();
        report += &format!("| {title} | {} |\n", cells.join(" | "));
    }
    let mut rows = Vec::new();
    for (key, title, _) in FIGURES {
        report += &format!("\n## {title}\n\n| N | ");
        report += &ways.iter().map(|(_, label)| *label).collect::<Vec<_>>().join(" | ");
        report += &format!(" |\n|---|{}\n", "---|".repeat(ways.len()));
        for &n in &params.clients {
            let cells: Vec<String> =
                ways.iter().map(|(w, _)| spread(w, n, key).map_or("-".into(), |s| s.cell())).collect();
            report += &format!("| {n} | {} |\n", cells.join(" | "));
        }
    }
    report += "\n## mshare B against huge_pages=on\n\nWins and losses where the ranges over the runs do not overlap; a tie where they do.\n\n";
    for (key, title, more_is_better) in FIGURES {
        let verdicts: Vec<String> = params
            .clients
            .iter()
            .filter_map(|&n| {
                let (b, huge) = (spread("mshare-b", n, key)?, spread("huge", n, key)?);
                let better = if more_is_better { b.min > huge.max } else { b.max < huge.min };
                let worse = if more_is_better { b.max < huge.min } else { b.min > huge.max };
                let word = if better {
                    "wins"
                } else if worse {
                    "loses"
                } else {
                    "ties"
                };
                Some(format!("N={n}: {word} ({} against {})", b.cell(), huge.cell()))
            })
            .collect();
        if !verdicts.is_empty() {
            report += &format!("- {title}: {}.\n", verdicts.join("; "));
        }
    }
    for (way, _) in &ways {
        for &n in &params.clients {
            let mut row = Map::new();
            row.insert("way".into(), json!(way));
            row.insert("clients".into(), json!(n));
            for (key, _, _) in FIGURES {
                if let Some(s) = spread(way, n, key) {
                    row.insert(key.into(), json!(s.median));
                    row.insert(format!("{key}_min"), json!(s.min));
                    row.insert(format!("{key}_max"), json!(s.max));
                    row.insert("runs".into(), json!(s.runs));
                }
            }
            if row.contains_key("runs") {
                rows.push(Value::Object(row));
            }
        }
    }
    let json = json!({
        "guest_memory_mib": params.memory_mib,
        "shared_buffers": params.shared_buffers,
        "scale": params.scale,
        "seconds": params.seconds,
        "storm_seconds": params.storm_seconds,
        "runs": params.runs,
        "rows": rows,
    });
    write_bench_report("postgres", &report, &json);
}
