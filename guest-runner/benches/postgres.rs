//! PostgreSQL 15, unmodified, four ways side by side in each run: its shared memory as
//! PostgreSQL makes it (**mmap**: shared anonymous memory, 4 KiB pages), from the
//! hugetlbfs pool (**huge**: `huge_pages=on`, the strong baseline), and on an msharefs
//! region under `mshare run` (**mshare-c**: the module's huge mappings per process;
//! **mshare-b**: page tables shared by every server process). The guest's
//! `mshare-postgres bench` fills the database (`pgbench -i` at BENCH_PG_SCALE), then for
//! each way starts the server with a buffer pool of BENCH_PG_SHARED_BUFFERS, prewarms it
//! (pg_prewarm) and for each N runs `pgbench -S` with N clients for BENCH_PG_SECONDS and a
//! connect storm (`pgbench -S -C`, a connection per transaction) for
//! BENCH_PG_STORM_SECONDS. BENCH_PG_RUNS boots, the ways in a different order in each
//! (guest_runner::postgres_bench). The first half of `make bench-postgres`; the second
//! runs the same under `mshare-vmm` on the nested KVM host (vmm/benches/postgres_nested.rs).
//!
//! BENCH_PG_CLIENTS ("16 64 256 800"), BENCH_PG_SECONDS (10), BENCH_PG_STORM_SECONDS (5),
//! BENCH_PG_SHARED_BUFFERS ("1G"), BENCH_PG_SCALE (64), BENCH_PG_MEMORY_MIB (6144),
//! BENCH_PG_RUNS (3) and BENCH_PG_WAYS (all four) change it; BENCH_PG_FROM_LOGS (the runs'
//! target/guest-logs/bench-postgres-R.ttyS1.log) re-reports earlier runs. Writes
//! target/bench/postgres.md and postgres.json.

use guest_runner::images::{repo_root, write_bench_report, ImagePaths};
use guest_runner::postgres_bench::{self, env_number, Case, ANCHOR};
use guest_runner::qemu::{log_path, Boot};
use serde_json::json;
use std::time::{Duration, Instant};

/// Boots the PostgreSQL image once for run `run`; its output.
fn measure(images: &ImagePaths, case: &Case, memory_mib: u32, run: usize, runs: usize) -> String {
    let mut boot = Boot::guest_image(images).unwrap_or_else(|e| panic!("{e}"));
    boot.initrd = Some(images.get("POSTGRES_INITRAMFS").unwrap_or_else(|e| panic!("{e}")).to_path_buf());
    boot.memory_mib = memory_mib;
    boot.timeout = Duration::from_secs(7200);
    boot.command = case.command(run);
    boot.console_log = Some(log_path(&format!("bench-postgres-{run}")));
    eprintln!("postgres bench: run {} of {runs}: {}", run + 1, boot.command.join(" "));
    let started = Instant::now();
    let out = boot.run_command().unwrap_or_else(|e| panic!("{e}"));
    postgres_bench::check_run(&out.output.stdout, out.result.status, &format!("run {}", run + 1));
    eprintln!("postgres bench: run {} took {:.0} s", run + 1, started.elapsed().as_secs_f64());
    out.output.stdout
}

fn main() {
    let case = Case::from_env(
        "BENCH_PG",
        &Case {
            ways: postgres_bench::ways("mmap huge mshare-c mshare-b"),
            clients: vec![16, 64, 256, 800],
            seconds: 10,
            storm_seconds: 5,
            shared_buffers: "1G".to_owned(),
            scale: 64,
        },
    );
    let memory_mib = env_number("BENCH_PG_MEMORY_MIB", "6144") as u32;
    let runs = env_number("BENCH_PG_RUNS", "3") as usize;
    let started = Instant::now();
    // BENCH_PG_FROM_LOGS: the guest outputs of earlier runs (their ttyS1 logs, relative to
    // the repository), re-reported with the same settings; nothing is measured again.
    let from_logs = std::env::var("BENCH_PG_FROM_LOGS").ok();
    let outputs: Vec<String> = match &from_logs {
        Some(paths) => paths
            .split_whitespace()
            .map(|p| {
                std::fs::read_to_string(repo_root().join(p)).unwrap_or_else(|e| panic!("BENCH_PG_FROM_LOGS {p}: {e}"))
            })
            .collect(),
        None => {
            let images = ImagePaths::discover().unwrap_or_else(|e| panic!("guest images: {e}"));
            (0..runs).map(|run| measure(&images, &case, memory_mib, run, runs)).collect()
        }
    };
    let runs = outputs.len();
    let took = match &from_logs {
        Some(paths) => format!("Re-reported from the runs' logs ({paths})"),
        None => format!("{:.0} min in all", started.elapsed().as_secs_f64() / 60.0),
    };
    let (tables, rows) = postgres_bench::report(&case, &outputs);
    let report = format!(
        "# PostgreSQL on mshare: pgbench, four ways\n\n\
         PostgreSQL 15.18 (Debian), unmodified, in the PostgreSQL guest image under QEMU TCG (2 vCPUs, {memory_mib} MiB; \
         Linux 7.3 with the core-mm patches), `shared_buffers={}`, pgbench scale {} (the database in the guest's RAM, \
         prewarmed with pg_prewarm), {runs} runs (a boot each, the ways in a rotated order); each cell is the median with \
         the range over the runs. `pgbench -S -j 2` for {} s of transactions per N; the storm for {} s. {took}. \
         Command: `make bench-postgres` (its first half).\n\n\
         Times and rates are the emulator's: QEMU TCG runs guest code 10-100x slower than a real host, and a fault, a \
         fork or a context switch costs it far more than a cached read does. Counts (faults, page tables) do not depend \
         on it.\n\n\
         ## The anchor: the series' one published benchmark\n\n{ANCHOR}\n\
         This guest holds {} clients at most; the anchor's 8,000 and 16,000 are out of its reach.\n\n{tables}",
        case.shared_buffers,
        case.scale,
        case.seconds,
        case.storm_seconds,
        case.clients.iter().max().unwrap_or(&0),
    );
    let json = json!({
        "machine": "QEMU TCG", "guest_memory_mib": memory_mib, "shared_buffers": case.shared_buffers,
        "scale": case.scale, "seconds": case.seconds, "storm_seconds": case.storm_seconds, "runs": runs, "rows": rows,
    });
    write_bench_report("postgres", &report, &json);
}
