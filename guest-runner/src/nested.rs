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
//! L2 consoles come back through L1's: `mshare-vmm --name NAME` (and every fleet VM)
//! prefixes each console line with `[NAME] `. [`NestedRun::guest`] reads one L2's lines
//! and its own `MSHARE-RESULT`; kernel problems anywhere (L1 or any L2) fail the run.

use crate::console::{self, GuestResult};
use crate::cpio::Archive;
use crate::images::{ImagePaths, ImagesError};
use crate::qemu::{tail, Boot, CommandRun, Output, QemuError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The guest kernel inside L1.
pub const L2_KERNEL: &str = "/l2/vmlinux";
/// The guest initramfs inside L1 (with the files added by [`NestedBoot::add_guest_file`]).
pub const L2_INITRD: &str = "/l2/initramfs.cpio";
/// Where [`NestedBoot::script`] puts L1's script.
pub const L1_SCRIPT: &str = "/nested/run.sh";
/// The name [`NestedBoot::vm`] gives its one L2 VM.
pub const L2_NAME: &str = "l2";
/// The `--timeout` an L2 gets when its VMM arguments give none: well under L1's own limit
/// (600 s), so that a hung L2 ends with the VMM's report rather than L1's.
pub const L2_TIMEOUT: &str = "300";

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
}

