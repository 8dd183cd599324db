//! The database tier under mshare-vmm, for hosts whose KVM runs guest kernels in hardware
//! (`make bench-kvm`): the workload of bench-dbtier (`mshare-db`, K VMs x M workers over one
//! buffer pool of 8 KiB pages) in fleets launched by `mshare-vmm launch`, the pool a region
//! of the VMM (mshare) or each VM's private memfd (shmem). Besides the guests' figures it
//! reports the VMM's: host memory of the fleet and KVM's stage-2 page counts.
//!
//! Guest user space cannot run under this machine's kvm_pvm (SYSCALL from guest user mode
//! is broken there): on such a host this benchmark says so and stops. BENCH_DB_VMS,
//! BENCH_DB_WORKERS, BENCH_DB_SECONDS and BENCH_DB_POOL_MIB as for bench-dbtier. Writes
//! target/bench/dbtier-kvm.md and dbtier-kvm.json.

use guest_runner::images::{repo_root, ImagePaths};
use std::process::Command;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn field(line: &str, key: &str) -> f64 {
    guest_runner::console::field(line, key).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

struct Params<'a> {
    images: &'a ImagePaths,
    workers: &'a str,
    seconds: &'a str,
    pool_mib: u64,
}

/// Launches one fleet; returns each VM's DB line and the fleet's stats JSON.
fn fleet(p: &Params<'_>, way: &str, vms: usize) -> (Vec<String>, serde_json::Value) {
    let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/mshare-dbtier-kvm-").unwrap();
    let kernel = p.images.get("VMLINUX").unwrap_or_else(|e| panic!("{e}"));
    let initrd = p.images.get("INITRAMFS").unwrap_or_else(|e| panic!("{e}"));
    let mut text = String::new();
    if way == "mshare" {
        text += &format!("[[region]]\nname = \"pool\"\nsize = \"{}M\"\n\n", p.pool_mib);
    }
    let consoles: Vec<_> = (0..vms).map(|vm| dir.as_path().join(format!("vm{vm}.log"))).collect();
    for (vm, console) in consoles.iter().enumerate() {
        let memory = if way == "mshare" { 512 } else { 512 + p.pool_mib };
        text += &format!(
            "[[vm]]\nname = \"vm{vm}\"\nkernel = \"{}\"\ninitrd = \"{}\"\ncpus = 2\nmemory = \"{memory}M\"\ntimeout = 900\n\
             serial = \"{}\"\ncmdline = \"MSHARE_DB_POOL_MIB={}\"\ncommand = [\"mshare-db\", \"{way}\", \"{}\", \"{}\"]\n",
            kernel.display(),
            initrd.display(),
            console.display(),
            p.pool_mib,
            p.workers,
            p.seconds
        );
        if way == "mshare" {
            text += "regions = [{ name = \"pool\", access = \"rw\" }]\n";
        }
        text += "\n";
    }
    let file = dir.as_path().join("fleet.toml");
    std::fs::write(&file, text).unwrap();
    let stats = dir.as_path().join("stats.json");
    let out = Command::new(env!("CARGO_BIN_EXE_mshare-vmm"))
        .arg("launch")
        .arg(&file)
        .arg("--stats-json")
        .arg(&stats)
        .output()
        .unwrap();
    assert!(out.status.success(), "{way} K={vms}: mshare-vmm launch: {}", String::from_utf8_lossy(&out.stderr));
    let lines = consoles
        .iter()
        .map(|c| {
            let text = std::fs::read_to_string(c).unwrap_or_default();
            text.lines()
                .find(|l| l.starts_with("DB "))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no DB line in {}", c.display()))
        })
        .collect();
    let stats = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap_or_default()).unwrap_or_default();
    (lines, stats)
}

fn main() {
    if vmm::host::detect_software_hypervisor() {
        eprintln!(
            "dbtier-kvm bench: this host's KVM is kvm_pvm, under which guest user space cannot run; \
             run it on a host with hardware virtualization (bench-dbtier measures the same workload under QEMU TCG here): \
             not run"
        );
        std::process::exit(2);
    }
    let images = ImagePaths::discover().unwrap_or_else(|e| panic!("{e}"));
    let (workers, seconds) = (env_or("BENCH_DB_WORKERS", "8"), env_or("BENCH_DB_SECONDS", "20"));
    let params = Params {
        images: &images,
        workers: &workers,
        seconds: &seconds,
        pool_mib: env_or("BENCH_DB_POOL_MIB", "256").parse().unwrap_or(256),
    };
    let mut rows = String::new();
    let mut json = Vec::new();
    for vms in env_or("BENCH_DB_VMS", "1 2 4").split_whitespace().map(|k| k.parse::<usize>().unwrap_or(1)) {
        let mut cells = Vec::new();
        for way in ["mshare", "shmem"] {
            eprintln!("dbtier-kvm bench: {way}, {vms} VM(s) x {workers} workers, {seconds} s");
            let (lines, stats) = fleet(&params, way, vms);
            let sum = |key: &str| lines.iter().map(|l| field(l, key)).sum::<f64>();
            let max = |key: &str| lines.iter().map(|l| field(l, key)).fold(0.0, f64::max);
            assert_eq!(sum("bad"), 0.0, "{way} K={vms}: pages failed validation: {lines:?}");
            let kvm = |key: &str| -> u64 {
                stats["vms"].as_array().map_or(0, |v| v.iter().filter_map(|vm| vm["kvm_stats"][key].as_u64()).sum())
            };
            let pss = stats["host_memory_kib_after_all_vms"]["Pss"].as_u64().unwrap_or(0) >> 10;
            let cell = (
                sum("ops_per_s"),
                sum("p50_us") / lines.len().max(1) as f64,
                max("p99_us"),
                sum("pagetables_kib") / lines.len().max(1) as f64,
                pss,
                kvm("pages_4k"),
                kvm("pages_2m"),
            );
            json.push(serde_json::json!({
                "way": way, "vms": vms, "ops_per_s": cell.0, "p50_us": cell.1, "p99_us": cell.2,
                "pagetables_kib_per_vm": cell.3, "host_pss_mib_after": cell.4, "stage2_pages_4k": cell.5, "stage2_pages_2m": cell.6,
            }));
            cells.push(cell);
        }
        let (m, s) = (cells[0], cells[1]);
        rows += &format!(
            "| {vms} | {:.0} / {:.0} | {:.1} / {:.1} | {:.1} / {:.1} | {:.0} / {:.0} | {} / {} | {} / {} | {} / {} |\n",
            m.0, s.0, m.1, s.1, m.2, s.2, m.3, s.3, m.4, s.4, m.5, s.5, m.6, s.6
        );
    }
    let report = format!(
        "# Database tier under mshare-vmm: K VMs x {workers} workers\n\n\
         Host KVM with hardware virtualization; guests 2 vCPUs each, the pool {} MiB of 8 KiB pages, {seconds} s. \
         Each cell: mshare (a region of the VMM, attached through msharefs) / shmem (a private memfd per VM).\n\n\
         | K VMs | ops/s | p50 us | p99 us | guest PageTables growth per VM, KiB | fleet PSS after, MiB | stage-2 4K pages | stage-2 2M pages |\n\
         |---|---|---|---|---|---|---|---|\n{rows}",
        params.pool_mib
    );
    let out = repo_root().join("target").join("bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("dbtier-kvm.md"), &report).unwrap();
    std::fs::write(out.join("dbtier-kvm.json"), serde_json::to_string_pretty(&json).unwrap() + "\n").unwrap();
    println!("{report}");
}
