//! PostgreSQL's benchmark (guest-tests' `mshare-postgres bench`), as both halves of
//! `make bench-postgres` run and report it: under QEMU TCG (guest-runner/benches/postgres.rs)
//! and under `mshare-vmm` on the nested KVM host (vmm/benches/postgres_nested.rs). The
//! guest prints a `BENCH-WAY` line per way and a `BENCH` line per way and N, each of
//! `name=value` figures; this reads them back over the runs.

use crate::console;
use crate::spread::Spread;
use serde_json::{json, Map, Value};

/// The ways, as `mshare-postgres` names them, with the report's labels.
pub const WAYS: [(&str, &str); 4] =
    [("mmap", "mmap (4 KiB)"), ("huge", "huge_pages=on"), ("mshare-c", "mshare C"), ("mshare-b", "mshare B")];

/// The figures of each (way, N), with the report's titles; `true`: more is better.
pub const FIGURES: [(&str, &str, bool); 7] = [
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
pub const ANCHOR: &str = "| clients | mmap (default): tps / time to connect | msharefs: tps / time to connect |\n\
|---|---|---|\n\
| 8,000 | 143-150k / ~4 s | ~189k / 3 s |\n\
| 16,000 | 130-140k / 50-70 s | ~189k / 6 s |\n\n\
and minor faults 256,302 with mmap against 34,304 with msharefs.\n";

/// What one benchmark run asks of the guest.
#[derive(Debug, Clone)]
pub struct Case {
    pub ways: Vec<String>,
    pub clients: Vec<u64>,
    pub seconds: u64,
    pub storm_seconds: u64,
    pub shared_buffers: String,
    pub scale: u64,
}

impl Case {
    /// `default`, with what the environment gives: `{prefix}_CLIENTS` (blank-separated),
    /// `{prefix}_SECONDS`, `{prefix}_STORM_SECONDS`, `{prefix}_SHARED_BUFFERS`,
    /// `{prefix}_SCALE`, and the ways from BENCH_PG_WAYS (both halves alike).
    pub fn from_env(prefix: &str, default: &Case) -> Case {
        let name = |what: &str| format!("{prefix}_{what}");
        let text = |what: &str, default: String| env_or(&name(what), &default);
        let number = |what: &str, default: u64| env_number(&name(what), &default.to_string());
        let clients: Vec<String> = default.clients.iter().map(u64::to_string).collect();
        Case {
            ways: ways(&env_or("BENCH_PG_WAYS", &default.ways.join(" "))),
            clients: env_numbers(&name("CLIENTS"), &clients.join(" ")),
            seconds: number("SECONDS", default.seconds),
            storm_seconds: number("STORM_SECONDS", default.storm_seconds),
            shared_buffers: text("SHARED_BUFFERS", default.shared_buffers.clone()),
            scale: number("SCALE", default.scale),
        }
    }

    /// The guest command of run `run`: the ways rotated by it, so that no way always goes
    /// first (on a freshly filled database) or last.
    pub fn command(&self, run: usize) -> Vec<String> {
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

/// The environment variable `name`, or `default`.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The number in environment variable `name` (or `default`); panics naming it if it is not
/// one.
pub fn env_number(name: &str, default: &str) -> u64 {
    env_or(name, default).trim().parse().unwrap_or_else(|_| panic!("{name}: not a number"))
}

/// The numbers in environment variable `name` (or `default`), blank-separated.
pub fn env_numbers(name: &str, default: &str) -> Vec<u64> {
    env_or(name, default)
        .split_whitespace()
        .map(|n| n.parse().unwrap_or_else(|_| panic!("{name}: {n}: not a number")))
        .collect()
}

/// Reads the ways named by BENCH_PG_WAYS-style `text`; panics naming a way that is not one.
pub fn ways(text: &str) -> Vec<String> {
    let ways: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    for way in &ways {
        assert!(WAYS.iter().any(|(w, _)| w == way), "{way}: expected mmap, huge, mshare-c or mshare-b");
    }
    ways
}

/// The runs' figures: the tables of the report (after its caller's introduction) and the
/// JSON rows.
pub fn report(case: &Case, outputs: &[String]) -> (String, Vec<Value>) {
    let lines: Vec<&str> = outputs.iter().flat_map(|o| o.lines()).filter(|l| l.starts_with("BENCH ")).collect();
    let way_lines: Vec<&str> = outputs.iter().flat_map(|o| o.lines()).filter(|l| l.starts_with("BENCH-WAY ")).collect();
    let values = |lines: &[&str], way: &str, clients: Option<u64>, key: &str| -> Option<Spread> {
        Spread::of(
            lines
                .iter()
                .filter(|l| console::field(l, "way") == Some(way))
                .filter(|l| clients.is_none_or(|n| console::field(l, "clients") == Some(&n.to_string())))
                .filter_map(|l| console::field(l, key)?.parse::<f64>().ok())
                .collect(),
        )
    };
    let spread = |way: &str, n: u64, key: &str| values(&lines, way, Some(n), key);
    let ways: Vec<(&str, &str)> = WAYS.iter().copied().filter(|(w, _)| case.ways.iter().any(|p| p == w)).collect();
    let header = |first: &str| {
        format!(
            "| {first} | {} |\n|---|{}\n",
            ways.iter().map(|(_, label)| *label).collect::<Vec<_>>().join(" | "),
            "---|".repeat(ways.len())
        )
    };
    let mut text = String::from("## Starting the server\n\n");
    text += &header("");
    for (key, title) in
        [("start_s", "start, s"), ("prewarm_s", "prewarm, s"), ("pagetables_idle_kib", "PageTables prewarmed, KiB")]
    {
        let cells: Vec<String> =
            ways.iter().map(|(w, _)| values(&way_lines, w, None, key).map_or("-".into(), |s| s.cell())).collect();
        text += &format!("| {title} | {} |\n", cells.join(" | "));
    }
    for (key, title, _) in FIGURES {
        text += &format!("\n## {title}\n\n");
        text += &header("N");
        for &n in &case.clients {
            let cells: Vec<String> =
                ways.iter().map(|(w, _)| spread(w, n, key).map_or("-".into(), |s| s.cell())).collect();
            text += &format!("| {n} | {} |\n", cells.join(" | "));
        }
    }
    text += "\n## mshare B against huge_pages=on\n\nA win or a loss where the ranges over the runs do not overlap, a tie where they do.\n\n";
    for (key, title, more_is_better) in FIGURES {
        let verdicts: Vec<String> = case
            .clients
            .iter()
            .filter_map(|&n| {
                let (b, huge) = (spread("mshare-b", n, key)?, spread("huge", n, key)?);
                if b.runs < 2 || huge.runs < 2 {
                    return Some(format!("N={n} one run, no verdict ({} against {})", b.cell(), huge.cell()));
                }
                let better = if more_is_better { b.min > huge.max } else { b.max < huge.min };
                let worse = if more_is_better { b.max < huge.min } else { b.min > huge.max };
                let word = if better {
                    "wins"
                } else if worse {
                    "loses"
                } else {
                    "ties"
                };
                Some(format!("N={n} {word} ({} against {})", b.cell(), huge.cell()))
            })
            .collect();
        if !verdicts.is_empty() {
            text += &format!("- {title}: {}.\n", verdicts.join("; "));
        }
    }
    let mut rows = Vec::new();
    for (way, _) in &ways {
        for &n in &case.clients {
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
    (text, rows)
}

/// Fails with the guest's lines when a run did not finish its benchmark.
pub fn check_run(output: &str, status: i32, what: &str) {
    let failed: Vec<&str> = output.lines().filter(|l| l.starts_with("BENCH-FAILED")).collect();
    assert!(
        failed.is_empty() && status == 0 && output.lines().any(|l| l == "BENCH-DONE"),
        "{what} failed (status {status}): {failed:?}\n{output}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case() -> Case {
        Case {
            ways: ways("mmap huge mshare-b"),
            clients: vec![16],
            seconds: 10,
            storm_seconds: 5,
            shared_buffers: "1G".into(),
            scale: 64,
        }
    }

    #[test]
    fn each_run_rotates_the_ways() {
        let c = case();
        assert_eq!(c.command(0)[3], "mmap,huge,mshare-b");
        assert_eq!(c.command(1)[3], "huge,mshare-b,mmap");
        assert_eq!(c.command(3)[3], "mmap,huge,mshare-b");
    }

    #[test]
    fn verdicts_need_ranges_that_do_not_overlap() {
        let run = |b_tps: u32, huge_tps: u32| {
            format!(
                "BENCH-WAY way=mshare-b start_s=1\nBENCH way=mshare-b clients=16 tps={b_tps} faults_per_backend=700\n\
                 BENCH way=huge clients=16 tps={huge_tps} faults_per_backend=700\nBENCH-DONE\n"
            )
        };
        let (text, rows) = report(&case(), &[run(110, 100), run(120, 105)]);
        assert!(
            text.contains("- pgbench -S, transactions/s: N=16 wins (115 (110 to 120) against 102.5 (100 to 105))."),
            "{text}"
        );
        assert!(text.contains("- minor faults per backend (steady run): N=16 ties"), "{text}");
        assert_eq!(rows.len(), 2, "mmap has no figures: no row");
        let (text, _) = report(&case(), &[run(100, 110), run(104, 120)]);
        assert!(text.contains("N=16 loses"), "{text}");
        let (text, _) = report(&case(), &[run(100, 110)]);
        assert!(text.contains("N=16 one run, no verdict (100 against 110)"), "{text}");
    }
}
