//! The LMDB database tier under `mshare-vmm`, on the nested KVM host: `make bench-dbtier`'s
//! second half.
//!
//! The tier of bench-dbtier (`guest_runner::lmdb_tier`: four ways, connect storms,
//! readers) in fleets launched by `mshare-vmm launch` in the nested host (QEMU TCG
//! emulating AMD SVM, a Linux with KVM_AMD in it), the database a region of the VMM backed
//! by a file on that host's tmpfs, built by a builder VM. One VM at a time (K = 1: two L2
//! VMs at once are not reliable under QEMU's SVM emulation, docs/vmm.md), each way in turn;
//! `make bench-kvm` runs the same fleets with K = 1, 2, 4 on a hardware host. Besides the
//! guests' figures: the VMM process's memory while the readers run (sampled each second:
//! PSS of guest RAM, and of the region's file for the mshare ways; a private way's source
//! region is left out, as the TCG half drops its source), and KVM's stage-2 leaves of the
//! VM (its RAM and the region), which here come from a real TDP MMU.
//!
//! BENCH_NESTED_DB_MIB (256), BENCH_DB_READERS ("8 64"), BENCH_DB_SECONDS (3),
//! BENCH_DB_REPEATS (3). Writes target/bench/dbtier-nested.md and .json.

use guest_runner::images::{write_bench_report, ImagePaths};
use guest_runner::lmdb_tier::{self, FleetSpec, TierFigures, Way, READY};
use guest_runner::nested::{NestedBoot, L2_INITRD, L2_KERNEL};
use guest_runner::qemu::log_path;
use serde_json::{json, Value};

/// Guest memory besides a private copy of the database (as the TCG half).
const BASE_MEMORY_MIB: u64 = 768;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The L1 lines that run one way's fleet: a copy of the database as its region, the
/// fleet in the background, the VMM's memory sampled while the VM's readers run, then
/// the VM's console and the VMM's statistics on L1's console.
fn way_script(way: Way) -> String {
    let name = way.name();
    format!(
        "cp /tmp/db.img /tmp/db-{name}.img\n\
         mshare-vmm -q launch /bench/{name}.toml --stats-json /tmp/{name}.json &\n\
         pid=$!\n\
         while kill -0 $pid 2>/dev/null; do\n\
         \x20   if grep -q '^{READY}' /tmp/{name}/vm0.log 2>/dev/null && ! grep -q '^MSHARE-RESULT' /tmp/{name}/vm0.log; then\n\
         \x20       echo FLEETPSS way={name} $(grep -E '^(Pss|Pss_Anon|Pss_Shmem|Pss_File):' /proc/$pid/smaps_rollup | tr -d ' :' | tr '\\n' ' ' | sed 's/kB/ /g; s/Pss_Anon/ anon=/; s/Pss_File/ file=/; s/Pss_Shmem/ shmem=/; s/Pss/total=/')\n\
         \x20   fi\n\
         \x20   sleep 1\n\
         done\n\
         wait $pid; status=$?\n\
         sed 's/^/[{name}] /' /tmp/{name}/vm0.log\n\
         echo STATS-BEGIN {name}; tr -d '\\n ' < /tmp/{name}.json; echo; echo STATS-END {name}\n\
         rm -f /tmp/db-{name}.img\n\
         [ $status -eq 0 ] || exit $status\n"
    )
}

/// The way's FLEETPSS sample with the largest total: its (anon, shmem) KiB.
fn peak(console: &str, way: Way) -> Option<(u64, u64)> {
    let figure = |line: &str, key: &str| guest_runner::console::field(line, key).and_then(|v| v.parse::<u64>().ok());
    console
        .lines()
        .filter(|l| l.starts_with(&format!("FLEETPSS way={} ", way.name())))
        .filter_map(|l| Some((figure(l, "total")?, figure(l, "anon")?, figure(l, "shmem")?)))
        .max()
        .map(|(_, anon, shmem)| (anon, shmem))
}

