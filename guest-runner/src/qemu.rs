//! Booting the guest under QEMU TCG: the fast path for guest-side tests on hosts whose KVM
//! cannot run guest kernel code quickly (see the design's test plan).
//!
//! The guest is a `microvm` with ACPI off (QEMU then writes an MP table, so an SMP guest
//! sees all its CPUs), the ELF vmlinux entered through PVH, the serial console on a pipe,
//! and `-no-reboot` so that the guest's `reboot -f` (with `reboot=t`) ends QEMU.
//!
//! Two channels come back, each on a pipe of its own: the kernel's console (the first
//! UART, ttyS0) and the guest's user space (a second UART, ttyS1, where `/init` puts its
//! command's output and result line: `mshare_out=ttyS1`). The kernel prints on its console
//! at any moment, in the middle of any line written there; it never writes to ttyS1, so
//! what a test parses there is what the guest's programs wrote, whole.

use crate::console::{self, GuestResult, ModuleState, Problem};
use crate::images::{ImagePaths, ImagesError};
use crate::ktap;
use mshare_uapi::formats::{guest_command_word, CommandWordError};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The QEMU every boot uses: `QEMU` from the environment where set, else the one `make
/// images` built (`QEMU=` of `make -s image-paths`: Debian's QEMU with the project's fixes
/// to the emulated SVM the nested host runs on, images/qemu/patches/). Debian's packaged
/// QEMU loses L2 guests' state (docs/vmm.md), so it is never picked silently.
pub fn qemu_binary() -> Result<String, ImagesError> {
    if let Ok(binary) = std::env::var("QEMU") {
        return Ok(binary);
    }
    Ok(ImagePaths::discover()?.get("QEMU")?.display().to_string())
}

/// Kernel command line every boot gets: serial console, reboot by triple fault (no ACPI),
/// reboot at once on panic so a dead guest ends QEMU, `/init`'s output on ttyS1.
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=t panic=-1 mshare_out=ttyS1";

/// The file descriptor QEMU inherits for the guest's ttyS1 (its chardev opens
/// `/dev/fd/3`, the write end of a pipe the runner reads).
const USER_PORT_FD: i32 = 3;

/// Lines of console kept in error messages.
const TAIL_LINES: usize = 40;
/// Console lines shown from a kernel's first problem report on (a stall report with its
/// trace, a WARNING with its registers).
pub(crate) const REPORT_LINES: usize = 30;

/// What went wrong booting or running a guest.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// QEMU could not be started.
    #[error("cannot start {binary}: {source} (`make images` builds the project's QEMU)")]
    Spawn {
        /// The binary tried.
        binary: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A guest command word cannot be put on a kernel command line.
    #[error(
        "guest command word {0:?} contains a double quote or a newline, which the kernel command line cannot carry"
    )]
    BadWord(String),
    /// The kernel hands `/init` the words after the first `--` and drops everything from
    /// a second one on.
    #[error(
        "the guest command has a bare `--` word, after which the kernel drops every word; put the command in a script"
    )]
    DoubleDash,
    /// The guest did not end in time.
    #[error("the guest did not finish within {seconds} s; last console lines:\n{tail}")]
    Timeout {
        /// The time limit.
        seconds: u64,
        /// Last console lines.
        tail: String,
    },
    /// QEMU ended without the guest's result line.
    #[error("QEMU exited ({status}) without the guest's MSHARE-RESULT line on its ttyS1; {tail}")]
    NoResult {
        /// QEMU's exit status.
        status: String,
        /// Last console lines (and QEMU's stderr).
        tail: String,
    },
    /// The kernel printed warnings, BUGs, oopses or panics.
    #[error("the guest kernel reported problems:\n{}\nthe first report:\n{first_report}\nconsole log: {}", problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"), log.display())]
    KernelProblems {
        /// The offending lines.
        problems: Vec<Problem>,
        /// The console from the first offending line on (a few lines: what a CI log
        /// shows when the console log itself is gone).
        first_report: String,
        /// Where the whole console was written.
        log: PathBuf,
    },
    /// A KUnit suite on the console (the module's, run when it loads, or the test kernel's
    /// at boot) did not pass: whatever the boot was for, the module it ran is broken.
    #[error("KUnit on the guest's console: {problems}; console log: {}", log.display())]
    KunitFailed {
        /// The verdict's problems.
        problems: String,
        /// Where the whole console was written.
        log: PathBuf,
    },
    /// A file of the boot (an initramfs, a scratch directory) could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    File {
        /// What was being done ("reading", "writing", "creating").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A nested boot's guest did not report, or reported something other than its host.
    #[error("nested boot: {0}")]
    Nested(String),
    /// No QEMU to run: `make images` has not built it and `QEMU` is not set.
    #[error("which QEMU to run: {0}")]
    Binary(#[from] ImagesError),
    /// The console log could not be written.
    #[error("writing console log {}: {source}", path.display())]
    Log {
        /// The log path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One guest boot: kernel, initramfs, command line, resources, time limit.
#[derive(Debug, Clone)]
pub struct Boot {
    /// ELF vmlinux (PVH entry) or bzImage.
    pub kernel: PathBuf,
    /// Uncompressed cpio initramfs.
    pub initrd: Option<PathBuf>,
    /// Kernel command-line words added after [`BASE_CMDLINE`].
    pub cmdline: Vec<String>,
    /// Words passed to `/init` after `--`.
    pub command: Vec<String>,
    /// vCPUs (at least 2 so page-table sharing meets TLB shootdowns).
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Where to write the console as it arrives.
    pub console_log: Option<PathBuf>,
    /// Echo the console to stderr as it arrives.
    pub echo: bool,
    /// Shared-memory files given to the guest as ivshmem-plain devices (path, size).
    /// QEMU's microvm has no PCI without ACPI, so a boot with these uses the `pc` machine.
    pub ivshmem: Vec<(PathBuf, u64)>,
    /// QEMU's `-cpu` model (`max`: every feature TCG emulates, AMD SVM with nested paging
    /// among them).
    pub cpu: String,
    /// Whether the host may back guest RAM with transparent huge pages (QEMU asks for them).
    /// Off, a guest's host memory is what it touched in 4 KiB pages, not rounded up to
    /// 2 MiB around each scattered allocation: what a memory comparison between guests
    /// wants.
    pub host_thp: bool,
}

/// What a boot printed and how QEMU ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// Everything the guest wrote to its serial console (the kernel's messages), then
    /// QEMU's stderr.
    pub console: String,
    /// Everything the guest's user space wrote to its ttyS1: `/init`'s lines (`MSHARE-INIT`,
    /// `MSHARE-RESULT`) and its command's output, stdout and stderr.
    pub stdout: String,
    /// QEMU's exit status.
    pub status: ExitStatus,
    /// Wall-clock time from QEMU's start to its end.
    pub elapsed: Duration,
    /// Where the console was written, if it was.
    pub console_log: Option<PathBuf>,
}

/// A guest command that ran to its result line on a clean console.
#[derive(Debug, Clone)]
pub struct CommandRun {
    /// The `/init` result line.
    pub result: GuestResult,
    /// The boot itself.
    pub output: Output,
}

impl Boot {
    /// A boot of `kernel` with the defaults: 2 vCPUs, 512 MiB, 120 s.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: None,
            cmdline: Vec::new(),
            command: Vec::new(),
            cpus: 2,
            memory_mib: 512,
            timeout: Duration::from_secs(120),
            console_log: None,
            echo: false,
            ivshmem: Vec::new(),
            cpu: "max".to_owned(),
            host_thp: true,
        }
    }

    /// A boot of the guest image: the guest kernel with its initramfs (`VMLINUX`,
    /// `INITRAMFS`), the defaults otherwise.
    pub fn guest_image(images: &ImagePaths) -> Result<Self, ImagesError> {
        let mut boot = Self::new(images.get("VMLINUX")?);
        boot.initrd = Some(images.get("INITRAMFS")?.to_path_buf());
        Ok(boot)
    }

    /// The kernel command line: base words, extra words, then `-- command`.
    pub fn kernel_cmdline(&self) -> Result<String, QemuError> {
        let mut line = String::from(BASE_CMDLINE);
        for word in &self.cmdline {
            line.push(' ');
            line.push_str(word);
        }
        if !self.command.is_empty() {
            line.push_str(" --");
            for word in &self.command {
                let quoted = guest_command_word(word).map_err(|e| match e {
                    CommandWordError::DoubleDash => QemuError::DoubleDash,
                    CommandWordError::Unquotable => QemuError::BadWord(word.clone()),
                })?;
                line.push(' ');
                line.push_str(&quoted);
            }
        }
        Ok(line)
    }

    /// The QEMU argument list.
    pub fn qemu_args(&self) -> Result<Vec<String>, QemuError> {
        let machine = if self.ivshmem.is_empty() { "microvm,acpi=off" } else { "pc" };
        let mut args: Vec<String> =
            ["-M", machine, "-accel", "tcg", "-cpu", &self.cpu, "-nodefaults", "-no-user-config"]
                .iter()
                .chain(&["-display", "none", "-serial", "stdio", "-no-reboot"])
                .map(|s| (*s).to_owned())
                .collect();
        for (i, (path, size)) in self.ivshmem.iter().enumerate() {
            args.push("-object".to_owned());
            args.push(format!("memory-backend-file,id=ivshmem{i},mem-path={},size={size},share=on", path.display()));
            args.push("-device".to_owned());
            args.push(format!("ivshmem-plain,memdev=ivshmem{i}"));
        }
        args.extend([
            "-chardev".to_owned(),
            format!("file,id=userport,path=/dev/fd/{USER_PORT_FD}"),
            "-device".to_owned(),
            "isa-serial,chardev=userport,index=1".to_owned(),
        ]);
        args.extend(["-smp".to_owned(), self.cpus.to_string(), "-m".to_owned(), format!("{}M", self.memory_mib)]);
        args.extend(["-kernel".to_owned(), self.kernel.display().to_string()]);
        if let Some(initrd) = &self.initrd {
            args.extend(["-initrd".to_owned(), initrd.display().to_string()]);
        }
        args.extend(["-append".to_owned(), self.kernel_cmdline()?]);
        Ok(args)
    }

    /// Boots and waits for QEMU to end, at most [`Boot::timeout`].
    pub fn run(&self) -> Result<Output, QemuError> {
        let binary = qemu_binary()?;
        let args = self.qemu_args()?;
        let mut log = match &self.console_log {
            Some(path) => {
                let mut file = create_log(path)?;
                writeln!(file, "# {binary} {}", args.join(" "))
                    .map_err(|source| QemuError::Log { path: path.clone(), source })?;
                Some(file)
            }
            None => None,
        };
        let user_log = self.console_log.as_deref().map(|path| create_log(&user_port_log(path))).transpose()?;
        let (user_port, user_port_writer) =
            std::io::pipe().map_err(|source| QemuError::Spawn { binary: binary.clone(), source })?;
        let start = Instant::now();
        let mut command = Command::new(&binary);
        let thp_disable = !self.host_thp;
        let writer = user_port_writer.as_raw_fd();
        // SAFETY: between fork and exec only dup2, fcntl and prctl run, which are
        // async-signal-safe; `writer` is open in the parent until after the spawn.
        unsafe {
            command.pre_exec(move || {
                // dup2 onto itself would keep close-on-exec: clear it instead.
                let moved = if writer == USER_PORT_FD {
                    libc::fcntl(writer, libc::F_SETFD, 0)
                } else {
                    libc::dup2(writer, USER_PORT_FD)
                };
                if moved < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // PR_SET_THP_DISABLE survives the exec.
                if thp_disable && libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = command.args(&args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
        // QEMU holds the only write end now: the reader sees EOF when QEMU ends.
        drop(user_port_writer);
        let mut child = spawned.map_err(|source| QemuError::Spawn { binary: binary.clone(), source })?;

        let console = Arc::new(Mutex::new(Vec::<u8>::new()));
        let user = Arc::new(Mutex::new(Vec::<u8>::new()));
        let echo = self.echo;
        let console_pump = child.stdout.take().map(|out| {
            let console = Arc::clone(&console);
            let log = log.as_ref().and_then(|f| f.try_clone().ok());
            thread::spawn(move || pump(out, &console, log, echo))
        });
        let user_pump = {
            let user = Arc::clone(&user);
            thread::spawn(move || pump(user_port, &user, user_log, echo))
        };
        // Drained while QEMU runs: a full stderr pipe would block it.
        let stderr = child.stderr.take().map(|mut err| {
            thread::spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                text
            })
        });
        let finished = wait_until(&mut child, start + self.timeout);
        if let Some(handle) = console_pump {
            let _ = handle.join();
        }
        let _ = user_pump.join();
        let text = |buffer: &Mutex<Vec<u8>>| {
            buffer.lock().map(|c| String::from_utf8_lossy(&c).into_owned()).unwrap_or_default()
        };
        let (mut console, stdout) = (text(&console), text(&user));
        let qemu_stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
        if !qemu_stderr.is_empty() {
            console.push_str("\n[qemu stderr]\n");
            console.push_str(&qemu_stderr);
            if let Some(file) = log.as_mut() {
                let _ = write!(file, "\n[qemu stderr]\n{qemu_stderr}");
            }
        }
        match finished {
            Some(status) => {
                Ok(Output { console, stdout, status, elapsed: start.elapsed(), console_log: self.console_log.clone() })
            }
            None => Err(QemuError::Timeout { seconds: self.timeout.as_secs(), tail: both_tails(&console, &stdout) }),
        }
    }

    /// Boots, runs the guest command and returns its result line. Fails when the guest
    /// never printed one, or when the kernel warned, oopsed or panicked on the way.
    pub fn run_command(&self) -> Result<CommandRun, QemuError> {
        self.run()?.into_command_run()
    }
}

impl Output {
    /// Fails when the console shows a kernel warning, BUG, oops or panic.
    pub fn check_clean(&self) -> Result<(), QemuError> {
        let problems = console::kernel_problems(&self.console);
        let Some(first) = problems.first() else { return Ok(()) };
        let first_report = console::report_at(&self.console, first, REPORT_LINES);
        Err(QemuError::KernelProblems {
            problems,
            first_report,
            log: self.console_log.clone().unwrap_or_else(|| PathBuf::from("(not written)")),
        })
    }

    /// The run of a guest command: fails when the kernel reported problems or the guest
    /// printed no result line on its ttyS1.
    pub fn into_command_run(self) -> Result<CommandRun, QemuError> {
        self.check_clean()?;
        self.check_kunit()?;
        let result = console::guest_result(&self.stdout).ok_or_else(|| QemuError::NoResult {
            status: self.status.to_string(),
            tail: both_tails(&self.console, &self.stdout),
        })?;
        Ok(CommandRun { result, output: self })
    }

    /// Fails when KUnit ran (its KTAP header is on the console) and a case failed or did
    /// not finish.
    pub fn check_kunit(&self) -> Result<(), QemuError> {
        let report = ktap::parse(&self.console);
        if !report.seen_header {
            return Ok(());
        }
        report.verdict().map(|_| ()).map_err(|problems| QemuError::KunitFailed {
            problems,
            log: self.console_log.clone().unwrap_or_else(|| PathBuf::from("(not written)")),
        })
    }

    /// The last lines of both channels, for error messages.
    pub fn tails(&self) -> String {
        both_tails(&self.console, &self.stdout)
    }
}

impl CommandRun {
    /// Whether `/init` loaded mshare.ko.
    pub fn module_loaded(&self) -> bool {
        self.result.module == ModuleState::Loaded
    }
}

/// Copies QEMU's stdout into the console buffer, the log and (if asked) stderr.
fn pump(mut out: impl Read, console: &Mutex<Vec<u8>>, mut log: Option<File>, echo: bool) {
    let mut buf = [0u8; 4096];
    loop {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Ok(mut c) = console.lock() {
                    c.extend_from_slice(&buf[..n]);
                }
                if let Some(file) = log.as_mut() {
                    let _ = file.write_all(&buf[..n]);
                }
                if echo {
                    let _ = std::io::stderr().write_all(&buf[..n]);
                }
            }
        }
    }
}