/// How a nested boot ended: L1's result line and each L2 console.
#[derive(Debug, Clone)]
pub struct NestedRun {
    /// L1's run: its `/init` result (the status of what L1 ran, e.g. `mshare-vmm`).
    pub host: CommandRun,
    /// Each L2 VM's console lines, by VM name, prefix removed.
    pub guests: BTreeMap<String, String>,
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
        })
    }

    /// Adds a file to L1's initramfs at `path` (absolute).
    pub fn add_host_file(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) {
        self.host_files.push(Added { path: path.to_owned(), mode, data: data.into() });
    }

    /// Adds a file to the L2 guest initramfs at `path` (absolute).
    pub fn add_guest_file(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) {
        self.guest_files.push(Added { path: path.to_owned(), mode, data: data.into() });
    }

    /// L1 runs `script` (a `sh` script) as its command.
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
    /// VM `name` with `vmm_args` and the guest `command`. Without a `--timeout` in
    /// `vmm_args` the VM gets [`L2_TIMEOUT`], so that an L2 that stops making progress
    /// ends (and, before its /init, is retried: [`NestedBoot::run_vm`]).
    pub fn vm_command(name: &str, vmm_args: &[&str], command: &[&str]) -> String {
        let mut words: Vec<&str> =
            vec!["mshare-vmm", "run", "--name", name, "--kernel", L2_KERNEL, "--initrd", L2_INITRD];
        if !vmm_args.contains(&"--timeout") {
            words.extend_from_slice(&["--timeout", L2_TIMEOUT]);
        }
        words.extend_from_slice(vmm_args);
        if !command.is_empty() {
            words.push("--");
            words.extend_from_slice(command);
        }
        words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ")
    }

    /// Boots L1 and waits for it to end. Fails when L1 printed no result line, or any
    /// kernel (L1 or L2) warned, oopsed or panicked.
    pub fn run(&self) -> Result<NestedRun, QemuError> {
        NestedRun::new(self.boot()?)
    }

    /// Boots L1 as [`NestedBoot::run`] does, and once more if an L2 VM failed before its
    /// /init ran in the way QEMU's emulated SVM makes L2 boots fail now and then
    /// (docs/vmm.md), and only that: it triple-faulted, or it stopped making progress —
    /// until the VMM's `--timeout`, or for long enough that its kernel reported an RCU
    /// stall while nothing else on the console reported a problem. The retry is printed on
    /// stderr with the failed boot's console, so it shows in a test's or a user's output.
    pub fn run_retrying_early_crash(&self) -> Result<NestedRun, QemuError> {
        let output = self.boot()?;
        let Some((name, how)) = early_l2_failure(&output.console) else { return NestedRun::new(output) };
        eprintln!(
            "nested boot: guest '{name}' {how} before its /init ran (QEMU's emulated SVM, docs/vmm.md); \
             booting the nested host once more. The failed boot's console:\n{}",
            tail(&output.console)
        );
        self.run()
    }

    /// Boots L1 with the added files and waits for it to end, whatever happened there.
    fn boot(&self) -> Result<Output, QemuError> {
        let scratch = Scratch::new()?;
        let mut host = self.host.clone();
        let mut archive = Archive::new();
        if !self.guest_files.is_empty() {
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
    ///
    /// Now and then (a few boots in a hundred) an L2 triple-faults or stops making
    /// progress before its kernel reaches /init under QEMU's emulated SVM (docs/vmm.md,
    /// "nested host"); that boot, and only that (a triple fault, or the VMM's timeout,
    /// before the guest's /init ran), is retried once, and the retry is printed on
    /// stderr, so it shows in the test's output.
    pub fn run_vm(&self) -> Result<(GuestResult, NestedRun), QemuError> {
        let run = self.run_retrying_early_crash()?;
        let guest = run.guest(L2_NAME)?;
        if guest.status != run.host.result.status {
            return Err(QemuError::Nested(format!(
                "the guest's command exited {} but mshare-vmm exited {}; last console lines:\n{}",
                guest.status,
                run.host.result.status,
                tail(&run.host.output.console)
            )));
        }
        Ok((guest, run))
    }
}

impl NestedRun {
    /// The run L1's console shows: fails when a kernel (L1 or L2) reported problems or L1
    /// printed no result line.
    fn new(output: Output) -> Result<Self, QemuError> {
        let host = output.into_command_run()?;
        let guests = guest_consoles(&host.output.console);
        Ok(Self { host, guests })
    }

    /// The result line of L2 VM `name`: an error when it printed none.
    pub fn guest(&self, name: &str) -> Result<GuestResult, QemuError> {
        let lines = self.guest_console(name);
        console::guest_result(lines).ok_or_else(|| {
            QemuError::Nested(format!(
                "guest '{name}' printed no MSHARE-RESULT line ({}); last console lines:\n{}",
                if lines.is_empty() { "no console line at all" } else { "its console ends without one" },
                tail(&self.host.output.console)
            ))
        })
    }

    /// The console lines of L2 VM `name` (empty if it printed none).
    pub fn guest_console(&self, name: &str) -> &str {
        self.guests.get(name).map_or("", String::as_str)
    }
}

/// The L2 VM of L1's `console` that failed before its /init started (no `MSHARE-INIT`
/// line from it), and how: mshare-vmm reported a triple fault or its `--timeout`, or the
/// guest kernel reported an RCU stall and no other kernel problem is on the console.
fn early_l2_failure(console: &str) -> Option<(String, &'static str)> {
    let problems = console::kernel_problems(console);
    guest_consoles(console).into_iter().find_map(|(name, lines)| {
        let before_init = lines.split("MSHARE-INIT").next().unwrap_or_default();
        // Any other problem (in L1, another VM, this one's /init, or a warning next to the
        // stall) is never retried.
        let early = console::kernel_problems(before_init);
        if early.len() != problems.len() || !early.iter().all(console::Problem::is_part_of_a_stall_report) {
            return None;
        }
        let vm = format!("vm '{name}': ");
        let died = before_init.len() == lines.len()
            && console
                .lines()
                .any(|l| l.contains(&vm) && (l.contains("triple-faulted") || l.contains("did not finish within")));
        if died {
            Some((name, "triple-faulted or stopped"))
        } else if early.iter().any(console::Problem::is_rcu_stall) {
            Some((name, "stalled (its kernel reported an RCU stall)"))
        } else {
            None
        }
    })
}

/// The console lines of each VM on a console where they are prefixed `[NAME] `.
pub fn guest_consoles(console: &str) -> BTreeMap<String, String> {
    let mut guests: BTreeMap<String, String> = BTreeMap::new();
    for line in console.lines() {
        let Some((name, rest)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) else { continue };
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

    const STALL: &str = "[l2] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:\n[l2] Call Trace:\n";

    #[test]
    fn an_l2_that_stalled_or_died_before_its_init_is_an_early_failure() {
        let stalled = format!("L1 up\n[l2] Linux version 7.3\n{STALL}[l2] MSHARE-INIT uptime=90.0\n[l2] MSHARE-RESULT status=0 module=loaded uptime=99.0\n");
        assert_eq!(early_l2_failure(&stalled), Some(("l2".to_owned(), "stalled (its kernel reported an RCU stall)")));
        let died = "[l2] Linux version 7.3\nmshare-vmm: vm 'l2': the guest triple-faulted (KVM_EXIT_SHUTDOWN)\n";
        assert_eq!(early_l2_failure(died), Some(("l2".to_owned(), "triple-faulted or stopped")));
        let hung = "[l2] Linux version 7.3\nmshare-vmm: vm 'l2': did not finish within 300 s\n";
        assert_eq!(early_l2_failure(hung).map(|f| f.1), Some("triple-faulted or stopped"));
    }

    #[test]
    fn a_problem_after_init_or_outside_the_guest_is_never_an_early_failure() {
        let after_init = format!("[l2] Linux version 7.3\n[l2] MSHARE-INIT uptime=3.0\n{STALL}");
        assert_eq!(early_l2_failure(&after_init), None);
        let l1_warned = format!("WARNING: CPU: 0 PID: 9 at arch/x86/kvm/mmu/tdp_mmu.c:1 x\n[l2] Linux\n{STALL}");
        assert_eq!(early_l2_failure(&l1_warned), None);
        let other_warning = format!("[l2] Linux\n{STALL}[l2] WARNING: CPU: 1 PID: 1 at mm/memory.c:1 y\n");
        assert_eq!(early_l2_failure(&other_warning), None, "a warning with the stall is not retried");
        let finished_died = "[l2] MSHARE-INIT uptime=3.0\nmshare-vmm: vm 'l2': the guest triple-faulted\n";
        assert_eq!(early_l2_failure(finished_died), None);
        assert_eq!(early_l2_failure("[l2] Linux\n[l2] MSHARE-INIT uptime=3.0\n"), None);
    }

    #[test]
    fn the_vm_command_quotes_what_sh_would_split() {
        let line = NestedBoot::vm_command("l2", &["--memory", "1G"], &["sh", "-c", "mshare list && exit 3"]);
        assert_eq!(
            line,
            "mshare-vmm run --name l2 --kernel /l2/vmlinux --initrd /l2/initramfs.cpio --timeout 300 --memory 1G \
             -- sh -c 'mshare list && exit 3'"
        );
        let own = NestedBoot::vm_command("l2", &["--timeout", "60"], &[]);
        assert_eq!(own, "mshare-vmm run --name l2 --kernel /l2/vmlinux --initrd /l2/initramfs.cpio --timeout 60");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn the_host_tsc_rate_is_plausible() {
        let khz = host_tsc_khz();
        assert!((100_000..10_000_000).contains(&khz), "{khz} kHz");
    }
}