fn main() {
    let size_mib: u64 =
        env_or("BENCH_NESTED_DB_MIB", "256").parse().unwrap_or_else(|e| panic!("BENCH_NESTED_DB_MIB: {e}"));
    let readers: Vec<u64> = env_or("BENCH_DB_READERS", "8 64")
        .split_whitespace()
        .map(|w| w.parse().unwrap_or_else(|e| panic!("BENCH_DB_READERS: {w}: {e}")))
        .collect();
    let seconds: u64 = env_or("BENCH_DB_SECONDS", "3").parse().unwrap_or_else(|e| panic!("BENCH_DB_SECONDS: {e}"));
    let repeats: u64 = env_or("BENCH_DB_REPEATS", "3").parse().unwrap_or_else(|e| panic!("BENCH_DB_REPEATS: {e}"));
    let images = ImagePaths::discover().unwrap_or_else(|e| panic!("guest images: {e}"));
    let mut boot = NestedBoot::new(&images).unwrap_or_else(|e| panic!("{e}"));
    boot.host.memory_mib = 4096;
    boot.host.timeout = std::time::Duration::from_secs(3600);
    boot.host.console_log = Some(log_path("bench-dbtier-nested"));
    let build = NestedBoot::vm_command(
        "build",
        &[
            "--cpus",
            "2",
            "--memory",
            &format!("{}M", BASE_MEMORY_MIB + size_mib),
            "--timeout",
            "1200",
            "--region",
            &format!("name=db,size={size_mib}M,path=/tmp/db.img"),
        ],
        &["sh", "-c", &lmdb_tier::build_script(size_mib)],
    );
    let mut script = format!("set -e\ntruncate -s {size_mib}M /tmp/db.img\n{build}\nset +e\n");
    for way in Way::ALL {
        let dir = format!("/tmp/{}", way.name());
        let database = format!("/tmp/db-{}.img", way.name());
        let spec = FleetSpec {
            way,
            size_mib,
            vms: 1,
            database: &database,
            kernel: L2_KERNEL,
            initrd: L2_INITRD,
            readers: &readers,
            seconds,
            repeats,
            base_memory_mib: BASE_MEMORY_MIB,
            serial_dir: Some(&dir),
            timeout_s: 1800,
        };
        boot.add_host_file(&format!("/bench/{}.toml", way.name()), 0o644, spec.toml());
        script += &format!("mkdir -p {dir}\n{}", way_script(way));
    }
    boot.script(&script);
    eprintln!("dbtier bench (nested): a {size_mib} MiB database, the four ways one VM at a time, N = {readers:?}");
    let run = boot.run().unwrap_or_else(|e| panic!("{e}"));
    let console = &run.host.output.stdout;
    assert_eq!(run.host.result.status, 0, "the nested host's script failed: {:?}", run.host.output.console_log);
    let loaded =
        run.guest_stdout("build").lines().find(|l| l.starts_with("mshare-lmdb: loaded")).unwrap_or("?").to_owned();
    let mut rows = Vec::new();
    for way in Way::ALL {
        let guest = run.guest_console(way.name());
        let json = console
            .split(&format!("STATS-BEGIN {}", way.name()))
            .nth(1)
            .and_then(|rest| rest.split(&format!("STATS-END {}", way.name())).next())
            .unwrap_or_else(|| panic!("no statistics for {}", way.name()));
        let stats: Value =
            serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{} statistics: {e}", way.name()));
        let kvm = |key: &str| stats["vms"][0]["kvm_stats"][key].as_u64();
        let (anon, shmem) = peak(console, way)
            .unwrap_or_else(|| panic!("{}: the VMM's memory was never sampled while its readers ran", way.name()));
        // The region's file pages are the database for the mshare ways, only the copy's
        // source for the private ones.
        let memory = (anon + if way.private() { 0 } else { shmem }) >> 10;
        for &n in &readers {
            let f = TierFigures::read(&[guest], n, repeats)
                .unwrap_or_else(|e| panic!("{}: {e} (console: {:?})", way.name(), run.host.output.console_log));
            let (ops, ops_min, ops_max) = f.ops_spread();
            rows.push(json!({
                "way": way.name(), "size_mib": size_mib, "vms": 1, "readers_per_vm": n,
                "vmm_memory_mib": memory, "vmm_pss_anon_mib": anon >> 10, "vmm_pss_region_mib": shmem >> 10,
                "stage2_pages_4k": kvm("pages_4k"), "stage2_pages_2m": kvm("pages_2m"),
                "pagetables_kib": f.pagetables_kib, "minor_faults": f.minor_faults, "thp_mapped_kib": f.thp_mapped_kib,
                "storm_ms": f.storm_ms, "ops_per_s": ops, "ops_per_s_min": ops_min, "ops_per_s_max": ops_max,
                "p50_us": f.p50_us, "p99_us": f.p99_us, "copy_in_ms": f.copy_in_ms,
            }));
        }
    }
    write_report(&rows, &loaded, run.host.output.elapsed.as_secs_f64(), seconds, repeats);
}

