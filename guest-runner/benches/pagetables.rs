//! Page-table memory and faults in one guest: N processes map the same memory and touch
//! every page, five ways in the same boot: an mshare region whose PMD tables are shared
//! (mode B, a window of whole GiBs: 2 MiB leaves), the same region mapped so that its PTE
//! tables are shared (mode B, 4 KiB leaves), the same with huge mappings per process (mode
//! C, the module reloaded with `shared_tables=0`), a shared memfd (plain MAP_SHARED shmem,
//! each process its own tables) and hugetlbfs 2 MiB pages (which share PMD tables for
//! 1 GiB-aligned mappings of 1 GiB or more). Runs the guest's `mshare-bench` under QEMU TCG, each case
//! BENCH_REPEATS times, and writes target/bench/pagetables.md and pagetables.json: the
//! median of each figure with its range over the runs.
//!
//! `make bench-pagetables`; BENCH_PROCS (default "1 8 64 256"), BENCH_SIZES (default
//! "256M 1G") and BENCH_REPEATS (default 3) change the matrix (give the same ones with
//! BENCH_FROM_LOG=target/guest-logs/bench-pagetables.log to re-report an earlier run).

use guest_runner::console;
use guest_runner::images::{repo_root, write_bench_report, ImagePaths};
use guest_runner::qemu::{log_path, Boot};
use guest_runner::spread::Spread;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

/// The ways compared, as (label, `mshare-bench` way, module mode) in report order.
const WAYS: [(&str, &str, &str); 5] = [
    ("mshare B, PMD tables", "mshare-pmd", "B"),
    ("mshare B, PTE tables", "mshare-pte", "B"),
    ("mshare C", "mshare", "C"),
    ("memfd", "memfd", "-"),
    ("hugetlb", "hugetlb", "-"),
];
const FIGURES: [(&str, &str); 7] = [
    ("pagetables_kib", "PageTables growth (system-wide), KiB"),
    ("vmpte_kib", "VmPTE growth per process, KiB"),
    ("shared_tables_kib", "shared PTE and PMD tables (mode B), KiB"),
    ("residual_kib", "PageTables growth not explained by shared tables + N x VmPTE, KiB"),
    ("faults", "minor faults, all N"),
    ("ms_per_proc", "ms per process to map and touch"),
    ("ns_per_access", "ns per random 8-byte read, one process (under TCG: the emulator's cost, not the TLB's)"),
];
/// The upstream series' motivation: 1,500 processes sharing a 300 GiB SGA.
const SGA_PROCS: f64 = 1500.0;
const SGA_GIB: f64 = 300.0;

fn bytes(size: &str) -> u64 {
    mshare_uapi::formats::parse_size(size).unwrap_or_else(|| panic!("BENCH_SIZES: '{size}' is not a size like 256M"))
}

/// Boots the guest once and runs every case `repeats` times; returns its console and how
/// long it took.
fn measure(procs: &str, sizes: &str, repeats: usize) -> (String, String) {
    let images = ImagePaths::discover().unwrap_or_else(|e| panic!("{e}"));
    let mut boot = Boot::guest_image(&images).unwrap_or_else(|e| panic!("{e}"));
    boot.memory_mib = 3072;
    boot.timeout = Duration::from_secs(1800 * repeats as u64);
    boot.console_log = Some(log_path("bench-pagetables"));
    let script = format!(
        "set -e; for s in {sizes}; do for n in {procs}; do for w in mshare-pmd mshare-pte memfd hugetlb; do for r in $(seq {repeats}); do \
         mshare-bench $w $n $s; done; done; done; done; \
         umount /sys/fs/mshare; rmmod mshare; insmod /lib/modules/mshare.ko shared_tables=0; \
         mount -t msharefs msharefs /sys/fs/mshare; \
         for s in {sizes}; do for n in {procs}; do for r in $(seq {repeats}); do mshare-bench mshare $n $s; done; done; done"
    );
    boot.command = vec!["sh".into(), "-c".into(), script];
    eprintln!(
        "pagetables bench: booting the guest under QEMU TCG (2 vCPUs, 3 GiB); N in {{{procs}}}, sizes {{{sizes}}}, \
         {repeats} runs each"
    );
    let started = Instant::now();
    let run = boot.run_command().unwrap_or_else(|e| panic!("{e}"));
    let log = run.output.console_log.as_ref().map_or("-".into(), |p| p.display().to_string());
    assert_eq!(run.result.status, 0, "mshare-bench failed; console: {log}");
    (run.output.stdout, format!("{:.0} s in all", started.elapsed().as_secs_f64()))
}

