//! The nested KVM test host: guest user space under `mshare-vmm` on a real KVM.
//!
//! QEMU TCG emulates AMD SVM with nested paging. Its guest, the host kernel `make images`
//! builds (`HOST_VMLINUX`: the guest kernel plus KVM_AMD) with its initramfs
//! (`HOST_INITRAMFS`: /init, busybox, a static `mshare-vmm` and the guest image under
//! `/l2`), is a KVM host with a TDP MMU: "L1". `mshare-vmm` runs there and boots the guest
//! image as "L2", whose user space then runs natively on the emulated SVM — the product
//! path that this machine's own KVM (a software hypervisor) cannot run.
//!
//! Files are added to L1, and to the L2 initramfs, by appending a cpio archive of them
//! ([`crate::cpio`]). L1 needs `tsc_early_khz=` (the host's TSC rate): without it L1
//! cannot calibrate its TSC under TCG, and its KVM never enters a guest.
//!
//! L2 output comes back through L1's user-space channel (its ttyS1, [`crate::qemu`]):
//! `mshare-vmm --name NAME` (and every fleet VM) prefixes each console line with
//! `[NAME] ` and each line of the L2's own ttyS1 (`--serial2 stdout`: its `/init` and
//! command) with `[NAME/ttyS1] `, each written whole. [`NestedRun::guest`] reads one L2's
//! `MSHARE-RESULT` from its ttyS1; kernel problems on any kernel's console (L1's, or an
//! L2's) fail the run.
//!
//! QEMU's emulated SVM now and then hands an L2 its L1's state at a #VMEXIT (docs/vmm.md):
//! KVM then enters the L2 at L1's own instruction after `vmrun`. L1 watches for exactly
//! that ([`WATCH_SCRIPT`]: KVM's `kvm_entry` event filtered to the range of L1's
//! `__svm_vcpu_run`), and a boot that shows it, and only such a boot, is booted once more;
//! the retry is printed where `cargo test` does not capture it and recorded in
//! [`retry_log`], which `make test` sums up.

