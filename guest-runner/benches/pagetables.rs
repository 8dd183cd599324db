//! Page-table memory and faults in one guest: N processes map the same memory and touch
//! every page, four ways in the same boot: an mshare region with page tables shared (mode
//! B), the same with a huge PFN mapping per process (mode C, the module reloaded with
//! `shared_tables=0`), a shared memfd (plain MAP_SHARED shmem, each process its own
//! tables) and hugetlbfs 2 MiB pages (which share PMD tables for 1 GiB-aligned mappings of
//! 1 GiB or more). Runs the guest's `mshare-bench` under QEMU TCG and writes
//! target/bench/pagetables.md and target/bench/pagetables.json.
//!
//! `make bench-pagetables`; BENCH_PROCS (default "1 8 64 256") and BENCH_SIZES (default
//! "256M 1G") change the matrix.

use guest_runner::console;
use guest_runner::images::{repo_root, ImagePaths};
use guest_runner::qemu::{log_path, Boot};
use std::time::{Duration, Instant};

/// The ways compared, as (label, `mshare-bench` way, module mode) in report order.
const WAYS: [(&str, &str, &str); 4] =
    [("mshare B", "mshare", "B"), ("mshare C", "mshare", "C"), ("memfd", "memfd", "-"), ("hugetlb", "hugetlb", "-")];
const FIGURES: [(&str, &str); 4] = [
    ("pagetables_kib", "PageTables growth, KiB"),
    ("vmpte_kib", "VmPTE growth per process, KiB"),
    ("faults", "minor faults, all N"),
    ("ms_per_proc", "ms per process to map and touch"),
];

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    console::field(line, key).unwrap_or("?")
}

fn bytes(size: &str) -> u64 {
    let (number, unit) = size.split_at(size.len() - 1);
    let shift = match unit {
        "G" => 30,
        "M" => 20,
        _ => panic!("BENCH_SIZES: '{size}' is not a number of M or G"),
    };
    number.parse::<u64>().unwrap_or_else(|_| panic!("BENCH_SIZES: '{size}'")) << shift
}

