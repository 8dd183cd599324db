//! Stage-2 tables shared between VMs (`make bench-stage2`): issue 18's figure.
//!
//! On the nested KVM host (QEMU TCG emulating AMD SVM; L1 is the host kernel with KVM_AMD
//! and the shared stage-2 patch, `images/kernel/host-patches/`), N tiny guests of one
//! `mshare-vmm launch` attach one 1 GiB region and each touch every 4 KiB page of it, then
//! print `T` and spin. The region's stage-2 entries are either each VM's own (`private`,
//! any KVM) or linked from one set of shared tables (`shared`: `stage2 = "shared"`). When
//! every guest has touched its pages, L1's SecPageTables (all of KVM's stage-2 tables) is
//! read; the VMs are then stopped and KVM's counters come from the VMM's statistics:
//! `pf_fixed` (stage-2 faults that mapped memory, summed over vCPUs) and
//! `stage2_shared_links`. A baseline case per N (the same VMs, region attached but not
//! touched) gives the tables of guest RAM, which are subtracted: `secpagetables_kib` is
//! what the region's mappings cost. Backings: memfd (4 KiB pages) and hugetlbfs 2 MiB.
//! Writes target/bench/stage2.json and target/bench/stage2.md.
//!
//! One run of each case: the figures are counts of tables and faults, the same in every
//! run (SecPageTables is a global counter: a few KiB either way is noise); times are nested
//! TCG's and not reported.

use guest_runner::console;
use guest_runner::images::{repo_root, ImagePaths};
use guest_runner::nested::NestedBoot;
use guest_runner::qemu::log_path;
use serde_json::Value;
use std::fmt::Write as _;
use vmm_testing::tiny::{bar2_address_into_rbx, print_marker, tiny_elf, touch_pages_from_rbx};

const NS: [usize; 4] = [1, 2, 4, 8];
/// The region: 1 GiB, 262,144 pages of 4 KiB.
const REGION_PAGES: u32 = 1 << 18;

/// A backing: its name in the report and its fleet-file keys.
struct Backing {
    name: &'static str,
    keys: &'static str,
    /// The granule a shared table maps, in pages: one stage-2 fault per VM per granule.
    granule_pages: u32,
}

const BACKINGS: [Backing; 2] = [
    Backing { name: "memfd 4K", keys: "", granule_pages: 512 },
    Backing { name: "hugetlbfs 2M", keys: "backing = \"hugetlbfs\"\npage_size = \"2M\"\n", granule_pages: 1 << 18 },
];

/// What the VMs of a case do with the region.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Attach it, touch nothing: the tables of guest RAM alone.
    Baseline,
    Private,
    Shared,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Baseline => "baseline",
            Way::Private => "private",
            Way::Shared => "shared",
        }
    }
}

/// The guest: touch every page of BAR2 (or none), print `T`, spin until stopped.
fn guest(pages: u32) -> Vec<u8> {
    let mut code = Vec::new();
    if pages > 0 {
        code.extend(bar2_address_into_rbx());
        code.extend(touch_pages_from_rbx(pages));
    }
    code.extend(print_marker(b'T'));
    code.extend([0xeb, 0xfe]); // jmp .
    code
}

fn fleet(backing: &Backing, n: usize, way: Way, case: &str) -> String {
    let stage2 = if way == Way::Shared { "stage2 = \"shared\"\n" } else { "" };
    let kernel = if way == Way::Baseline { "idle" } else { "touch" };
    let mut text = format!("[[region]]\nname = \"r\"\nsize = \"1G\"\n{}{stage2}\n", backing.keys);
    for v in 0..n {
        let _ = write!(
            text,
            "[[vm]]\nname = \"vm{v}\"\nkernel = \"/bench/{kernel}.elf\"\nmemory = \"64M\"\ntimeout = 3000\n\
             serial = \"/tmp/{case}-vm{v}.console\"\nregions = [{{ name = \"r\" }}]\n\n"
        );
    }
    text
}

