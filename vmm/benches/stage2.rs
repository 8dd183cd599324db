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
//! TCG's and not reported. A fleet in which QEMU's SVM emulation lost a guest's state
//! (docs/vmm.md) is launched again (`fleet_case::script`), and the report says how many
//! fleets each case took.

mod fleet_case;

use guest_runner::images::{write_bench_report, ImagePaths};
use guest_runner::nested::NestedBoot;
use guest_runner::qemu::log_path;
use std::fmt::Write as _;
use vmm_testing::tiny::tiny_elf;

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

/// Fleets launched per case: one. Debian's QEMU lost a running L2's state now and then
/// (docs/vmm.md: about half of the fleets of four on 2026-11-30), and this bench pinned
/// vCPU threads and relaunched such fleets; the project's QEMU has the fix, so a fleet
/// that shows the emulator's signature now leaves its case not measured.
const ATTEMPTS: u32 = 1;
/// L1's vCPUs, whatever N: the guests' vCPU threads run where L1's scheduler puts them.
const HOST_CPUS: u32 = 4;
/// A case whose guests have not all printed `T` within this many seconds of polling is
/// reported as stalled.
const CASE_LIMIT_S: u32 = 600;

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

/// The fleet file of `way` with `n` VMs (consoles `/tmp/CASE-vmN.console`).
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

/// One case's figures.
#[derive(Clone, Copy)]
struct Measured {
    /// SecPageTables while the guests ran, minus before the fleet.
    tables_kib: i64,
    /// `pf_fixed`, all VMs.
    faults: u64,
    /// `stage2_shared_links`, all VMs.
    links: u64,
    /// Fleets launched for the case.
    attempts: u32,
}

fn measured(console: &str, case: &str) -> Result<Measured, &'static str> {
    let case = fleet_case::figures(console, case)?;
    Ok(Measured {
        tables_kib: case.tables_kib,
        faults: case.sum("kvm_vcpu_stats", "pf_fixed"),
        links: case.sum("kvm_stats", "stage2_shared_links"),
        attempts: case.attempts,
    })
}

/// A row of the report: a touching case, its baseline subtracted.
struct Row {
    backing: &'static str,
    granule_pages: u32,
    n: usize,
    way: Way,
    /// The case's figures and its baseline's, or why there are none.
    figures: Result<(Measured, Measured), &'static str>,
}

fn main() {
    let images = ImagePaths::discover().unwrap_or_else(|e| panic!("guest images: {e}"));
    let started = std::time::Instant::now();
    let mut rows = Vec::new();
    let mut relaunched = Vec::new();
    for backing in &BACKINGS {
        for n in NS {
            let ways = [Way::Baseline, Way::Private, Way::Shared];
            let Some(console) = group_console(&images, backing, n, &ways) else {
                rows.extend(ways[1..].iter().map(|&way| Row {
                    backing: backing.name,
                    granule_pages: backing.granule_pages,
                    n,
                    way,
                    figures: Err("nested host failed"),
                }));
                continue;
            };
            for way in &ways {
                relaunched.extend(
                    fleet_case::relaunches(&console, way.name())
                        .into_iter()
                        .map(|l| format!("{}, N = {n}: {l}", backing.name)),
                );
            }
            let baseline = measured(&console, "baseline");
            for way in &ways[1..] {
                let figures = measured(&console, way.name()).and_then(|case| Ok((case, baseline?)));
                rows.push(Row { backing: backing.name, granule_pages: backing.granule_pages, n, way: *way, figures });
            }
        }
    }
    write_report(&rows, &relaunched, started.elapsed().as_secs_f64());
}