fn main() {
    let procs = std::env::var("BENCH_PROCS").unwrap_or_else(|_| "1 8 64 256".into());
    let sizes = std::env::var("BENCH_SIZES").unwrap_or_else(|_| "256M 1G".into());
    let images = ImagePaths::discover().unwrap_or_else(|e| panic!("{e}"));
    let mut boot = Boot::guest_image(&images).unwrap_or_else(|e| panic!("{e}"));
    boot.memory_mib = 3072;
    boot.timeout = Duration::from_secs(1800);
    boot.console_log = Some(log_path("bench-pagetables"));
    let script = format!(
        "set -e; for s in {sizes}; do for n in {procs}; do for w in mshare memfd hugetlb; do mshare-bench $w $n $s; done; done; done; \
         umount /sys/fs/mshare; rmmod mshare; insmod /lib/modules/mshare.ko shared_tables=0; \
         mount -t msharefs msharefs /sys/fs/mshare; \
         for s in {sizes}; do for n in {procs}; do mshare-bench mshare $n $s; done; done"
    );
    boot.command = vec!["sh".into(), "-c".into(), script];
    eprintln!(
        "pagetables bench: booting the guest under QEMU TCG (2 vCPUs, 3 GiB); N in {{{procs}}}, sizes {{{sizes}}}"
    );
    let started = Instant::now();
    let run = boot.run_command().unwrap_or_else(|e| panic!("{e}"));
    let log = run.output.console_log.as_ref().map_or("-".into(), |p| p.display().to_string());
    assert_eq!(run.result.status, 0, "mshare-bench failed; console: {log}");
    let lines: Vec<&str> = run.output.console.lines().filter(|l| l.starts_with("BENCH ")).collect();
    let find = |way: &str, mode: &str, n: &str, size: &str| {
        lines.iter().find(|l| {
            field(l, "way") == way
                && field(l, "mode") == mode
                && field(l, "procs") == n
                && field(l, "size") == bytes(size).to_string()
        })
    };

    let mut report = format!(
        "# Page tables: N processes mapping shared memory and touching every page\n\n\
         Guest: Linux 7.3 with the core-mm patch under QEMU TCG (2 vCPUs, 3 GiB, 4-level paging), one boot, one run \
         per figure ({:.0} s in all). Ways: **mshare B** (page tables shared: one PTE table per 2 MiB for all \
         processes, linked with one fault per process), **mshare C** (the module with `shared_tables=0`: one PMD \
         leaf per 2 MiB per process), **memfd** (plain MAP_SHARED shmem, 4 KiB pages), **hugetlb** (hugetlbfs 2 MiB \
         pages; PMD tables shared for the 1 GiB-aligned mappings of 1 GiB). PageTables is the growth of \
         /proc/meminfo's PageTables while all N live, minus what N processes mapping nothing cost (mshare B's \
         shared tables are in it, once); VmPTE growth is per process; faults are the minor faults of all N; each of \
         these minus what the same N processes cost mapping nothing (design.md, \"Measuring\"); time is the mean wall time for a process to map and touch, all N running at once on \
         2 vCPUs.\n",
        started.elapsed().as_secs_f64()
    );
    let mut json = Vec::new();
    for size in sizes.split_whitespace() {
        for (key, title) in FIGURES {
            report += &format!(
                "\n### {size}: {title}\n\n| N | {} |\n|---|{}\n",
                WAYS.map(|w| w.0).join(" | "),
                "---|".repeat(WAYS.len())
            );
            for n in procs.split_whitespace() {
                let cells = WAYS.map(|(_, way, mode)| find(way, mode, n, size).map_or("-", |l| field(l, key)));
                report += &format!("| {n} | {} |\n", cells.join(" | "));
            }
        }
        for n in procs.split_whitespace() {
            for (label, way, mode) in WAYS {
                if let Some(line) = find(way, mode, n, size) {
                    let figures = FIGURES
                        .map(|(key, _)| {
                            let value = field(line, key);
                            let number = value.parse::<f64>().map_or("null".to_owned(), |_| value.to_owned());
                            format!("\"{key}\": {number}")
                        })
                        .join(", ");
                    json.push(format!(
                        "  {{\"way\": \"{label}\", \"procs\": {n}, \"size_bytes\": {}, {figures}}}",
                        bytes(size)
                    ));
                }
            }
        }
    }
    let largest = sizes.split_whitespace().last().unwrap_or("256M");
    let n_max = procs.split_whitespace().last().unwrap_or("1");
    let per_proc = |way: &str, mode: &str| {
        find(way, mode, n_max, largest)
            .and_then(|l| field(l, "pagetables_kib").parse::<f64>().ok())
            .map(|kib| kib / n_max.parse::<f64>().unwrap_or(1.0) / (bytes(largest) as f64 / (1u64 << 30) as f64))
    };
    // The series' motivation: 1,500 processes over a 300 GiB SGA. Scaled from what one
    // process costs per GiB here (PageTables growth / N / GiB), mshare B's shared tables
    // counted once for the SGA (2 MiB per GiB) rather than per process.
    let memfd_kib = per_proc("memfd", "-");
    let b_kib = per_proc("mshare", "B");
    report += &format!(
        "\n## Anchor: 1,500 processes over a 300 GiB SGA\n\n\
         The upstream series' motivation: about 880 GiB of PTEs. At the memfd rate measured here ({} KiB per GiB per \
         process) that is {}; with mshare B, 300 GiB x 2 MiB of shared PTE tables once ({:.1} GiB) plus each \
         process's PMD entries (4 KiB per GiB per process: {:.1} GiB) is {:.1} GiB.\n\n\
         Where this machine distorts: QEMU TCG emulates the guest's CPUs, so times are 10-100x a real host's; \
         page-table bytes and fault counts do not depend on it.\n",
        memfd_kib.map_or("-".into(), |k| format!("{k:.0}")),
        memfd_kib.map_or("-".into(), |k| format!("{:.0} GiB", k * 300.0 * 1500.0 / (1u64 << 20) as f64)),
        300.0 * 2.0 / 1024.0,
        300.0 * 4.0 * 1500.0 / (1u64 << 20) as f64,
        300.0 * 2.0 / 1024.0 + 300.0 * 4.0 * 1500.0 / (1u64 << 20) as f64,
    );
    if let Some(kib) = b_kib {
        report += &format!("mshare B's measured PageTables growth at N={n_max}, {largest}: {kib:.1} KiB per GiB per process (shared tables included).\n");
    }
    let out = repo_root().join("target").join("bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("pagetables.md"), &report).unwrap();
    let machine = format!(
        "guest Linux 7.3 (core-mm patch) under QEMU TCG, 2 vCPUs, 3 GiB; host {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    std::fs::write(
        out.join("pagetables.json"),
        format!("{{\n\"machine\": \"{machine}\",\n\"rows\": [\n{}\n]\n}}\n", json.join(",\n")),
    )
    .unwrap();
    println!("{report}");
}