fn main() {
    let procs = std::env::var("BENCH_PROCS").unwrap_or_else(|_| "1 8 64 256".into());
    let sizes = std::env::var("BENCH_SIZES").unwrap_or_else(|_| "256M 1G".into());
    let repeats: usize = std::env::var("BENCH_REPEATS").map_or(3, |r| r.parse().expect("BENCH_REPEATS: a number"));
    // BENCH_FROM_LOG: the report of an earlier run, from its console log (the figures are
    // its BENCH lines; nothing is measured again).
    let (console, duration) = match std::env::var("BENCH_FROM_LOG") {
        Ok(path) => {
            // Relative to the repository (cargo runs benchmarks in the package's directory).
            let text = std::fs::read_to_string(repo_root().join(&path))
                .unwrap_or_else(|e| panic!("BENCH_FROM_LOG {path}: {e}"));
            (text, format!("re-reported from the console log {path}"))
        }
        Err(_) => measure(&procs, &sizes, repeats),
    };
    let lines: Vec<&str> = console.lines().filter(|l| l.starts_with("BENCH ")).collect();
    let spread = |way: &str, mode: &str, n: &str, size: &str, key: &str| -> Option<Spread> {
        let values = lines
            .iter()
            .filter(|l| {
                console::field(l, "way") == Some(way)
                    && console::field(l, "mode") == Some(mode)
                    && console::field(l, "procs") == Some(n)
                    && console::field(l, "size") == Some(&bytes(size).to_string())
            })
            .map(|l| {
                console::field(l, key)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or_else(|| panic!("no number for {key} in {l}"))
            })
            .collect();
        Spread::of(values)
    };

    let mut report = format!(
        "# Page tables: N processes mapping shared memory and touching every page\n\n\
         Guest: Linux 7.3 with the core-mm patch under QEMU TCG (2 vCPUs, 3 GiB, 4-level paging), one boot, {repeats} \
         runs of each case ({duration}); each cell is the median, with the range over the runs when they differ. \
         Ways: **mshare B, PMD tables** (a window of whole GiBs at a GiB-aligned address, the region's size rounded up: \
         one PMD table per GiB for all processes, 2 MiB leaves, linked into each process's PUD entry with one fault per \
         process), **mshare B, PTE tables** (a window of the region's size at an address 2 MiB- but not 1 GiB-aligned: \
         one PTE table per 2 MiB for all processes, 4 KiB leaves, linked with one fault per process), **mshare C** (the module with `shared_tables=0`: one PMD leaf per 2 MiB per process), **memfd** \
         (plain MAP_SHARED shmem, 4 KiB pages), **hugetlb** (hugetlbfs 2 MiB pages; PMD tables shared for the 1 GiB-aligned \
         mappings of 1 GiB).\n\n\
         Figures, each the mapping's own (minus what the same N processes cost mapping nothing; docs/design.md, \"Measuring\"): \
         PageTables is the growth of /proc/meminfo's PageTables while all N live, system-wide (mshare B's shared tables in \
         it once) and so noisy (other page-table churn in the guest); VmPTE is each process's own page tables (exact, per \
         process); shared PTE tables are what the module holds (mshare_stats); the residual is PageTables growth minus \
         shared tables minus N x VmPTE, i.e. what the global counter adds over the exact figures. Differences are signed \
         and never clamped. Time is the mean wall time for a process to map and touch, all N running at once on 2 vCPUs.\n\n\
         What mshare B with PMD tables costs, exactly: one PMD table per GiB once (4 KiB: the shared tables column), and \
         nothing per process but a PUD table (4 KiB) when the window lands in 512 GiB of address space where the process \
         has none. What mshare B with PTE tables costs: its shared PTE tables once (one 4 KiB page per 2 MiB: 512 KiB for 256 MiB) plus, per \
         process, a PMD table (4 KiB) when the window lands in a GiB of address space where the process has none yet. A \
         256 MiB window is placed by the kernel near the process's other mappings, so whether it needs one varies from run to \
         run (VmPTE growth 0 or 4 KiB per process: where the 256 MiB rows have a range, this is it); mode C's PMD \
         leaves go in the same PMD tables. A 1 GiB window is 1 GiB-aligned and \
         always needs its own: 4 KiB per process. The residual column is what the global counter adds over these exact \
         figures; where page tables are shared outside mshare (hugetlb's PMD sharing at 1 GiB) it goes negative, since \
         each process's VmPTE counts the shared table and PageTables counts it once.\n",
    );
    let mut json_rows = Vec::new();
    for size in sizes.split_whitespace() {
        for (key, title) in FIGURES {
            report += &format!(
                "\n### {size}: {title}\n\n| N | {} |\n|---|{}\n",
                WAYS.map(|w| w.0).join(" | "),
                "---|".repeat(WAYS.len())
            );
            for n in procs.split_whitespace() {
                let cells =
                    WAYS.map(|(_, way, mode)| spread(way, mode, n, size, key).map_or("-".to_owned(), |s| s.cell()));
                report += &format!("| {n} | {} |\n", cells.join(" | "));
            }
        }
        for n in procs.split_whitespace() {
            for (label, way, mode) in WAYS {
                let mut row = Map::new();
                row.insert("way".into(), json!(label));
                row.insert("procs".into(), json!(n.parse::<u64>().unwrap_or(0)));
                row.insert("size_bytes".into(), json!(bytes(size)));
                for (key, _) in FIGURES {
                    if let Some(s) = spread(way, mode, n, size, key) {
                        row.insert(key.into(), json!(s.median));
                        row.insert(format!("{key}_min"), json!(s.min));
                        row.insert(format!("{key}_max"), json!(s.max));
                        row.insert("runs".into(), json!(s.runs));
                    }
                }
                if row.contains_key("runs") {
                    json_rows.push(Value::Object(row));
                }
            }
        }
    }

    // The anchor, from the exact figures of the largest case: per GiB mapped, what each
    // process pays on its own (VmPTE growth) and what mshare B's region pays once (its
    // shared tables), scaled to the SGA's shape.
    let largest = sizes.split_whitespace().last().unwrap_or("256M");
    let n_max = procs.split_whitespace().last().unwrap_or("1");
    let gib = bytes(largest) as f64 / (1u64 << 30) as f64;
    let per_gib = |way: &str, mode: &str, key: &str| spread(way, mode, n_max, largest, key).map(|s| s.median / gib);
    let kib_to_gib = |kib: f64| kib / (1u64 << 20) as f64;
    let memfd = per_gib("memfd", "-", "vmpte_kib").map(|k| kib_to_gib(k * SGA_GIB * SGA_PROCS));
    let sga = |way: &str| {
        per_gib(way, "B", "vmpte_kib")
            .zip(per_gib(way, "B", "shared_tables_kib"))
            .map(|(own, shared)| (own, shared, kib_to_gib(own * SGA_GIB * SGA_PROCS + shared * SGA_GIB)))
    };
    let mshare_b = sga("mshare-pte");
    let mshare_pmd = sga("mshare-pmd");
    report += &format!(
        "\n## Anchor: 1,500 processes over a 300 GiB SGA\n\n\
         The upstream series' motivation: about 880 GiB of PTEs. From the {largest} case at N = {n_max} here (medians): \
         each memfd process pays {} KiB of its own page tables per GiB mapped, so 1,500 x 300 GiB pay {}; mshare B with PTE \
         tables pays \
         {} KiB per GiB per process of its own plus {} KiB per GiB once for the shared tables, so {}. \
         (Computed as own KiB/GiB x 300 x 1,500 + shared KiB/GiB x 300, from VmPTE and mshare_stats.)\n\n\
         mshare B with PMD tables pays {} KiB per GiB per process of its own plus {} KiB per GiB once, so {}.\n\n\
         Where this machine distorts: QEMU TCG emulates the guest's CPUs, so times are 10-100x a real host's; \
         page-table bytes and fault counts do not depend on it. TLB reach cannot be measured here: QEMU's software TLB \
         caches 4 KiB translations whatever the guest's leaf size (2 MiB leaves and hugetlb's pages get no bigger \
         entries), and it has no TLB-miss counter; the ns-per-read figure shows the emulator's cost per access, the same \
         for every way up to noise, not what 2 MiB leaves save on hardware.\n",
        per_gib("memfd", "-", "vmpte_kib").map_or("-".into(), |k| format!("{k:.0}")),
        memfd.map_or("-".into(), |g| format!("{g:.0} GiB")),
        mshare_b.map_or("-".into(), |b| format!("{:.1}", b.0)),
        mshare_b.map_or("-".into(), |b| format!("{:.0}", b.1)),
        mshare_b.map_or("-".into(), |b| format!("{:.1} GiB", b.2)),
        mshare_pmd.map_or("-".into(), |b| format!("{:.1}", b.0)),
        mshare_pmd.map_or("-".into(), |b| format!("{:.0}", b.1)),
        mshare_pmd.map_or("-".into(), |b| format!("{:.1} MiB", b.2 * 1024.0)),
    );
    let machine = format!(
        "guest Linux 7.3 (core-mm patch) under QEMU TCG, 2 vCPUs, 3 GiB; host {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let anchor = json!({
        "memfd_gib": memfd,
        "mshare_b_gib": mshare_b.map(|b| b.2),
        "mshare_b_pmd_gib": mshare_pmd.map(|b| b.2),
        "from": format!("{largest} x {n_max}"),
    });
    let json = json!({ "machine": machine, "repeats": repeats, "rows": json_rows, "sga_anchor": anchor });
    write_bench_report("pagetables", &report, &json);
}