/// The L1 script of one case: launch, wait for every guest's `T`, read SecPageTables, stop
/// the fleet, print the figures and the VMM's statistics. A case whose guests have not all
/// finished within 40 minutes is reported as stalled (several L2 VMs at once now and then
/// stop making progress under QEMU's SVM emulation: docs/vmm.md) and the next one runs.
fn case_script(case: &str, n: usize) -> String {
    // stat_refresh folds the per-CPU counter deltas into /proc/meminfo first: without it
    // SecPageTables lags by up to a few pages per CPU.
    format!(
        "echo 1 > /proc/sys/vm/stat_refresh\n\
         before=$(awk '/^SecPageTables:/ {{print $2}}' /proc/meminfo)\n\
         mshare-vmm -q launch /bench/{case}.toml --stats-json /tmp/{case}.json &\n\
         pid=$!\n\
         i=0\n\
         until [ \"$(cat /tmp/{case}-vm*.console 2>/dev/null | grep -c T)\" -ge {n} ]; do\n\
         \x20   i=$((i + 1)); [ $i -lt 12000 ] || break; sleep 0.2\n\
         done\n\
         if [ $i -ge 12000 ]; then kill -KILL $pid; wait $pid; echo STAGE2 case={case} stalled=1; else\n\
         echo 1 > /proc/sys/vm/stat_refresh\n\
         during=$(awk '/^SecPageTables:/ {{print $2}}' /proc/meminfo)\n\
         kill -TERM $pid; wait $pid\n\
         echo STAGE2 case={case} secpagetables_before_kib=$before secpagetables_kib=$during touch_s=$(( i / 5 ))\n\
         echo STATS-BEGIN {case}; tr -d '\\n ' < /tmp/{case}.json; echo; echo STATS-END {case}\n\
         fi\n"
    )
}

/// One case's figures.
#[derive(Clone, Copy)]
struct Measured {
    /// SecPageTables while the guests ran, minus before the fleet.
    tables_kib: i64,
    /// `pf_fixed`, all VMs.
    faults: u64,
    /// `stage2_shared_links`, all VMs.
    links: u64,
}

