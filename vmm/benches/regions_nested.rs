//! Stage-2 cost of shared regions on a real TDP MMU: `make bench-regions`' second half.
//!
//! This machine's KVM shadows guest page tables and keeps KVM's stage-2 statistics at zero.
//! The nested KVM test host (QEMU TCG emulating AMD SVM; a Linux with KVM_AMD in it, see
//! `guest_runner::nested`) has a TDP MMU: there, K tiny guests of one `mshare-vmm launch`
//! each touch every 4 KiB page of a region, once with one region shared by all K and once
//! with a private region each, for memfd, hugetlbfs 2 MiB and hugetlbfs 1 GiB backings. When
//! every guest has touched its pages (it then prints `T` and spins), the host's
//! `SecPageTables` (KVM's stage-2 tables) is read; the VMs are then stopped and KVM's own
//! counts (`pages_4k/2m/1g`: stage-2 leaf entries) come from the VMM's statistics.
//! Writes target/bench/regions-nested.md and .json.
//!
//! One run of each; counts and bytes are the figures, times are nested TCG's.

mod fleet_case;

use guest_runner::images::{write_bench_report, ImagePaths};
use guest_runner::nested::NestedBoot;
use guest_runner::qemu::log_path;
use std::fmt::Write as _;
use vmm_testing::tiny::tiny_elf;

const KS: [usize; 3] = [1, 2, 4];

/// A backing: its name in the report, region size, fleet-file keys, and which K to run
/// privately (1 GiB pages: L1's pool holds two).
struct Way {
    name: &'static str,
    size_mib: u64,
    keys: &'static str,
    private_ks: &'static [usize],
}

const WAYS: [Way; 3] = [
    Way { name: "memfd 4K", size_mib: 256, keys: "", private_ks: &KS },
    Way { name: "hugetlbfs 2M", size_mib: 256, keys: "backing = \"hugetlbfs\"\npage_size = \"2M\"\n", private_ks: &KS },
    Way {
        name: "hugetlbfs 1G",
        size_mib: 1024,
        keys: "backing = \"hugetlbfs\"\npage_size = \"1G\"\n",
        private_ks: &[1, 2],
    },
];

fn fleet(way: &Way, k: usize, shared: bool, case: &str) -> String {
    let mut text = String::new();
    for r in 0..if shared { 1 } else { k } {
        let _ = write!(text, "[[region]]\nname = \"r{r}\"\nsize = \"{}M\"\n{}\n", way.size_mib, way.keys);
    }
    for v in 0..k {
        let region = if shared { 0 } else { v };
        let _ = write!(
            text,
            "[[vm]]\nname = \"vm{v}\"\nkernel = \"/bench/touch-{}.elf\"\nmemory = \"64M\"\ntimeout = 900\n\
             serial = \"/tmp/{case}-vm{v}.console\"\nregions = [{{ name = \"r{region}\" }}]\n\n",
            way.size_mib
        );
    }
    text
}

/// Fleets launched at most per case (`fleet_case::script`).
const ATTEMPTS: u32 = 3;

struct Row {
    way: &'static str,
    /// Why the case has no figures (`fleet_case::figures`).
    not_measured: Option<&'static str>,
    /// Fleets launched for the case (`fleet_case::CaseFigures::attempts`).
    attempts: u32,
    k: usize,
    shared: bool,
    /// SecPageTables while the guests run, minus before the fleet (signed: it is a global
    /// counter, and what the kernel frees meanwhile counts too).
    sec_kib: i64,
    pages: [u64; 3],
}

