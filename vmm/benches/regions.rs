//! Host memory of shared regions: K = 1, 2, 4, 8 VMs in one VMM process that each touch
//! every page of a 1 GiB region, against K VMs each touching its own private 1 GiB copy,
//! in one run. The guests are tiny (a page-touching loop), so the figures are the VMM's and
//! the host's, not a guest kernel's. Writes target/bench/regions.md.
//!
//! Reported per K: the VMM process's RSS, PSS and page tables (VmPTE) once every VM has
//! stopped (guest RAM freed, regions still mapped), the growth over a fleet with one
//! untouched 4 KiB region, and KVM's statistics (stage-2 page counts where the host exposes
//! them; on kvm_pvm, which shadows guest page tables, the shadow-PTE writes).
//!
//! Beside it, what a user has without mshare-vmm: K QEMU processes mapping one shared
//! `memory-backend-file` (one copy of the data, but each process its own host page tables),
//! every page touched by QEMU's `prealloc=on` rather than by a guest, so that no guest
//! emulation is timed; their summed RSS, PSS and VmPTE.

use guest_runner::images::write_bench_report;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use vmm_testing::tiny::{bar2_address_into_rbx, exit_with, tiny_elf, touch_pages_from_rbx};

const REGION_GIB: u64 = 1;
const KS: [usize; 4] = [1, 2, 4, 8];

struct Run {
    rss_kib: u64,
    pss_kib: u64,
    vmpte_kib: u64,
    shadow_pte_writes: u64,
    stage2_pages: Option<u64>,
    seconds: f64,
}

fn fleet_file(dir: &Path, kernel: &Path, k: usize, shared: bool, region_size: &str) -> std::path::PathBuf {
    let mut text = String::new();
    let regions = if shared { 1 } else { k };
    for r in 0..regions {
        text += &format!("[[region]]\nname = \"r{r}\"\nsize = \"{region_size}\"\n\n");
    }
    for v in 0..k {
        let region = if shared { 0 } else { v };
        text += &format!(
            "[[vm]]\nname = \"vm{v}\"\nkernel = \"{}\"\nmemory = \"64M\"\ntimeout = 600\nserial = \"vm{v}.console\"\nregions = [{{ name = \"r{region}\" }}]\n\n",
            kernel.display()
        );
    }
    let path = dir.join(format!("fleet-{k}-{}.toml", if shared { "shared" } else { "private" }));
    std::fs::write(&path, text).unwrap();
    path
}

fn launch(fleet: &Path) -> Run {
    let json = fleet.with_extension("json");
    let start = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_mshare-vmm"))
        .args(["-q", "launch"])
        .arg(fleet)
        .arg("--stats-json")
        .arg(&json)
        .output()
        .unwrap();
    let seconds = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}: {}", fleet.display(), String::from_utf8_lossy(&out.stderr));
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let after = &stats["host_memory_kib_after_all_vms"];
    let sum = |name: &str| -> Option<u64> {
        stats["vms"].as_array()?.iter().map(|vm| vm["kvm_stats"][name].as_u64()).sum::<Option<u64>>()
    };
    let stage2 = ["pages_4k", "pages_2m", "pages_1g"].iter().map(|n| sum(n)).sum::<Option<u64>>().filter(|n| *n > 0);
    Run {
        rss_kib: after["Rss"].as_u64().expect("the VMM's stats have no Rss"),
        pss_kib: after["Pss"].as_u64().expect("the VMM's stats have no Pss"),
        vmpte_kib: after["VmPTE"].as_u64().expect("the VMM's stats have no VmPTE"),
        shadow_pte_writes: sum("mmu_pte_write").unwrap_or(0),
        stage2_pages: stage2,
        seconds,
    }
}

/// K QEMU processes started by [`qemu_processes`] and their tmpfs file: killed and removed
/// when dropped, whatever happened in between.
struct QemuFleet {
    pids: Vec<i32>,
    file: std::path::PathBuf,
}