use crate::console::{self, GuestResult};
use crate::cpio::Archive;
use crate::images::{ImagePaths, ImagesError};
use crate::qemu::{Boot, CommandRun, Output, QemuError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The guest kernel inside L1.
pub const L2_KERNEL: &str = "/l2/vmlinux";
/// The guest initramfs inside L1 (with the files added by [`NestedBoot::add_guest_file`]).
pub const L2_INITRD: &str = "/l2/initramfs.cpio";
/// Where [`NestedBoot::script`] puts L1's script.
pub const L1_SCRIPT: &str = "/nested/run.sh";
/// Where the watch around L1's command goes ([`WATCH_SCRIPT`]).
const L1_WATCH: &str = "/nested/watch.sh";
/// The marker of the watch's summary line on L1's ttyS1.
const LOSS_MARKER: &str = "SVM-STATE-LOSS entries=";
/// The marker of each traced entry it prints.
const LOSS_EVIDENCE: &str = "SVM-STATE-LOSS-EVIDENCE ";

/// L1's command: arms KVM's `kvm_entry` trace event, filtered to entries whose guest RIP
/// lies inside L1's own `__svm_vcpu_run` (no guest executes there; an L2 "resumed" there
/// was handed L1's state), runs the command (`sh` with the arguments), then prints how many
/// such entries there were and the first few. A host where the event cannot be armed says
/// so and runs the command anyway: no evidence, so no retry.
pub const WATCH_SCRIPT: &str = r#"tracing=/sys/kernel/tracing
mountpoint -q $tracing || mount -t tracefs tracefs $tracing
t=$tracing/events/kvm/kvm_entry
range=$(sort /proc/kallsyms | awk '$3 == "__svm_vcpu_run" { start = $1; next } start && $1 > start { print start, $1; exit }')
armed=
if [ -n "$range" ] && echo "rip >= 0x${range% *} && rip < 0x${range#* }" > $t/filter && echo 1 > $t/enable; then
    armed=1
else
    echo "nested host: cannot watch for lost L2 state (no __svm_vcpu_run in /proc/kallsyms, or no kvm_entry event)"
fi
sh "$@"
status=$?
if [ -n "$armed" ]; then
    echo 0 > $t/enable
    echo "SVM-STATE-LOSS entries=$(grep -c 'kvm_entry:' $tracing/trace) range=0x${range% *}-0x${range#* }"
    grep -m 3 'kvm_entry:' $tracing/trace | sed 's/^/SVM-STATE-LOSS-EVIDENCE /'
fi
exit $status
"#;
/// The name [`NestedBoot::vm`] gives its one L2 VM.
pub const L2_NAME: &str = "l2";
/// The `--timeout` an L2 gets when its VMM arguments give none: well under L1's own limit
/// (600 s), so that a hung L2 ends with the VMM's report rather than L1's.
pub const L2_TIMEOUT: &str = "300";
/// Seconds an L2 CPU may go without a quiescent state before its kernel reports an RCU
/// stall (the kernel's default is 21): an L2 vCPU is a thread of an emulated L1 CPU, which
/// the host can leave unscheduled for that long on a loaded 2-core machine (seen once, in
/// CI, while an L2 booted); a stall that lasts longer is still reported, and fails the run.
pub const L2_RCU_STALL_TIMEOUT: u32 = 120;

/// A file to add to an initramfs.
#[derive(Debug, Clone)]
struct Added {
    path: String,
    mode: u32,
    data: Vec<u8>,
}

/// A boot of the nested host (L1) under QEMU TCG, and what it runs.
#[derive(Debug, Clone)]
pub struct NestedBoot {
    /// The L1 boot: kernel, base initramfs, vCPUs, memory, time limit, console log; its
    /// command is L1's (what `/init` runs there).
    pub host: Boot,
    /// The guest initramfs files are added to (`INITRAMFS`: what is at [`L2_INITRD`]).
    guest_initrd: PathBuf,
    host_files: Vec<Added>,
    guest_files: Vec<Added>,
    /// Whether L2 boots another initramfs than the one L1's carries
    /// ([`NestedBoot::guest_initrd`]).
    guest_initrd_replaced: bool,
}

/// How a nested boot ended: L1's result line and each L2 console.
#[derive(Debug, Clone)]
pub struct NestedRun {
    /// L1's run: its `/init` result (the status of what L1 ran, e.g. `mshare-vmm`). Its
    /// `output.stdout` is everything L1's user space wrote, the L2 lines among it.
    pub host: CommandRun,
    /// Each L2 VM's console lines, by VM name, prefix removed.
    pub guests: BTreeMap<String, String>,
    /// Each L2 VM's ttyS1 lines (its `/init` and command), by VM name, prefix removed.
    pub outputs: BTreeMap<String, String>,
    /// Boots of L1 it took: 1, or 2 when the first lost an L2's state ([`NestedBoot::run`]).
    pub boots: u32,
}

/// The host's TSC rate in kHz. A TCG guest's TSC runs at the host's rate; a guest kernel's
/// own calibration against the PIT fails under TCG now and then (the nested host's always:
/// it has no HPET or PM timer, and its KVM then never enters a guest), so guests are told
/// the rate.
pub fn host_tsc_khz() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86-64.
    let (t0, start) = (unsafe { core::arch::x86_64::_rdtsc() }, std::time::Instant::now());
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: as above.
    let t1 = unsafe { core::arch::x86_64::_rdtsc() };
    (t1.wrapping_sub(t0) as f64 / start.elapsed().as_secs_f64() / 1000.0) as u64
}

/// Quotes a word for `sh`.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

impl NestedBoot {
    /// A nested boot of the images `make images` built: L1 with 2 vCPUs and 3 GiB, 600 s,
    /// and no command yet.
    pub fn new(images: &ImagePaths) -> Result<Self, ImagesError> {
        let mut host = Boot::new(images.get("HOST_VMLINUX")?);
        host.initrd = Some(images.get("HOST_INITRAMFS")?.to_path_buf());
        host.cpu = "max,la57=off".to_owned();
        host.memory_mib = 3072;
        host.timeout = Duration::from_secs(600);
        host.cmdline = vec![
            format!("tsc_early_khz={}", host_tsc_khz()),
            "mshare_module=skip".to_owned(),
            // Unknown name=value words reach /init's environment: the guest image's paths
            // for fleet files (`kernel = "${L2_KERNEL}"`) and scripts.
            format!("L2_KERNEL={L2_KERNEL}"),
            format!("L2_INITRD={L2_INITRD}"),
        ];
        Ok(Self {
            host,
            guest_initrd: images.get("INITRAMFS")?.to_path_buf(),
            host_files: Vec::new(),
            guest_files: Vec::new(),
            guest_initrd_replaced: false,
        })
    }