/// Boots the nested host for the cases of `backing` with `n` VMs, one per way, and returns
/// what L1's user space printed. One boot per group keeps a failure to one group, which is
/// reported as not measured; a boot is booted again only on the emulator's signature
/// (`NestedBoot::run`).
fn group_console(images: &ImagePaths, backing: &Backing, n: usize, ways: &[Way]) -> Option<String> {
    let mut boot = NestedBoot::new(images).unwrap_or_else(|e| panic!("{e}"));
    boot.host.memory_mib = 5120;
    boot.host.cpus = HOST_CPUS;
    boot.host.timeout = std::time::Duration::from_secs(3600);
    boot.host.console_log = Some(log_path(&format!("bench-stage2-{}-{n}", backing.name.replace(' ', "-"))));
    boot.host.cmdline.extend(["hugepagesz=2M", "hugepages=640"].map(String::from));
    boot.add_host_file("/bench/touch.elf", 0o644, tiny_elf(&fleet_case::toucher(REGION_PAGES)));
    boot.add_host_file("/bench/idle.elf", 0o644, tiny_elf(&fleet_case::toucher(0)));
    let mut script = String::new();
    for &way in ways {
        boot.add_host_file(&format!("/bench/{}.toml", way.name()), 0o644, fleet(backing, n, way, way.name()));
        script += &fleet_case::script(way.name(), n, CASE_LIMIT_S, ATTEMPTS, false);
    }
    boot.script(&script);
    eprintln!("stage-2 bench (nested): {}, {n} VMs", backing.name);
    match boot.run() {
        Ok(run) if run.host.result.status == 0 => Some(run.host.output.stdout),
        Ok(run) => {
            eprintln!("the nested host's script failed ({}):\n{}", run.host.result.status, run.host.output.stdout);
            None
        }
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

fn write_report(rows: &[Row], relaunched: &[String], seconds: f64) {
    let mut table = String::new();
    let mut json_rows = Vec::new();
    for r in rows {
        let (case, base) = match r.figures {
            Ok(figures) => figures,
            Err(reason) => {
                let _ = writeln!(
                    table,
                    "| {} | {} | {} | not measured ({reason}) | | | | | |",
                    r.backing,
                    r.n,
                    r.way.name()
                );
                json_rows.push(serde_json::json!({
                    "vms": r.n, "way": r.way.name(), "backing": r.backing, "not_measured": reason,
                }));
                continue;
            }
        };
        let region_kib = case.tables_kib - base.tables_kib;
        let faults = case.faults.saturating_sub(base.faults);
        let granules = u64::from(REGION_PAGES / r.granule_pages);
        let _ = writeln!(
            table,
            "| {} | {} | {} | {region_kib} | {} | {faults} | {} | {} | {} |",
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
            case.attempts,
        );
        json_rows.push(serde_json::json!({
            "vms": r.n, "way": r.way.name(), "backing": r.backing,
            "secpagetables_kib": region_kib, "stage2_faults": faults,
            "secpagetables_total_kib": case.tables_kib, "baseline_kib": base.tables_kib,
            "stage2_shared_links": case.links, "fleets_launched": case.attempts,
        }));
    }
    let verdicts = verdicts(rows);
    let report = format!(
        "# Stage-2 tables shared between VMs (nested KVM host)\n\n\
         Machine: this host's QEMU TCG emulating AMD SVM with nested paging; in it the host kernel with KVM_AMD \
         and the shared stage-2 patch ({HOST_CPUS} vCPUs, the guests' vCPU threads unpinned, 5 GiB, \
         KASAN and lockdep on), running `mshare-vmm launch` of N \
         tiny guests (64 MiB RAM each) that attach one 1 GiB region and each touch every 4 KiB page of it. \
         private: each VM's own stage-2 entries; shared: `stage2 = \"shared\"`. region KiB: L1's SecPageTables \
         while every guest is alive, minus before the fleet, minus the same for N guests that touch nothing \
         (their RAM's tables); faults: KVM's `pf_fixed` of all N VMs, minus the untouched case's; links: \
         `stage2_shared_links` per VM. One run of each (counts, the same every run); one nested host boot per \
         backing and N; {seconds:.0} s wall in all. \
         Command: `make bench-stage2`.\n\n\
         | backing | N VMs | way | region KiB | SecPageTables KiB, all | faults, all N | faults per VM | links per VM | fleets launched |\n\
         |---|---|---|---|---|---|---|---|---|\n{table}\n\
         fleets launched: {ATTEMPTS} per case. A fleet in which L1's KVM trace shows QEMU's SVM emulation handing an L2 \
         L1's state (an L2 entered at L1's own `__svm_vcpu_run`, docs/vmm.md; fixed in the project's QEMU) is stopped \
         and its case not measured, the evidence listed below. A VM \
         that ends early without that evidence, or guests that do not finish, leave the case not measured. \
         Only a fleet in which every guest finished is measured.\n\n{verdicts}\n\
         Fleets lost to the emulator: {}\n",
        if relaunched.is_empty() { "none".to_owned() } else { format!("\n{}", relaunched.iter().map(|l| format!("- {l}")).collect::<Vec<_>>().join("\n")) }
    );
    write_bench_report("stage2", &report, &serde_json::json!({ "rows": json_rows, "relaunches": relaunched }));
}

/// The test, per backing: at the largest N, the shared way's region tables cost at
/// most 1.1x those at N = 1 and each VM took one fault per granule; the private way's cost
/// N times its N = 1 cost.
fn verdicts(rows: &[Row]) -> String {
    let mut text = String::new();
    let n = NS[NS.len() - 1];
    for backing in &BACKINGS {
        let region = |way: Way, n: usize| {
            rows.iter()
                .find(|r| r.backing == backing.name && r.n == n && r.way == way)
                .and_then(|r| r.figures.ok())
                .map(|(case, base)| (case.tables_kib - base.tables_kib, case.faults.saturating_sub(base.faults)))
        };
        let (Some((shared_one, _)), Some((shared_many, faults))) = (region(Way::Shared, 1), region(Way::Shared, n))
        else {
            let _ = writeln!(text, "- {}: shared way not judged (a case was not measured)", backing.name);
            continue;
        };
        let granules = u64::from(REGION_PAGES / backing.granule_pages);
        let faults_per_vm = faults / n as u64;
        let tables_ok = shared_one > 0 && shared_many * 10 <= shared_one * 11;
        let private = match (region(Way::Private, 1), region(Way::Private, n)) {
            (Some((one, _)), Some((many, _))) => {
                format!("; private: {many} KiB against {one} KiB ({:.2}x)", many as f64 / one.max(1) as f64)
            }
            _ => "; private way not judged (a case was not measured)".into(),
        };
        let _ = writeln!(
            text,
            "- {}: N = {n} shared: region tables {shared_many} KiB against {shared_one} KiB at N = 1 ({:.3}x; {}), \
             {faults_per_vm} faults per VM for {granules} granules ({}){private}",
            backing.name,
            shared_many as f64 / shared_one.max(1) as f64,
            if tables_ok { "within 1.1x" } else { "OVER 1.1x" },
            if faults_per_vm == granules { "one per granule" } else { "NOT one per granule" },
        );
    }
    text
}
