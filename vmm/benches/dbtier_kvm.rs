//! The LMDB database tier under `mshare-vmm` on this host's KVM, for hosts whose KVM runs
//! guest kernels in hardware (`make bench-kvm`): the fleets of bench-dbtier's nested half
//! (`guest_runner::lmdb_tier::FleetSpec`: the four ways, storms and readers), with
//! K = 1, 2, 4 VMs at once. The database is built once per size by a builder VM into a
//! host file, which each fleet's region maps (a copy per fleet). Besides the guests'
//! figures: the VMM's memory while the readers run (sampled every 500 ms: PSS of guest
//! RAM, and of the region's file for the mshare ways) and KVM's stage-2 leaves.
//!
//! Guest user space cannot run under this machine's kvm_pvm (SYSCALL from guest user mode
//! is broken there): on such a host this benchmark says so and stops (the nested half of
//! bench-dbtier runs the same fleets, one VM at a time). BENCH_DB_SIZES_MIB ("256 1024"),
//! BENCH_DB_VMS ("1 2 4"), BENCH_DB_READERS ("8 64 256"), BENCH_DB_SECONDS (3),
//! BENCH_DB_REPEATS (3). Writes target/bench/dbtier-kvm.md and dbtier-kvm.json.

use guest_runner::images::{write_bench_report, ImagePaths};
use guest_runner::lmdb_tier::{self, FleetSpec, TierFigures, Way, READY};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Guest memory besides a private copy of the database (as bench-dbtier's).
const BASE_MEMORY_MIB: u64 = 768;

fn env_list(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split_whitespace()
        .map(|w| w.parse().unwrap_or_else(|e| panic!("{name}: {w}: {e}")))
        .collect()
}

/// PSS of process `pid` in KiB: anonymous (guest RAM) and file (the region's backing).
fn pss(pid: u32) -> Option<(u64, u64)> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kib = mshare_uapi::formats::kib_lines(&rollup);
    let figure = |key: &str| kib.get(key).copied().unwrap_or(0);
    Some((figure("Pss_Anon"), figure("Pss_File") + figure("Pss_Shmem")))
}

struct Run {
    consoles: Vec<String>,
    stats: Value,
    /// Peak (anon, file) PSS while every VM's readers ran.
    peak: (u64, u64),
}

fn launch(dir: &Path, spec: &FleetSpec<'_>) -> Run {
    let file = dir.join(format!("{}-{}.toml", spec.way.name(), spec.vms));
    std::fs::write(&file, spec.toml()).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let stats = dir.join("stats.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mshare-vmm"))
        .args(["-q", "launch"])
        .arg(&file)
        .arg("--stats-json")
        .arg(&stats)
        .spawn()
        .unwrap_or_else(|e| panic!("starting mshare-vmm: {e}"));
    let consoles: Vec<_> = (0..spec.vms).map(|vm| dir.join(format!("vm{vm}.log"))).collect();
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let (mut peak, mut samples) = ((0, 0), 0);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("waiting for mshare-vmm: {e}")) {
            break status;
        }
        let texts: Vec<String> = consoles.iter().map(|c| read(c)).collect();
        // Serial lines end in the guest tty's \r.
        let running = texts.iter().all(|t| t.lines().any(|l| l.trim_end() == READY))
            && !texts.iter().any(|t| t.lines().any(|l| l.starts_with("MSHARE-RESULT ")));
        if let Some((anon, file)) = pss(child.id()).filter(|_| running) {
            samples += 1;
            if anon + file > peak.0 + peak.1 {
                peak = (anon, file);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        status.success(),
        "{} K={}: mshare-vmm launch: {status} (consoles in {})",
        spec.way.name(),
        spec.vms,
        dir.display()
    );
    assert!(
        samples > 0,
        "{} K={}: the VMM's memory was never sampled while every VM's readers ran",
        spec.way.name(),
        spec.vms
    );
    let stats = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{}: {e}", stats.display()));
    Run { consoles: consoles.iter().map(|c| read(c)).collect(), stats, peak }
}