    /// L2 boots `initrd` (at [`L2_INITRD`]) instead of the guest initramfs, e.g. the
    /// PostgreSQL image (`POSTGRES_INITRAMFS`).
    pub fn guest_initrd(&mut self, initrd: &Path) {
        self.guest_initrd = initrd.to_path_buf();
        self.guest_initrd_replaced = true;
    }

    /// Adds a file to L1's initramfs at `path` (absolute).
    pub fn add_host_file(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) {
        self.host_files.push(Added { path: path.to_owned(), mode, data: data.into() });
    }

    /// Adds a file to the L2 guest initramfs at `path` (absolute).
    pub fn add_guest_file(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) {
        self.guest_files.push(Added { path: path.to_owned(), mode, data: data.into() });
    }

    /// L1 runs `script` (a `sh` script) as its command, inside [`WATCH_SCRIPT`].
    pub fn script(&mut self, script: &str) {
        self.add_host_file(L1_SCRIPT, 0o755, script);
        self.host.command = vec!["sh".to_owned(), L1_SCRIPT.to_owned()];
    }

    /// L1 runs one L2 guest (named [`L2_NAME`]): `mshare-vmm run` of the guest image with
    /// `vmm_args` (vCPUs, memory, regions...) and the guest `command`; L1's status is the
    /// VMM's, which is the guest command's.
    pub fn vm(&mut self, vmm_args: &[&str], command: &[&str]) {
        let script = format!("exec {}\n", Self::vm_command(L2_NAME, vmm_args, command));
        self.script(&script);
    }

    /// The `mshare-vmm run` command line (quoted for `sh`) that boots the guest image as
    /// VM `name` with `vmm_args` and the guest `command`, its ttyS1 on the VMM's stdout
    /// (`--serial2 stdout`: where [`NestedRun::guest`] reads its result). Without a
    /// `--timeout` in `vmm_args` the VM gets [`L2_TIMEOUT`], so that an L2 that stops
    /// making progress ends with the VMM's report. The L2 kernel's RCU stall timeout is
    /// [`L2_RCU_STALL_TIMEOUT`] (added to any `--cmdline` of `vmm_args`).
    pub fn vm_command(name: &str, vmm_args: &[&str], command: &[&str]) -> String {
        let mut words: Vec<String> =
            ["mshare-vmm", "run", "--name", name, "--kernel", L2_KERNEL, "--initrd", L2_INITRD]
                .map(str::to_owned)
                .to_vec();
        if !vmm_args.contains(&"--timeout") {
            words.extend(["--timeout", L2_TIMEOUT].map(str::to_owned));
        }
        if !vmm_args.contains(&"--serial2") {
            words.extend(["--serial2", "stdout"].map(str::to_owned));
        }
        let stall = format!("rcupdate.rcu_cpu_stall_timeout={L2_RCU_STALL_TIMEOUT}");
        let mut args: Vec<String> = vmm_args.iter().map(|a| (*a).to_owned()).collect();
        match args.iter().position(|a| a == "--cmdline") {
            Some(at) if at + 1 < args.len() => args[at + 1] = format!("{} {stall}", args[at + 1]),
            _ => args.extend(["--cmdline".to_owned(), stall]),
        }
        words.extend(args);
        if !command.is_empty() {
            words.push("--".to_owned());
            words.extend(command.iter().map(|w| (*w).to_owned()));
        }
        words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ")
    }

    /// Boots L1 and waits for it to end. Fails when L1 printed no result line, or any
    /// kernel (L1 or L2) warned, oopsed or panicked.
    ///
    /// A boot in which L1 saw an L2 entered at L1's own `__svm_vcpu_run` (QEMU's emulated
    /// SVM lost the L2's state: docs/vmm.md) is no test of ours, whatever it printed: it is
    /// booted once more, and the retry is printed and recorded ([`retry_log`]). Nothing
    /// else is retried: a hang, a stall or a triple fault without that evidence fails.
    pub fn run(&self) -> Result<NestedRun, QemuError> {
        let output = self.boot()?;
        let Some(evidence) = state_loss(&output.stdout) else { return NestedRun::new(output) };
        record_retry(&self.run_name(), &evidence);
        let again = self.boot()?;
        if let Some(evidence) = state_loss(&again.stdout) {
            return Err(QemuError::Nested(format!(
                "QEMU's emulated SVM lost an L2's state in this boot and in its one retry (docs/vmm.md): {evidence}"
            )));
        }
        NestedRun::new(again).map(|run| NestedRun { boots: 2, ..run })
    }