fn main() {
    let images = ImagePaths::discover().unwrap_or_else(|e| panic!("guest images: {e}"));
    let mut boot = NestedBoot::new(&images).unwrap_or_else(|e| panic!("{e}"));
    // 3.25 GiB of huge pages reserved, KASAN's shadow, and four private 256 MiB regions at
    // once: 5 GiB ran out of memory in the K = 4 private memfd case (2026-11-30).
    boot.host.memory_mib = 8192;
    boot.host.cpus = fleet_case::pinned_host_cpus(KS[KS.len() - 1]);
    boot.host.timeout = std::time::Duration::from_secs(3600);
    boot.host.console_log = Some(log_path("bench-regions-nested"));
    boot.host.cmdline.extend(["hugepagesz=1G", "hugepages=2", "hugepagesz=2M", "hugepages=640"].map(String::from));
    let mut script = String::new();
    let mut cases = Vec::new();
    for way in &WAYS {
        let pages = u32::try_from(way.size_mib << 8).unwrap_or(u32::MAX);
        boot.add_host_file(&format!("/bench/touch-{}.elf", way.size_mib), 0o644, tiny_elf(&fleet_case::toucher(pages)));
        for k in KS {
            for shared in [true, false] {
                if !shared && !way.private_ks.contains(&k) {
                    continue;
                }
                let case = format!("c{}", cases.len());
                boot.add_host_file(&format!("/bench/{case}.toml"), 0o644, fleet(way, k, shared, &case));
                script += &fleet_case::script(&case, k, 120, ATTEMPTS, true);
                cases.push((case, way.name, k, shared));
            }
        }
    }
    boot.script(&script);
    eprintln!("regions bench (nested): {} cases on the nested KVM host", cases.len());
    let run = boot.run().unwrap_or_else(|e| panic!("{e}"));
    let console = &run.host.output.stdout;
    assert_eq!(run.host.result.status, 0, "the nested host's script failed: {}", console);
    let mut rows = Vec::new();
    let mut relaunched = Vec::new();
    for (case, way, k, shared) in cases {
        relaunched.extend(fleet_case::relaunches(console, &case).into_iter().map(str::to_owned));
        let case = match fleet_case::figures(console, &case) {
            Ok(case) => case,
            Err(reason) => {
                rows.push(Row { way, not_measured: Some(reason), attempts: 0, k, shared, sec_kib: 0, pages: [0; 3] });
                continue;
            }
        };
        let pages = ["pages_4k", "pages_2m", "pages_1g"].map(|name| case.sum("kvm_stats", name));
        rows.push(Row { way, not_measured: None, attempts: case.attempts, k, shared, sec_kib: case.tables_kib, pages });
    }
    write_report(&rows, &relaunched, run.host.output.elapsed.as_secs_f64());
}

fn write_report(rows: &[Row], relaunched: &[String], seconds: f64) {
    let mut table = String::new();
    for r in rows {
        if let Some(reason) = r.not_measured {
            let region = if r.shared { "shared" } else { "private" };
            let _ = writeln!(table, "| {} | {} | {region} | not measured ({reason}) | - | - |", r.way, r.k);
            continue;
        }
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} / {} / {} | {} |",
            r.way,
            r.k,
            if r.shared { "shared" } else { "private" },
            r.sec_kib,
            r.pages[0],
            r.pages[1],
            r.pages[2],
            r.attempts
        );
    }
    let report = format!(
        "# Shared regions: stage-2 tables on a real TDP MMU (nested KVM host)\n\n\
         Machine: this host's QEMU TCG emulating AMD SVM with nested paging; in it the host kernel with KVM_AMD \
         (5 vCPUs, the guests' vCPU threads pinned to CPUs 1-4, 8 GiB), running `mshare-vmm launch` of K tiny guests (64 MiB RAM each) that each touch every \
         4 KiB page of their region's BAR2 once. shared: one region for all K; private: a region each. \
         SecPageTables: the nested host's stage-2 tables while every guest is alive, minus before the fleet \
         (after /proc/sys/vm/stat_refresh; a global counter, so a few KiB either way is noise); pages: KVM's stage-2 leaf entries of all K VMs (pages_4k / pages_2m / pages_1g) when stopped. \
         One run of each; {seconds:.0} s wall in all.\n\n\
         | backing | K VMs | region | SecPageTables KiB | stage-2 leaves 4K / 2M / 1G | fleets launched |\n|---|---|---|---|---|---|\n{table}\n\
         Each VM builds its own stage-2 entries for a shared region: sharing the host pages does not share them \
         (the stage-2 sharing issue's baseline). Guest RAM's own entries are in the counts (a few 2 MiB leaves per \
         VM). A fleet in which QEMU's SVM emulation overwrote a guest's state (docs/vmm.md; L1's KVM trace shows \
         an L2 entered at L1's own `__svm_vcpu_run`) is launched again, up to {ATTEMPTS} times in all (fleets \
         launched; each relaunch below with its evidence); a VM that ended early without that evidence (exited), \
         or guests that did not all finish touching within two minutes (stalled), leave the case not measured.\n\n\
         Relaunches: {}\n",
        if relaunched.is_empty() { "none".to_owned() } else { format!("\n{}", relaunched.iter().map(|l| format!("- {l}")).collect::<Vec<_>>().join("\n")) }
    );
    let json = serde_json::json!({
        "relaunches": relaunched,
        "rows": rows.iter().map(|r| serde_json::json!({
            "backing": r.way, "vms": r.k, "way": if r.shared { "shared" } else { "private" }, "not_measured": r.not_measured, "fleets_launched": r.attempts,
            "secpagetables_kib": r.sec_kib, "pages_4k": r.pages[0], "pages_2m": r.pages[1], "pages_1g": r.pages[2],
        })).collect::<Vec<_>>(),
    });
    write_bench_report("regions-nested", &report, &json);
}