/// Waits for the child until `deadline`; kills it and returns `None` past it.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The last lines of the console and of ttyS1, each headed, for error messages.
pub fn both_tails(console: &str, stdout: &str) -> String {
    format!(
        "last console lines:\n{}\nlast ttyS1 lines (the guest's /init and command):\n{}",
        tail(console),
        tail(stdout)
    )
}

/// Creates a log file and its directory.
fn create_log(path: &std::path::Path) -> Result<File, QemuError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| QemuError::Log { path: path.to_path_buf(), source })?;
    }
    File::create(path).map_err(|source| QemuError::Log { path: path.to_path_buf(), source })
}

/// Where ttyS1 is logged beside the console log `path`: `NAME.ttyS1.log` for `NAME.log`.
pub fn user_port_log(path: &std::path::Path) -> PathBuf {
    path.with_extension("ttyS1.log")
}

/// The last lines of a console, for error messages.
pub fn tail(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// A console log path under `target/guest-logs/` for a test or a run.
pub fn log_path(name: &str) -> PathBuf {
    crate::images::repo_root().join("target").join("guest-logs").join(format!("{name}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_follows_double_dash_and_words_with_spaces_are_quoted() {
        let mut boot = Boot::new("/vmlinux");
        boot.cmdline = vec!["mshare_exit=reboot".into()];
        boot.command = vec!["sh".into(), "-c".into(), "modcheck && exit 3".into()];
        assert_eq!(
            boot.kernel_cmdline().unwrap(),
            "console=ttyS0 reboot=t panic=-1 mshare_out=ttyS1 mshare_exit=reboot -- sh -c \"modcheck && exit 3\""
        );
    }

    #[test]
    fn no_command_no_double_dash() {
        assert_eq!(Boot::new("/vmlinux").kernel_cmdline().unwrap(), BASE_CMDLINE);
    }

    #[test]
    fn a_word_with_a_quote_is_refused() {
        let mut boot = Boot::new("/vmlinux");
        boot.command = vec!["echo".into(), "say \"hi\"".into()];
        assert!(matches!(boot.kernel_cmdline(), Err(QemuError::BadWord(w)) if w == "say \"hi\""));
        boot.command = vec!["mshare-vmm".into(), "run".into(), "--".into(), "ls".into()];
        assert!(matches!(boot.kernel_cmdline(), Err(QemuError::DoubleDash)));
    }

    #[test]
    fn qemu_args_boot_microvm_without_acpi_and_never_reboot() {
        let mut boot = Boot::new("/k/vmlinux");
        boot.initrd = Some("/k/initramfs.cpio".into());
        let args = boot.qemu_args().unwrap();
        let joined = args.join(" ");
        assert!(joined.contains("-M microvm,acpi=off -accel tcg"));
        assert!(joined.contains("-no-reboot"));
        assert!(joined.contains("-chardev file,id=userport,path=/dev/fd/3 -device isa-serial,chardev=userport,index=1"));
        assert!(joined.contains("-smp 2 -m 512M -kernel /k/vmlinux -initrd /k/initramfs.cpio -append"));
    }

    #[test]
    fn ivshmem_needs_the_pc_machine_and_a_shared_backend() {
        let mut boot = Boot::new("/k/vmlinux");
        boot.ivshmem = vec![("/dev/shm/db".into(), 4 << 20)];
        let joined = boot.qemu_args().unwrap().join(" ");
        assert!(joined.starts_with("-M pc -accel tcg"), "{joined}");
        assert!(joined.contains("-object memory-backend-file,id=ivshmem0,mem-path=/dev/shm/db,size=4194304,share=on"));
        assert!(joined.contains("-device ivshmem-plain,memdev=ivshmem0"));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let console: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = tail(&console);
        assert!(t.starts_with("line 60\n") && t.ends_with("line 99"));
    }
}