    /// One boot of L1, inside the watch, and nothing checked or retried: for the
    /// emulator's own reproducer, which wants to see the loss.
    pub fn run_once(&self) -> Result<Output, QemuError> {
        self.boot()
    }

    /// Whether L1's user-space output `stdout` shows the emulator's state loss, and its
    /// evidence ([`WATCH_SCRIPT`]'s lines).
    pub fn state_loss(stdout: &str) -> Option<String> {
        state_loss(stdout)
    }

    /// What names this run in the retry record: its console log's name, or the thread's
    /// (libtest names a test's thread after the test).
    fn run_name(&self) -> String {
        self.host
            .console_log
            .as_deref()
            .and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .or_else(|| std::thread::current().name().map(str::to_owned))
            .unwrap_or_else(|| "nested".to_owned())
    }

    /// Boots L1 with the added files, its command (a `sh` script) inside [`WATCH_SCRIPT`],
    /// and waits for it to end, whatever happened there.
    fn boot(&self) -> Result<Output, QemuError> {
        let scratch = Scratch::new()?;
        let mut host = self.host.clone();
        let mut archive = Archive::new();
        archive.file(L1_WATCH, 0o755, WATCH_SCRIPT.as_bytes());
        match host.command.split_first() {
            Some((sh, script)) if sh == "sh" => {
                host.command = [vec!["sh".to_owned(), L1_WATCH.to_owned()], script.to_vec()].concat();
            }
            _ => {
                return Err(QemuError::Nested(format!(
                    "L1's command must be a `sh` script (NestedBoot::script), not {:?}",
                    host.command.join(" ")
                )))
            }
        }
        if !self.guest_files.is_empty() || self.guest_initrd_replaced {
            let mut guest = read(&self.guest_initrd)?;
            let mut added = Archive::new();
            add_all(&mut added, &self.guest_files);
            guest.extend(added.finish());
            archive.file(L2_INITRD, 0o644, &guest);
        }
        add_all(&mut archive, &self.host_files);
        let base = host.initrd.as_deref().ok_or_else(|| QemuError::Nested("no host initramfs".to_owned()))?;
        let mut initrd = read(base)?;
        initrd.extend(archive.finish());
        let path = scratch.0.join("host-initramfs.cpio");
        std::fs::write(&path, &initrd).map_err(|source| QemuError::File {
            what: "writing",
            path: path.clone(),
            source,
        })?;
        host.initrd = Some(path);
        host.run()
    }

    /// Boots L1 running the one L2 of [`NestedBoot::vm`] and returns the guest's result
    /// line: an error when the guest printed none or its status is not L1's (the VMM's).
    /// A boot with lost L2 state is retried as [`NestedBoot::run`] says.
    pub fn run_vm(&self) -> Result<(GuestResult, NestedRun), QemuError> {
        let run = self.run()?;
        let guest = run.guest(L2_NAME)?;
        if guest.status != run.host.result.status {
            return Err(QemuError::Nested(format!(
                "the guest's command exited {} but mshare-vmm exited {}; last console lines:\n{}",
                guest.status,
                run.host.result.status,
                run.host.output.tails()
            )));
        }
        Ok((guest, run))
    }
}

impl NestedRun {
    /// The run L1's channels show: fails when a kernel (L1 or L2) reported problems or L1
    /// printed no result line.
    fn new(output: Output) -> Result<Self, QemuError> {
        let guests = guest_consoles(&output.stdout);
        for (name, console) in &guests {
            check_guest_console(name, console, &output)?;
        }
        let outputs = guest_outputs(&output.stdout);
        let host = output.into_command_run()?;
        Ok(Self { host, guests, outputs, boots: 1 })
    }