impl Drop for QemuFleet {
    fn drop(&mut self) {
        for pid in &self.pids {
            // SAFETY: signalling a QEMU this bench started (daemonized, so not our child).
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        // Gone before the next fleet starts (their memory and pid-file locks with them).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.pids.iter().any(|pid| Path::new(&format!("/proc/{pid}")).exists())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

/// K QEMU processes (no machine, no guest) each mapping the same tmpfs file of `bytes` as
/// a shared `memory-backend-file` with `prealloc=on`: summed RSS, PSS and VmPTE, in KiB,
/// once every process has touched all of it. Each is started with `-daemonize`, whose
/// parent exits only once QEMU is initialized, preallocation included; the file's pages
/// in each process (RssShmem) are checked too.
fn qemu_processes(dir: &Path, k: usize, bytes: u64) -> (u64, u64, u64) {
    let file = Path::new("/dev/shm").join(format!("mshare-bench-regions-{}", std::process::id()));
    std::fs::File::create(&file).and_then(|f| f.set_len(bytes)).unwrap();
    let qemu = guest_runner::qemu::qemu_binary().unwrap_or_else(|e| panic!("{e}"));
    let mut fleet = QemuFleet { pids: Vec::new(), file: file.clone() };
    let object = format!("memory-backend-file,id=m,mem-path={},size={bytes},share=on,prealloc=on", file.display());
    for i in 0..k {
        let pidfile = dir.join(format!("qemu-{k}x{bytes}-{i}.pid"));
        let status = Command::new(&qemu)
            .args(["-machine", "none", "-nodefaults", "-display", "none", "-S", "-daemonize", "-object", &object])
            .arg("-pidfile")
            .arg(&pidfile)
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("starting QEMU: {e}"));
        assert!(status.success(), "QEMU {i} failed to start: {status}");
        let pid = std::fs::read_to_string(&pidfile).unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()));
        fleet.pids.push(pid.trim().parse().unwrap_or_else(|e| panic!("{}: {e}", pidfile.display())));
    }
    let status_kib = |pid: i32, file: &str, key: &str| -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_else(|e| panic!("QEMU {pid}: {e}"));
        mshare_uapi::formats::kib_lines(&text)
            .get(key)
            .copied()
            .unwrap_or_else(|| panic!("QEMU {pid}: no {key} in {file}"))
    };
    for pid in &fleet.pids {
        assert!(status_kib(*pid, "status", "RssShmem") >= bytes >> 10, "QEMU {pid} did not map all of the file");
    }
    let sum = |file: &str, key: &str| -> u64 { fleet.pids.iter().map(|pid| status_kib(*pid, file, key)).sum() };
    (sum("smaps_rollup", "Rss"), sum("smaps_rollup", "Pss"), sum("status", "VmPTE"))
}

fn mib(kib: u64) -> String {
    format!("{:.0}", kib as f64 / 1024.0)
}

