//! Boot benchmark: mshare-vmm against QEMU booting the same kernel and initramfs on this
//! host's KVM, side by side in one run, and the same QEMU under TCG (no KVM: the
//! emulator this project's guest tests run under here). Reports, per VMM: time to the first console byte,
//! time to "Run /init" (the kernel handing over to user space), the VMM's memory overhead
//! (RSS minus the guest RAM it touched), and for mshare-vmm the time to its first KVM_RUN.
//!
//! `make bench-boot` runs it; BENCH_REPS sets the repetitions (default 1: a boot takes
//! about a minute where KVM emulates guest kernel code); with more, each cell is the
//! median and its range. Writes target/bench/boot.md.

use guest_runner::images::{write_bench_report, ImagePaths};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const MEMORY_MIB: u64 = 256;
const INIT_MARKER: &str = "Run /init as init process";
const LIMIT: Duration = Duration::from_secs(600);

struct Sample {
    first_byte: Duration,
    init: Duration,
    overhead_kib: u64,
    first_kvm_run_ms: Option<f64>,
}

/// RSS of the process minus that of its guest-RAM-sized mappings, in KiB.
fn vmm_overhead_kib(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut total, mut guest) = (0u64, 0u64);
    let mut size = 0u64;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next()) {
            (Some("Size:"), Some(kib)) => size = kib.parse().unwrap_or(0),
            (Some("Rss:"), Some(kib)) => {
                let rss: u64 = kib.parse().unwrap_or(0);
                total += rss;
                if size >= MEMORY_MIB << 10 {
                    guest += rss;
                }
            }
            _ => {}
        }
    }
    total - guest
}

/// Starts `cmd`, waits for the init marker on its stdout, samples, then stops it.
fn boot(mut cmd: Command) -> Result<(Sample, String), String> {
    let start = Instant::now();
    let mut child: Child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            let _ = tx.send((start.elapsed(), std::mem::take(&mut line)));
        }
    });
    let mut first_byte = None;
    let mut console = String::new();
    let init = loop {
        match rx.recv_timeout(LIMIT.saturating_sub(start.elapsed())) {
            Ok((at, line)) => {
                first_byte.get_or_insert(at);
                console.push_str(&line);
                if line.contains(INIT_MARKER) {
                    break at;
                }
            }
            Err(_) => {
                let _ = child.kill();
                return Err(format!("no '{INIT_MARKER}' within {} s; console so far:\n{console}", LIMIT.as_secs()));
            }
        }
    };
    let overhead_kib = vmm_overhead_kib(child.id());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let first_kvm_run_ms =
        stderr.split("first KVM_RUN after ").nth(1).and_then(|s| s.split(" ms").next()).and_then(|s| s.parse().ok());
    Ok((Sample { first_byte: first_byte.unwrap_or_default(), init, overhead_kib, first_kvm_run_ms }, console))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The median of `values` formatted by `f`, with the range when the runs differ.
fn cell(values: Vec<f64>, f: impl Fn(f64) -> String) -> String {
    let (min, max) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let (mid, lo, hi) = (f(median(values)), f(min), f(max));
    if lo == hi {
        mid
    } else {
        format!("{mid} ({lo} to {hi})")
    }
}