    /// The result line of L2 VM `name`, from its ttyS1; from its console only for a VM
    /// whose VMM gave it no ttyS1 (no `--serial2`: its /init then writes on the console).
    /// An error when it printed none.
    pub fn guest(&self, name: &str) -> Result<GuestResult, QemuError> {
        let (lines, channel) = match self.outputs.get(name) {
            Some(lines) => (lines.as_str(), "ttyS1"),
            None => (self.guest_console(name), "console (it has no ttyS1)"),
        };
        console::guest_result(lines).ok_or_else(|| {
            QemuError::Nested(format!(
                "guest '{name}' printed no MSHARE-RESULT line on its {channel} ({}); {}",
                if lines.is_empty() { "no line at all" } else { "its lines end without one" },
                self.host.output.tails()
            ))
        })
    }

    /// The console lines of L2 VM `name` (empty if it printed none): its kernel's.
    pub fn guest_console(&self, name: &str) -> &str {
        self.guests.get(name).map_or("", String::as_str)
    }

    /// The ttyS1 lines of L2 VM `name` (empty if it printed none): its `/init`'s and its
    /// command's output.
    pub fn guest_stdout(&self, name: &str) -> &str {
        self.outputs.get(name).map_or("", String::as_str)
    }
}

/// Fails when L2 VM `name`'s console shows a kernel problem.
fn check_guest_console(name: &str, console: &str, output: &Output) -> Result<(), QemuError> {
    let problems = console::kernel_problems(console);
    let Some(first) = problems.first() else { return Ok(()) };
    Err(QemuError::KernelProblems {
        first_report: format!("(guest '{name}')\n{}", console::report_at(console, first, crate::qemu::REPORT_LINES)),
        problems,
        log: output.console_log.as_deref().map(crate::qemu::user_port_log).unwrap_or_else(|| "(not written)".into()),
    })
}

/// The evidence of lost L2 state on L1's ttyS1 ([`WATCH_SCRIPT`]'s lines), if any entry
/// was traced.
fn state_loss(stdout: &str) -> Option<String> {
    let summary = stdout.lines().find_map(|l| l.trim_end_matches('\r').split_once(LOSS_MARKER))?.1;
    let entries: u64 = summary.split_whitespace().next()?.parse().ok()?;
    if entries == 0 {
        return None;
    }
    let traced: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once(LOSS_EVIDENCE))
        .map(|(_, e)| e.trim_end_matches('\r').trim())
        .collect();
    Some(format!(
        "{entries} KVM entries into an L2 at L1's own __svm_vcpu_run ({summary}); first: {}",
        traced.join(" | ")
    ))
}

/// The file every retry of a nested boot is recorded in, a line each
/// (`target/nested-retries.log`); `make test` clears it first and sums it up last.
pub fn retry_log() -> PathBuf {
    crate::images::repo_root().join("target").join("nested-retries.log")
}

/// Says a retry on stderr (written directly: `cargo test` captures only what the print
/// macros write) and appends it to [`retry_log`].
fn record_retry(name: &str, evidence: &str) {
    use std::io::Write;
    let said = format!(
        "nested boot {name}: QEMU's emulated SVM lost an L2's state (docs/vmm.md); booting once more. {evidence}\n"
    );
    let _ = std::io::stderr().write_all(said.as_bytes());
    let path = retry_log();
    let written = path.parent().map(std::fs::create_dir_all).unwrap_or(Ok(())).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?
            .write_all(format!("{name}: {evidence}\n").as_bytes())
    });
    if let Err(e) = written {
        let _ = std::io::stderr()
            .write_all(format!("nested boot: recording the retry in {}: {e}\n", path.display()).as_bytes());
    }
}

/// The console lines of each VM on a channel where they are prefixed `[NAME] `.
pub fn guest_consoles(channel: &str) -> BTreeMap<String, String> {
    lines_by_vm(channel, "")
}

/// The ttyS1 lines of each VM on a channel where they are prefixed `[NAME/ttyS1] `.
pub fn guest_outputs(channel: &str) -> BTreeMap<String, String> {
    lines_by_vm(channel, "/ttyS1")
}

/// The lines prefixed `[NAME{suffix}] `, by NAME, prefix removed.
fn lines_by_vm(channel: &str, suffix: &str) -> BTreeMap<String, String> {
    let mut guests: BTreeMap<String, String> = BTreeMap::new();
    for line in channel.lines() {
        let Some((tag, rest)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) else { continue };
        let Some(name) = tag.strip_suffix(suffix) else { continue };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            continue;
        }
        let text = guests.entry(name.to_owned()).or_default();
        text.push_str(rest.trim_end_matches('\r'));
        text.push('\n');
    }
    guests
}