fn measured(console: &str, case: &str) -> Option<Measured> {
    let line = console.lines().find(|l| l.starts_with(&format!("STAGE2 case={case} ")))?;
    if console::field(line, "stalled").is_some() {
        return None;
    }
    let field = |key: &str| -> i64 {
        console::field(line, key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {key}= in {line}"))
    };
    let json = console
        .split(&format!("STATS-BEGIN {case}"))
        .nth(1)
        .and_then(|rest| rest.split(&format!("STATS-END {case}")).next())
        .unwrap_or_else(|| panic!("no statistics for {case}"));
    let stats: Value = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{case} statistics: {e}"));
    let sum = |group: &str, name: &str| -> u64 {
        stats["vms"].as_array().map_or(0, |vms| vms.iter().filter_map(|vm| vm[group][name].as_u64()).sum())
    };
    Some(Measured {
        tables_kib: field("secpagetables_kib") - field("secpagetables_before_kib"),
        faults: sum("kvm_vcpu_stats", "pf_fixed"),
        links: sum("kvm_stats", "stage2_shared_links"),
    })
}

/// A row of the report: a touching case, its baseline subtracted.
struct Row {
    backing: &'static str,
    granule_pages: u32,
    n: usize,
    way: Way,
    /// `None`: the case (or its baseline) stalled.
    figures: Option<(Measured, Measured)>,
}

fn main() {
    let images = ImagePaths::discover().unwrap_or_else(|e| panic!("guest images: {e}"));
    let mut boot = NestedBoot::new(&images).unwrap_or_else(|e| panic!("{e}"));
    boot.host.memory_mib = 5120;
    boot.host.timeout = std::time::Duration::from_secs(4 * 3600);
    boot.host.console_log = Some(log_path("bench-stage2"));
    boot.host.cmdline.extend(["hugepagesz=2M", "hugepages=640"].map(String::from));
    boot.add_host_file("/bench/touch.elf", 0o644, tiny_elf(&guest(REGION_PAGES)));
    boot.add_host_file("/bench/idle.elf", 0o644, tiny_elf(&guest(0)));
    let mut script = String::new();
    let mut cases = Vec::new();
    for backing in &BACKINGS {
        for n in NS {
            for way in [Way::Baseline, Way::Private, Way::Shared] {
                let case = format!("c{}", cases.len());
                boot.add_host_file(&format!("/bench/{case}.toml"), 0o644, fleet(backing, n, way, &case));
                script += &case_script(&case, n);
                cases.push((case, backing, n, way));
            }
        }
    }
    boot.script(&script);
    eprintln!("stage-2 bench (nested): {} cases on the nested KVM host", cases.len());
    let run = boot.run_retrying_early_crash().unwrap_or_else(|e| panic!("{e}"));
    let console = &run.host.output.console;
    assert_eq!(run.host.result.status, 0, "the nested host's script failed: {console}");
    let mut rows = Vec::new();
    let mut baseline = None;
    for (case, backing, n, way) in cases {
        let figures = measured(console, &case);
        if way == Way::Baseline {
            baseline = figures;
            continue;
        }
        let figures = figures.zip(baseline);
        rows.push(Row { backing: backing.name, granule_pages: backing.granule_pages, n, way, figures });
    }
    write_report(&rows, run.host.output.elapsed.as_secs_f64());
}

fn write_report(rows: &[Row], seconds: f64) {
    let mut table = String::new();
    let mut json_rows = Vec::new();
    for r in rows {
        let Some((case, base)) = r.figures else {
            let _ = writeln!(table, "| {} | {} | {} | stalled: not measured | | | |", r.backing, r.n, r.way.name());
            json_rows.push(serde_json::json!({
                "vms": r.n, "way": r.way.name(), "backing": r.backing, "stalled": true,
            }));
            continue;
        };
        let region_kib = case.tables_kib - base.tables_kib;
        let faults = case.faults.saturating_sub(base.faults);
        let granules = u64::from(REGION_PAGES / r.granule_pages);
        let _ = writeln!(
            table,
            "| {} | {} | {} | {region_kib} | {} | {faults} | {} | {} |",
            r.backing,
            r.n,
            r.way.name(),
            case.tables_kib,
            faults / r.n as u64,
            if r.way == Way::Shared {
                format!("{} ({granules} per VM expected)", case.links / r.n as u64)
            } else {
                "-".into()
            },
        );
        json_rows.push(serde_json::json!({
            "vms": r.n, "way": r.way.name(), "backing": r.backing,
            "secpagetables_kib": region_kib, "stage2_faults": faults,
            "secpagetables_total_kib": case.tables_kib, "baseline_kib": base.tables_kib,
            "stage2_shared_links": case.links,
        }));
    }
    let verdicts = verdicts(rows);
    let report = format!(
        "# Stage-2 tables shared between VMs (nested KVM host)\n\n\
         Machine: this host's QEMU TCG emulating AMD SVM with nested paging; in it the host kernel with KVM_AMD \
         and the shared stage-2 patch (2 vCPUs, 5 GiB, KASAN and lockdep on), running `mshare-vmm launch` of N \
         tiny guests (64 MiB RAM each) that attach one 1 GiB region and each touch every 4 KiB page of it. \
         private: each VM's own stage-2 entries; shared: `stage2 = \"shared\"`. region KiB: L1's SecPageTables \
         while every guest is alive, minus before the fleet, minus the same for N guests that touch nothing \
         (their RAM's tables); faults: KVM's `pf_fixed` of all N VMs, minus the untouched case's; links: \
         `stage2_shared_links` per VM. One run of each (counts, the same every run); {seconds:.0} s wall in all. \
         Command: `make bench-stage2`.\n\n\
         | backing | N VMs | way | region KiB | SecPageTables KiB, all | faults, all N | faults per VM | links per VM |\n\
         |---|---|---|---|---|---|---|---|\n{table}\n{verdicts}\n"
    );
    let json = serde_json::json!({ "rows": json_rows });
    let out = repo_root().join("target").join("bench");
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    std::fs::write(out.join("stage2.md"), &report).unwrap_or_else(|e| panic!("stage2.md: {e}"));
    std::fs::write(out.join("stage2.json"), serde_json::to_string_pretty(&json).unwrap_or_default() + "\n")
        .unwrap_or_else(|e| panic!("stage2.json: {e}"));
    println!("{report}");
}

/// The test, per backing: at the largest N, the shared way's region tables cost at
/// most 1.1x those at N = 1, and each VM took one fault per granule.
fn verdicts(rows: &[Row]) -> String {
    let mut text = String::new();
    for backing in &BACKINGS {
        let shared = |n: usize| {
            rows.iter().find(|r| r.backing == backing.name && r.n == n && r.way == Way::Shared).and_then(|r| r.figures)
        };
        let (Some((one, one_base)), Some((many, many_base))) = (shared(1), shared(NS[NS.len() - 1])) else {
            let _ = writeln!(text, "- {}: not judged (a case stalled)", backing.name);
            continue;
        };
        let n = NS[NS.len() - 1] as u64;
        let (kib_one, kib_many) = (one.tables_kib - one_base.tables_kib, many.tables_kib - many_base.tables_kib);
        let granules = u64::from(REGION_PAGES / backing.granule_pages);
        let faults_per_vm = many.faults.saturating_sub(many_base.faults) / n;
        let tables_ok = kib_one > 0 && kib_many * 10 <= kib_one * 11;
        let _ = writeln!(
            text,
            "- {}: N = {n} shared: region tables {kib_many} KiB against {kib_one} KiB at N = 1 ({:.3}x; {}), \
             {faults_per_vm} faults per VM for {granules} granules ({})",
            backing.name,
            kib_many as f64 / kib_one.max(1) as f64,
            if tables_ok { "within 1.1x" } else { "OVER 1.1x" },
            if faults_per_vm == granules { "one per granule" } else { "NOT one per granule" },
        );
    }
    text
}