fn main() {
    if vmm::host::detect_software_hypervisor() {
        eprintln!(
            "dbtier-kvm bench: this host's KVM is kvm_pvm, under which guest user space cannot run; \
             run it on a host with hardware virtualization (bench-dbtier runs the same fleets on the nested KVM host, \
             and the tier under QEMU TCG, here): not run"
        );
        std::process::exit(2);
    }
    let images = ImagePaths::discover().unwrap_or_else(|e| panic!("{e}"));
    let kernel = images.get("VMLINUX").unwrap_or_else(|e| panic!("{e}")).display().to_string();
    let initrd = images.get("INITRAMFS").unwrap_or_else(|e| panic!("{e}")).display().to_string();
    let (readers, seconds, repeats) = (
        env_list("BENCH_DB_READERS", "8 64 256"),
        env_list("BENCH_DB_SECONDS", "3")[0],
        env_list("BENCH_DB_REPEATS", "3")[0],
    );
    let dir =
        vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/mshare-dbtier-kvm-").unwrap_or_else(|e| panic!("{e}"));
    let mut rows = Vec::new();
    for size_mib in env_list("BENCH_DB_SIZES_MIB", "256 1024") {
        let database = dir.as_path().join(format!("db-{size_mib}M"));
        std::fs::File::create(&database).and_then(|f| f.set_len(size_mib << 20)).unwrap_or_else(|e| panic!("{e}"));
        let status = Command::new(env!("CARGO_BIN_EXE_mshare-vmm"))
            .args(["-q", "run", "--kernel", &kernel, "--initrd", &initrd, "--cpus", "2", "--timeout", "1200"])
            .args(["--memory", &format!("{}M", BASE_MEMORY_MIB + size_mib)])
            .args(["--region", &format!("name=db,size={size_mib}M,path={}", database.display())])
            .args(["--", "sh", "-c", &lmdb_tier::build_script(size_mib)])
            .status()
            .unwrap_or_else(|e| panic!("starting the builder VM: {e}"));
        assert!(status.success(), "building the {size_mib} MiB database: {status}");
        for vms in env_list("BENCH_DB_VMS", "1 2 4") {
            for way in Way::ALL {
                eprintln!("dbtier-kvm bench: {size_mib} MiB, {vms} VM(s), {}", way.name());
                let copy = dir.as_path().join(format!("{}.img", way.name()));
                std::fs::copy(&database, &copy).unwrap_or_else(|e| panic!("{e}"));
                let (copy_path, serial) = (copy.display().to_string(), dir.as_path().display().to_string());
                let spec = FleetSpec {
                    way,
                    size_mib,
                    vms: vms as usize,
                    database: &copy_path,
                    kernel: &kernel,
                    initrd: &initrd,
                    readers: &readers,
                    seconds,
                    repeats,
                    base_memory_mib: BASE_MEMORY_MIB,
                    serial_dir: Some(&serial),
                    timeout_s: 1800,
                };
                let run = launch(dir.as_path(), &spec);
                let _ = std::fs::remove_file(&copy);
                let consoles: Vec<&str> = run.consoles.iter().map(String::as_str).collect();
                let kvm = |key: &str| -> u64 {
                    run.stats["vms"]
                        .as_array()
                        .map_or(0, |v| v.iter().filter_map(|vm| vm["kvm_stats"][key].as_u64()).sum())
                };
                let memory = (run.peak.0 + if way.private() { 0 } else { run.peak.1 }) >> 10;
                for &n in &readers {
                    let f = TierFigures::read(&consoles, n, repeats).unwrap_or_else(|e| panic!("{}: {e}", way.name()));
                    let (ops, ops_min, ops_max) = f.ops_spread();
                    rows.push(json!({
                        "way": way.name(), "size_mib": size_mib, "vms": vms, "readers_per_vm": n,
                        "vmm_memory_mib": memory, "stage2_pages_4k": kvm("pages_4k"), "stage2_pages_2m": kvm("pages_2m"),
                        "pagetables_kib_per_vm": f.pagetables_kib, "minor_faults_per_vm": f.minor_faults,
                        "storm_ms": f.storm_ms, "ops_per_s": ops, "ops_per_s_min": ops_min, "ops_per_s_max": ops_max,
                        "p50_us": f.p50_us, "p99_us": f.p99_us, "copy_in_ms": f.copy_in_ms,
                    }));
                }
            }
        }
    }
    let mut table = String::new();
    for r in &rows {
        table += &format!(
            "| {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} |\n",
            r["size_mib"],
            r["vms"],
            r["readers_per_vm"],
            r["way"].as_str().unwrap_or("?"),
            r["vmm_memory_mib"],
            r["stage2_pages_4k"],
            r["stage2_pages_2m"],
            r["pagetables_kib_per_vm"],
            r["minor_faults_per_vm"],
            r["storm_ms"],
            r["ops_per_s"],
            r["p99_us"],
        );
    }
    let report = format!(
        "# Database tier under mshare-vmm (hardware KVM)\n\n\
         Command: `make bench-kvm`. K VMs at once in one `mshare-vmm launch` (2 vCPUs each), the database a region \
         backed by a host file, attached read-only; the ways and the guest figures as in bench-dbtier ({seconds} s \
         benches, {repeats} runs, ops/s the median). VMM memory: peak PSS while every VM's readers ran (guest RAM, \
         plus the region's file for the mshare ways). Stage-2 leaves: all K VMs' 4 KiB / 2 MiB entries.\n\n\
         | size MiB | K VMs | N readers/VM | way | VMM memory, MiB | stage-2 leaves 4K / 2M | PageTables growth/VM, KiB \
         | minor faults/VM | connect storm, ms | ops/s, fleet | p99 us |\n|---|---|---|---|---|---|---|---|---|---|---|\n{table}"
    );
    write_bench_report("dbtier-kvm", &report, &json!({ "rows": rows }));
    println!("{report}");
}