fn main() {
    let reps: usize = std::env::var("BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let images = ImagePaths::discover().unwrap_or_else(|e| panic!("{e}"));
    let kernel = images.get("VMLINUX").unwrap_or_else(|e| panic!("{e}")).to_path_buf();
    let initrd = images.get("INITRAMFS").unwrap_or_else(|e| panic!("{e}")).to_path_buf();
    let software = vmm::host::detect_software_hypervisor();

    let mut ours = Vec::new();
    let mut qemu = Vec::new();
    let mut tcg = Vec::new();
    let mut cmdline = String::new();
    let qemu_binary = guest_runner::qemu::qemu_binary().unwrap_or_else(|e| panic!("{e}"));
    let qemu_cmd = |accel: &[&str], cmdline: &str| {
        let mut cmd = Command::new(&qemu_binary);
        cmd.args(["-M", "microvm"]).args(accel).args(["-m", &format!("{MEMORY_MIB}M"), "-smp", "1"]);
        cmd.args(["-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot", "-kernel"])
            .arg(&kernel);
        cmd.arg("-initrd").arg(&initrd).args(["-append", cmdline]);
        cmd
    };
    for rep in 0..reps {
        eprintln!("boot bench: repetition {}/{reps}: mshare-vmm", rep + 1);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mshare-vmm"));
        cmd.args(["run", "--cpus", "1", "--memory", &format!("{MEMORY_MIB}M"), "--kernel"])
            .arg(&kernel)
            .arg("--initrd")
            .arg(&initrd);
        let (sample, console) = boot(cmd).unwrap_or_else(|e| panic!("mshare-vmm: {e}"));
        cmdline = console.lines().find_map(|l| l.strip_prefix("Command line: ")).unwrap_or_default().trim().to_owned();
        ours.push(sample);
        eprintln!("boot bench: repetition {}/{reps}: QEMU", rep + 1);
        let kvm = qemu_cmd(&["-enable-kvm", "-cpu", "host,-arch-capabilities"], &cmdline);
        qemu.push(boot(kvm).unwrap_or_else(|e| panic!("QEMU: {e}")).0);
        eprintln!("boot bench: repetition {}/{reps}: QEMU TCG", rep + 1);
        let emulated = qemu_cmd(&["-accel", "tcg", "-cpu", "max"], &cmdline);
        tcg.push(boot(emulated).unwrap_or_else(|e| panic!("QEMU TCG: {e}")).0);
    }

    let row = |name: &str, samples: &[Sample]| {
        let firsts: Vec<f64> = samples.iter().map(|s| s.first_byte.as_secs_f64()).collect();
        let inits: Vec<f64> = samples.iter().map(|s| s.init.as_secs_f64()).collect();
        let overheads: Vec<f64> = samples.iter().map(|s| s.overhead_kib as f64 / 1024.0).collect();
        let kvm_runs = samples.iter().filter_map(|s| s.first_kvm_run_ms).collect::<Vec<_>>();
        let (init, overhead) = (median(inits.clone()), median(overheads.clone()));
        let json = serde_json::json!({
            "vmm": name,
            "first_kvm_run_ms": (!kvm_runs.is_empty()).then(|| median(kvm_runs.clone())),
            "first_console_byte_s": median(firsts.clone()),
            "init_s": init,
            "init_s_all": inits,
            "overhead_mib": overhead,
            "repetitions": samples.len(),
        });
        let kvm_run = if kvm_runs.is_empty() { "n/a".to_owned() } else { cell(kvm_runs, |v| format!("{v:.1} ms")) };
        (
            format!(
                "| {name} | {kvm_run} | {} | {} | {} |",
                cell(firsts, |v| format!("{v:.2} s")),
                cell(inits, |v| format!("{v:.1} s")),
                cell(overheads, |v| format!("{v:.1} MiB"))
            ),
            init,
            overhead,
            json,
        )
    };
    let (ours_row, ours_init, ours_mem, ours_json) = row("mshare-vmm", &ours);
    let (qemu_row, qemu_init, qemu_mem, qemu_json) = row("QEMU microvm", &qemu);
    let (tcg_row, _, _, tcg_json) = row("QEMU microvm, TCG (no KVM)", &tcg);
    let machine = format!(
        "{} cores, {} GiB, KVM {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok()))
            .map_or(0, |k| k >> 20),
        if software { "kvm_pvm (software: guest kernel code emulated)" } else { "hardware" }
    );
    let report = format!(
        "# Boot: mshare-vmm against QEMU\n\nMachine: {machine}. Guest: {} + {} (uncompressed cpio), 1 vCPU, {MEMORY_MIB} MiB, ELF vmlinux \
         (mshare-vmm: 64-bit entry; QEMU: PVH). Command line: `{cmdline}`. Medians of {reps} boot(s) each, run alternately.\n\n\
         | VMM | start to first KVM_RUN | to first console byte | to `Run /init` | VMM memory overhead (RSS - guest RAM) |\n|---|---|---|---|---|\n{ours_row}\n{qemu_row}\n{tcg_row}\n\n\
         Ratio to /init, QEMU / mshare-vmm (both on KVM): {:.2}x; memory overhead ratio: {:.2}x. Where this machine \
         distorts: its KVM emulates guest kernel code, so the KVM boots take a minute or more where a hardware host takes \
         well under a second; TCG (which translates guest code instead) is faster here than this KVM, and its overhead \
         includes its translation cache.\n\
         Anchors: Firecracker's specification targets 125 ms to guest init and < 5 MiB VMM overhead on a hardware KVM host.\n",
        kernel.display(),
        initrd.display(),
        qemu_init / ours_init,
        qemu_mem / ours_mem
    );
    let json =
        serde_json::json!({ "machine": machine, "memory_mib": MEMORY_MIB, "rows": [ours_json, qemu_json, tcg_json] });
    write_bench_report("boot", &report, &json);
}