fn cell(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 100.0 || x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
        None => "n/a".to_owned(),
    }
}

fn write_report(rows: &[Value], loaded: &str, wall_s: f64, seconds: u64, repeats: u64) {
    let mut table = String::new();
    for r in rows {
        table += &format!(
            "| {} | {} | {} | {} / {} | {} | {} | {} | {} [{}-{}] | {} | {} |\n",
            r["readers_per_vm"],
            r["way"].as_str().unwrap_or("?"),
            cell(&r["vmm_memory_mib"]),
            cell(&r["stage2_pages_4k"]),
            cell(&r["stage2_pages_2m"]),
            cell(&r["pagetables_kib"]),
            cell(&r["minor_faults"]),
            cell(&r["storm_ms"]),
            cell(&r["ops_per_s"]),
            cell(&r["ops_per_s_min"]),
            cell(&r["ops_per_s_max"]),
            cell(&r["p99_us"]),
            cell(&r["copy_in_ms"]),
        );
    }
    let report = format!(
        "# Database tier under mshare-vmm (nested KVM host)\n\n\
         Command: `make bench-dbtier` (its second half; {:.0} min). Machine: this host's QEMU TCG emulating AMD SVM; \
         in it the host kernel with KVM_AMD (2 vCPUs, 4 GiB) runs `mshare-vmm launch` of one VM per way (2 vCPUs), \
         the database a region of the VMM backed by a file on that host's tmpfs, attached read-only. {loaded}. \
         Each way as in the TCG half ({seconds} s benches, {repeats} runs; ops/s median [range]). VMM memory: peak \
         PSS of the VMM process while the readers ran, guest RAM plus the region's file for the mshare ways (a \
         private way's source region left out). Stage-2 leaves: KVM's 4 KiB / 2 MiB entries of the VM (RAM and \
         region) when it stopped, from the nested host's TDP MMU.\n\n\
         | N readers | way | VMM memory, MiB | stage-2 leaves 4K / 2M | guest PageTables growth, KiB | minor faults | \
         connect storm, ms | ops/s | p99 us | copy-in, ms |\n|---|---|---|---|---|---|---|---|---|---|\n{table}\n\
         One VM at a time: two L2 VMs at once are not reliable under QEMU's SVM emulation (docs/vmm.md), so the \
         fleet-memory comparison across K VMs is the TCG half's (and `make bench-kvm`'s on hardware, with the same \
         fleet files). Times are nested TCG's.\n",
        wall_s / 60.0
    );
    let json = json!({"rows": rows, "database": loaded, "command": "make bench-dbtier"});
    write_bench_report("dbtier-nested", &report, &json);
}