fn add_all(archive: &mut Archive, files: &[Added]) {
    for file in files {
        archive.file(&file.path, file.mode, &file.data);
    }
}

fn read(path: &Path) -> Result<Vec<u8>, QemuError> {
    std::fs::read(path).map_err(|source| QemuError::File { what: "reading", path: path.to_path_buf(), source })
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, QemuError> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mshare-nested-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| QemuError::File {
            what: "creating",
            path: dir.clone(),
            source,
        })?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consoles_are_split_by_vm_name() {
        let console = "L1 boot line\r\n[l2] Linux version 7.3\r\r\n[writer] MSHARE-RESULT status=0 module=loaded uptime=1.0\n\
                       mshare-vmm: vm 'writer': the guest ended\n[l2] MSHARE-RESULT status=3 module=loaded uptime=2.5\r\n\
                       [not a name] x\n[] y\n";
        let guests = guest_consoles(console);
        assert_eq!(guests.keys().collect::<Vec<_>>(), ["l2", "writer"]);
        assert_eq!(guests["l2"], "Linux version 7.3\nMSHARE-RESULT status=3 module=loaded uptime=2.5\n");
        assert_eq!(console::guest_result(&guests["l2"]).unwrap().status, 3);
        assert_eq!(console::guest_result(&guests["writer"]).unwrap().status, 0);
    }

    #[test]
    fn ttys1_lines_are_split_by_vm_name_apart_from_the_consoles() {
        let channel = "[l2] Linux version 7.3\r\n[l2/ttyS1] MSHARE-RESULT status=0 module=loaded uptime=1.0\r\n\
                       [l2] [ 3.1] rcu: a message\n[w/ttyS1] hello\n[/ttyS1] nameless\n";
        let outputs = guest_outputs(channel);
        assert_eq!(outputs.keys().collect::<Vec<_>>(), ["l2", "w"]);
        assert_eq!(console::guest_result(&outputs["l2"]).unwrap().status, 0);
        assert_eq!(guest_consoles(channel)["l2"], "Linux version 7.3\n[ 3.1] rcu: a message\n");
    }

    #[test]
    fn lost_state_is_read_from_the_watch_lines_only_when_an_entry_was_traced() {
        let clean = "mshare-vmm: vm 'l2': the guest ended\nSVM-STATE-LOSS entries=0 range=0xffffffff81a98200-0xffffffff81a98400\n";
        assert_eq!(state_loss(clean), None);
        let lost = "SVM-STATE-LOSS entries=2 range=0xa-0xb\r\nSVM-STATE-LOSS-EVIDENCE  vcpu0-77 [001] 12.5: kvm_entry: vcpu 0, rip 0xffffffff81a9829c\r\n";
        let evidence = state_loss(lost).unwrap();
        assert!(evidence.starts_with("2 KVM entries into an L2 at L1's own __svm_vcpu_run"), "{evidence}");
        assert!(evidence.ends_with("kvm_entry: vcpu 0, rip 0xffffffff81a9829c"), "{evidence}");
        assert_eq!(
            state_loss("mshare-vmm: vm 'l2': vCPU 0 triple-faulted (KVM_EXIT_SHUTDOWN)\n"),
            None,
            "no watch, no evidence"
        );
    }

    #[test]
    fn the_vm_command_quotes_what_sh_would_split() {
        let line = NestedBoot::vm_command("l2", &["--memory", "1G"], &["sh", "-c", "mshare list && exit 3"]);
        assert_eq!(
            line,
            "mshare-vmm run --name l2 --kernel /l2/vmlinux --initrd /l2/initramfs.cpio --timeout 300 --serial2 stdout \
             --memory 1G --cmdline rcupdate.rcu_cpu_stall_timeout=120 -- sh -c 'mshare list && exit 3'"
        );
        let own = NestedBoot::vm_command("l2", &["--timeout", "60", "--cmdline", "quiet"], &[]);
        assert_eq!(
            own,
            "mshare-vmm run --name l2 --kernel /l2/vmlinux --initrd /l2/initramfs.cpio --serial2 stdout --timeout 60 \
             --cmdline 'quiet rcupdate.rcu_cpu_stall_timeout=120'"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn the_host_tsc_rate_is_plausible() {
        let khz = host_tsc_khz();
        assert!((100_000..10_000_000).contains(&khz), "{khz} kHz");
    }
}
