//! PostgreSQL under `mshare-vmm`, on the nested KVM host: `make bench-postgres`'s second
//! half. The same benchmark as the TCG half (guest_runner::postgres_bench: the four ways,
//! pgbench -S and a connect storm for each N) in one L2 VM booting the PostgreSQL image,
//! run by `mshare-vmm run` in the nested host (QEMU TCG emulating AMD SVM, a Linux with
//! KVM_AMD in it), so that the guest's memory goes through a real KVM's TDP MMU; KVM's
//! statistics of the VM (its stage-2 leaves) come from the VMM's `--stats-json` when the
//! VM stops. The clock is still the emulator's, twice over.
//!
//! BENCH_PG_NESTED_CLIENTS ("16 64"), BENCH_PG_NESTED_SECONDS (5),
//! BENCH_PG_NESTED_STORM_SECONDS (5), BENCH_PG_NESTED_SHARED_BUFFERS ("512M"),
//! BENCH_PG_NESTED_SCALE (16), BENCH_PG_NESTED_MEMORY_MIB (2560), BENCH_PG_NESTED_RUNS (3:
//! a VM each, in one boot of the nested host) and BENCH_PG_WAYS (all four) change it. Writes
//! target/bench/postgres-nested.md and .json.

use guest_runner::images::{write_bench_report, ImagePaths};
use guest_runner::nested::NestedBoot;
use guest_runner::postgres_bench::{self, env_number, Case};
use guest_runner::qemu::log_path;
use serde_json::{json, Value};
use std::time::Duration;

/// KVM's statistics of the run's VM, from the JSON the VMM wrote, which L1's script
/// printed between STATS markers.
fn kvm_stats(console: &str, run: usize) -> Value {
    let json = console
        .split(&format!("STATS-BEGIN run{run}"))
        .nth(1)
        .and_then(|rest| rest.split(&format!("STATS-END run{run}")).next())
        .unwrap_or_else(|| panic!("no statistics for run {run}"));
    let stats: Value = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("run {run} statistics: {e}"));
    stats["vms"][0]["kvm_stats"].clone()
}

fn main() {
    let case = Case::from_env(
        "BENCH_PG_NESTED",
        &Case {
            ways: postgres_bench::ways("mmap huge mshare-c mshare-b"),
            clients: vec![16, 64],
            seconds: 5,
            storm_seconds: 5,
            shared_buffers: "512M".to_owned(),
            scale: 16,
        },
    );
    let memory_mib = env_number("BENCH_PG_NESTED_MEMORY_MIB", "2560");
    let runs = env_number("BENCH_PG_NESTED_RUNS", "3") as usize;
    let images = ImagePaths::discover().unwrap_or_else(|e| panic!("guest images: {e}"));
    let mut boot = NestedBoot::new(&images).unwrap_or_else(|e| panic!("{e}"));
    boot.guest_initrd(images.get("POSTGRES_INITRAMFS").unwrap_or_else(|e| panic!("{e}")));
    boot.host.memory_mib = memory_mib as u32 + 1536;
    boot.host.timeout = Duration::from_secs(3 * 3600);
    boot.host.console_log = Some(log_path("bench-postgres-nested"));
    let mut script = String::new();
    for run in 0..runs {
        let command: Vec<String> = case.command(run);
        let words: Vec<&str> = command.iter().map(String::as_str).collect();
        let vm = NestedBoot::vm_command(
            &format!("run{run}"),
            &[
                "--cpus",
                "2",
                "--memory",
                &format!("{memory_mib}M"),
                "--timeout",
                "7200",
                "--stats-json",
                &format!("/tmp/run{run}.json"),
            ],
            &words,
        );
        script += &format!(
            "{vm} || exit $?\necho STATS-BEGIN run{run}; tr -d '\\n ' < /tmp/run{run}.json; echo; echo STATS-END run{run}\n"
        );
    }
    boot.script(&script);
    eprintln!("postgres bench (nested): {runs} VMs one after another, {}", case.command(0).join(" "));
    let run = boot.run().unwrap_or_else(|e| panic!("{e}"));
    let console = &run.host.output.stdout;
    assert_eq!(run.host.result.status, 0, "the nested host's script failed: {:?}", run.host.output.console_log);
    let outputs: Vec<String> = (0..runs).map(|r| run.guest_stdout(&format!("run{r}")).to_owned()).collect();
    for (r, output) in outputs.iter().enumerate() {
        postgres_bench::check_run(output, 0, &format!("nested run {}", r + 1));
    }
    let stats: Vec<Value> = (0..runs).map(|r| kvm_stats(console, r)).collect();
    let (tables, rows) = postgres_bench::report(&case, &outputs);
    let kvm_rows: String = stats
        .iter()
        .enumerate()
        .map(|(r, s)| format!("| {} | {} | {} | {} |\n", r + 1, s["pages_4k"], s["pages_2m"], s["pages_1g"]))
        .collect();
    let report = format!(
        "# PostgreSQL on mshare under mshare-vmm (nested KVM host)\n\n\
         The TCG half's benchmark in an L2 VM (2 vCPUs, {memory_mib} MiB) that `mshare-vmm run` boots on the nested host \
         (this host's QEMU TCG emulating AMD SVM; in it Linux 7.3 with KVM_AMD and the KVM patch), one VM per run, {runs} \
         runs; `shared_buffers={}`, pgbench scale {}, `pgbench -S -j 2` for {} s of transactions per N, the storm for {} s. \
         {:.0} min in all. Command: `make bench-postgres` (its second half). Every time is nested emulation's; counts are \
         not.\n\n\
         KVM's view of each run's VM when it stopped (all four ways ran in it; its RAM and no region): its stage-2 \
         leaves.\n\n| run | stage-2 leaves 4K | 2M | 1G |\n|---|---|---|---|\n{kvm_rows}\n{tables}",
        case.shared_buffers,
        case.scale,
        case.seconds,
        case.storm_seconds,
        run.host.output.elapsed.as_secs_f64() / 60.0,
    );
    let json = json!({
        "machine": "mshare-vmm on the nested KVM host", "guest_memory_mib": memory_mib,
        "shared_buffers": case.shared_buffers, "scale": case.scale, "runs": runs, "rows": rows, "kvm_stats": stats,
    });
    write_bench_report("postgres-nested", &report, &json);
}