fn main() {
    let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/mshare-bench-regions-").unwrap();
    let mut code = bar2_address_into_rbx();
    code.extend(touch_pages_from_rbx((REGION_GIB << 30 >> 12) as u32));
    code.extend(exit_with(0));
    let touch = dir.as_path().join("touch.elf");
    std::fs::write(&touch, tiny_elf(&code)).unwrap();
    let idle = dir.as_path().join("idle.elf");
    std::fs::write(&idle, tiny_elf(&exit_with(0))).unwrap();

    eprintln!("regions bench: baseline (one VM, one untouched 4 KiB region)");
    let base = launch(&fleet_file(dir.as_path(), &idle, 1, true, "4K"));
    let mut rows = String::new();
    let mut json_rows = Vec::new();
    let mut qemu_rows = String::new();
    let mut k8 = None;
    for k in KS {
        eprintln!("regions bench: K = {k}, shared and private");
        let shared = launch(&fleet_file(dir.as_path(), &touch, k, true, "1G"));
        let private = launch(&fleet_file(dir.as_path(), &touch, k, false, "1G"));
        eprintln!("regions bench: K = {k} QEMU processes over one memory-backend-file");
        let (qemu_rss, qemu_pss, qemu_pte) = qemu_processes(dir.as_path(), k, REGION_GIB << 30);
        let (_, _, idle_qemu_pte) = qemu_processes(dir.as_path(), k, 2 << 20);
        let qemu_pte = qemu_pte as i64 - idle_qemu_pte as i64;
        let vmpte = |r: &Run| r.vmpte_kib as i64 - base.vmpte_kib as i64;
        qemu_rows += &format!(
            "| {k} | {} | {} | {} | {} | {} | {} |\n",
            mib(shared.pss_kib),
            vmpte(&shared),
            vmpte(&private),
            mib(qemu_rss),
            mib(qemu_pss),
            qemu_pte,
        );
        let growth = |r: &Run| r.rss_kib.checked_sub(base.rss_kib).expect("RSS below the baseline fleet's");
        let stage2 = |r: &Run| r.stage2_pages.map_or("not exposed".to_owned(), |p| p.to_string());
        rows += &format!(
            "| {k} | {} | {} | {} | {} | {} | {} | {:.2}x | {} / {} | {} / {} | {:.1} / {:.1} s |\n",
            mib(shared.rss_kib),
            mib(shared.pss_kib),
            mib(growth(&shared)),
            mib(private.rss_kib),
            mib(private.pss_kib),
            mib(growth(&private)),
            growth(&private) as f64 / growth(&shared).max(1) as f64,
            shared.shadow_pte_writes,
            private.shadow_pte_writes,
            stage2(&shared),
            stage2(&private),
            shared.seconds,
            private.seconds,
        );
        json_rows.push(serde_json::json!({
            "vms": k,
            "shared_growth_mib": growth(&shared) as f64 / 1024.0,
            "private_growth_mib": growth(&private) as f64 / 1024.0,
            "shared_rss_mib": shared.rss_kib as f64 / 1024.0,
            "private_rss_mib": private.rss_kib as f64 / 1024.0,
            "shared_pss_mib": shared.pss_kib as f64 / 1024.0,
            "private_pss_mib": private.pss_kib as f64 / 1024.0,
            "shadow_pte_writes_shared": shared.shadow_pte_writes,
            "shadow_pte_writes_private": private.shadow_pte_writes,
            "stage2_pages_shared": shared.stage2_pages,
            "stage2_pages_private": private.stage2_pages,
            "vmm_vmpte_growth_kib_shared": vmpte(&shared),
            "vmm_vmpte_growth_kib_private": vmpte(&private),
            "qemu_processes_rss_mib": qemu_rss as f64 / 1024.0,
            "qemu_processes_pss_mib": qemu_pss as f64 / 1024.0,
            "qemu_processes_vmpte_kib": qemu_pte,
        }));
        if k == 8 {
            k8 = Some(growth(&shared));
        }
    }
    let one_copy = REGION_GIB << 20;
    let k8 = k8.unwrap_or(0);
    let machine = format!(
        "{} cores, KVM {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if vmm::host::detect_software_hypervisor() { "kvm_pvm (software, shadow paging)" } else { "hardware" }
    );
    let report = format!(
        "# Shared regions: host memory, K VMs sharing one 1 GiB region vs K private copies\n\n\
         Machine: {machine}. One mshare-vmm process per fleet; tiny guests (64 MiB RAM each) touch every 4 KiB page of \
         their region's BAR2 once, then exit. Memory is the VMM process's smaps_rollup after every VM stopped, regions still \
         mapped; growth is over a one-VM fleet with an untouched 4 KiB region (RSS {} MiB). Backing: memfd. One run each.\n\n\
         | K VMs | shared RSS MiB | shared PSS MiB | shared growth MiB | private RSS MiB | private PSS MiB | private growth MiB | private / shared growth | shadow-PTE writes shared / private | stage-2 pages shared / private | wall shared / private |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n{rows}\n\
         ## Against K QEMU processes sharing one memory-backend-file\n\n\
         Without a VMM that runs K VMs over one mapping, the strongest setup a user has is K QEMU processes, each \
         mapping the same file (`-object memory-backend-file,share=on`): one copy of the data too, but each process \
         maps it with its own host page tables. Here each QEMU (no machine, no guest) touches the whole 1 GiB with \
         `prealloc=on`; figures are summed over the K processes, RSS and PSS whole (QEMU's own memory included), \
         VmPTE as growth over K QEMUs mapping 2 MiB. mshare-vmm's page tables are the VMM's VmPTE growth over the \
         baseline fleet. Growths are signed, never clamped.\n\n\
         | K | mshare-vmm shared: PSS MiB | mshare-vmm VmPTE growth KiB: shared | private copies | K QEMUs: RSS MiB (sum) | K QEMUs: PSS MiB (sum) | K QEMUs: VmPTE growth KiB (sum) |\n\
         |---|---|---|---|---|---|---|\n{qemu_rows}\n\
         Goal: growth at K = 8 within 5 % of one copy. Measured: {} MiB for one 1 GiB copy shared by 8 VMs = {:.2}x one copy ({}).\n\n\
         Where this machine distorts: tiny guests run in guest kernel mode, which kvm_pvm emulates, so the wall times are \
         emulation-bound; the memory figures and the counts are not. kvm_pvm keeps KVM's stage-2 statistics (pages_4k/2m/1g) \
         at zero because it shadows guest page tables instead; its mmu_pte_write count is one shadow-PTE write per page a \
         guest touched, per VM: sharing the host pages does not share those per-VM entries.\n",
        mib(base.rss_kib),
        mib(k8),
        k8 as f64 / one_copy as f64,
        if (k8 as f64) <= one_copy as f64 * 1.05 { "within 5 %" } else { "NOT within 5 %" }
    );
    let json =
        serde_json::json!({ "machine": machine, "region_gib": REGION_GIB, "backing": "memfd", "rows": json_rows });
    write_bench_report("regions", &report, &json);
}
