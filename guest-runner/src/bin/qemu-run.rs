//! qemu-run: boot the mshare-vmm guest under QEMU TCG and return the guest command's status.
//!
//! ```text
//! qemu-run [OPTIONS] KERNEL [-- COMMAND...]
//! qemu-run --nested [OPTIONS] -- COMMAND...
//!   --initrd PATH      initramfs (uncompressed cpio)
//!   --append WORD      add a kernel command-line word (repeatable)
//!   --cpus N           vCPUs (default 2)
//!   --memory MIB       guest memory in MiB (default 512)
//!   --timeout SECS     wall-clock limit (default 120)
//!   --log FILE         also write the console to FILE
//!   --ivshmem FILE:SIZE  give the guest FILE as an ivshmem-plain device of SIZE bytes
//!                      (K/M/G suffixes; repeatable; the machine becomes `pc`)
//!   --ktap             a test kernel: parse its KTAP, exit 0 if every case passed
//!   --quiet            do not echo the console
//!   --nested           boot the nested KVM test host instead (HOST_VMLINUX and
//!                      HOST_INITRAMFS of `make images`: a Linux with KVM on QEMU's
//!                      emulated AMD SVM) and run COMMAND there, typically mshare-vmm on the
//!                      guest image, which it has at /l2/vmlinux and /l2/initramfs.cpio;
//!                      --cpus, --memory (default 3072), --timeout (default 600), --append
//!                      and --log are the host's
//!   --host-file SRC:DEST   with --nested: add file SRC to the host at DEST (repeatable)
//!   --guest-file SRC:DEST  with --nested: add file SRC to the guest initramfs at DEST
//! ```
//!
//! For example, the msharefs API suite in a guest under mshare-vmm on the nested host:
//!
//! ```text
//! qemu-run --nested -- mshare-vmm run --name l2 --kernel /l2/vmlinux --initrd /l2/initramfs.cpio \
//!     --cpus 2 --memory 512M --timeout 300 -- mshare-api B
//! ```
//!
//! Exit status: the guest command's status; with `--ktap`, 0 or 1. 2 for bad arguments,
//! 124 when the guest ran out of time, 125 when the boot failed (no result line, a kernel
//! warning or oops, mshare.ko not loaded). With `--nested`: the status of COMMAND on the
//! host, which for `mshare-vmm run` is the guest command's; 125 also when a guest whose
//! console lines came back (`[NAME] ...`) printed no result line, or when the one guest's
//! status is not the host command's.

use guest_runner::console::ModuleState;
use guest_runner::images::ImagePaths;
use guest_runner::ktap;
use guest_runner::nested::{shell_quote, NestedBoot};
use guest_runner::qemu::{Boot, QemuError};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: qemu-run [--initrd PATH] [--append WORD]... [--cpus N] [--memory MIB] [--timeout SECS] [--log FILE] [--ivshmem FILE:SIZE]... [--ktap] [--quiet] KERNEL [-- COMMAND...]
       qemu-run --nested [--host-file SRC:DEST]... [--guest-file SRC:DEST]... [--append WORD]... [--cpus N] [--memory MIB] [--timeout SECS] [--log FILE] [--quiet] -- COMMAND...";

struct Options {
    boot: Boot,
    ktap: bool,
    nested: Option<Nested>,
}

/// What `--nested` adds to the nested host's boot.
#[derive(Debug, Default, PartialEq)]
struct Nested {
    host_files: Vec<(PathBuf, String)>,
    guest_files: Vec<(PathBuf, String)>,
    memory_mib: Option<u32>,
    timeout: Option<Duration>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut boot = Boot::new(PathBuf::new());
    boot.echo = true;
    let mut kernel = None;
    let mut ktap = false;
    let mut nested = false;
    let mut extra = Nested::default();
    let mut plain_only = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--initrd" => {
                boot.initrd = Some(PathBuf::from(value("--initrd")?));
                plain_only.push("--initrd");
            }
            "--append" => boot.cmdline.push(value("--append")?),
            "--cpus" => boot.cpus = number(&value("--cpus")?, "--cpus", 1, 8)?,
            "--memory" => {
                boot.memory_mib = number(&value("--memory")?, "--memory", 64, 16384)?;
                extra.memory_mib = Some(boot.memory_mib);
            }
            "--timeout" => {
                boot.timeout = Duration::from_secs(number(&value("--timeout")?, "--timeout", 1, 86400)?.into());
                extra.timeout = Some(boot.timeout);
            }
            "--log" => boot.console_log = Some(PathBuf::from(value("--log")?)),
            "--ivshmem" => {
                boot.ivshmem.push(ivshmem_spec(&value("--ivshmem")?)?);
                plain_only.push("--ivshmem");
            }
            "--ktap" => {
                ktap = true;
                plain_only.push("--ktap");
            }
            "--nested" => nested = true,
            "--host-file" => extra.host_files.push(file_spec("--host-file", &value("--host-file")?)?),
            "--guest-file" => extra.guest_files.push(file_spec("--guest-file", &value("--guest-file")?)?),
            "--quiet" => boot.echo = false,
            "--" => {
                boot.command = args.by_ref().collect();
                break;
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s if kernel.is_none() => kernel = Some(PathBuf::from(s)),
            s => return Err(format!("unexpected argument {s} (the guest command goes after --)")),
        }
    }
    if nested {
        if let Some(option) = plain_only.first() {
            return Err(format!("{option} does not go with --nested"));
        }
        if let Some(kernel) = kernel {
            return Err(format!("--nested boots the nested host's kernel; {} is not wanted", kernel.display()));
        }
        if boot.command.is_empty() {
            return Err("--nested needs a COMMAND for the host after --".to_owned());
        }
        return Ok(Options { boot, ktap, nested: Some(extra) });
    }
    if let Some((option, _)) = [("--host-file", &extra.host_files), ("--guest-file", &extra.guest_files)]
        .into_iter()
        .find(|(_, files)| !files.is_empty())
    {
        return Err(format!("{option} needs --nested"));
    }
    let kernel = kernel.ok_or("no KERNEL given")?;
    if !kernel.is_file() {
        return Err(format!(
            "kernel {} is not a file (`make -s image-paths` prints where the images are)",
            kernel.display()
        ));
    }
    if let Some(initrd) = &boot.initrd {
        if !initrd.is_file() {
            return Err(format!("initrd {} is not a file", initrd.display()));
        }
    }
    boot.kernel = kernel;
    Ok(Options { boot, ktap, nested: None })
}

/// `SRC:DEST`: a file here and an absolute path there.
fn file_spec(option: &str, text: &str) -> Result<(PathBuf, String), String> {
    let (src, dest) = text
        .rsplit_once(':')
        .filter(|(src, dest)| !src.is_empty() && dest.starts_with('/') && !dest.ends_with('/'))
        .ok_or_else(|| format!("{option} {text}: expected SRC:DEST, DEST an absolute file path"))?;
    if !std::path::Path::new(src).is_file() {
        return Err(format!("{option} {text}: {src} is not a file"));
    }
    Ok((PathBuf::from(src), dest.to_owned()))
}

/// `FILE:SIZE`, SIZE in bytes with an optional K, M or G suffix.
fn ivshmem_spec(text: &str) -> Result<(PathBuf, u64), String> {
    let bad = || format!("--ivshmem {text}: expected FILE:SIZE, e.g. /dev/shm/db:64M");
    let (path, size) = text.rsplit_once(':').ok_or_else(bad)?;
    let size = mshare_uapi::formats::parse_size(size).ok_or_else(bad)?;
    if path.is_empty() || !size.is_power_of_two() {
        return Err(format!("{}: the size must be a power of two (a PCI BAR)", bad()));
    }
    Ok((PathBuf::from(path), size))
}

fn number(text: &str, name: &str, min: u32, max: u32) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{name} {text}: expected a whole number from {min} to {max}")),
    }
}

fn fail(error: &QemuError) -> ExitCode {
    eprintln!("qemu-run: {error}");
    ExitCode::from(if matches!(error, QemuError::Timeout { .. }) { 124 } else { 125 })
}

/// Boots the nested host with `boot`'s settings and `nested`'s files, runs the command.
fn run_nested(boot: Boot, nested: &Nested) -> ExitCode {
    let images = match ImagePaths::discover() {
        Ok(images) => images,
        Err(e) => {
            eprintln!("qemu-run: {e}");
            return ExitCode::from(125);
        }
    };
    let mut run = match NestedBoot::new(&images) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("qemu-run: the nested host's images: {e}");
            return ExitCode::from(125);
        }
    };
    run.host.cpus = boot.cpus;
    run.host.memory_mib = nested.memory_mib.unwrap_or(run.host.memory_mib);
    run.host.timeout = nested.timeout.unwrap_or(run.host.timeout);
    run.host.console_log = boot.console_log;
    run.host.echo = boot.echo;
    run.host.cmdline.extend(boot.cmdline);
    // A script, not kernel command-line words: the host command usually has a `--` of
    // its own (mshare-vmm's), which the kernel would cut the command at.
    let words: Vec<String> = boot.command.iter().map(|w| shell_quote(w)).collect();
    run.script(&format!("exec {}\n", words.join(" ")));
    for (files, guest) in [(&nested.host_files, false), (&nested.guest_files, true)] {
        for (src, dest) in files {
            let data = match std::fs::read(src) {
                Ok(data) => data,
                Err(e) => {
                    eprintln!("qemu-run: reading {}: {e}", src.display());
                    return ExitCode::from(2);
                }
            };
            if guest {
                run.add_guest_file(dest, 0o755, data);
            } else {
                run.add_host_file(dest, 0o755, data);
            }
        }
    }
    // A boot in which QEMU's emulated SVM lost an L2's state (docs/vmm.md: L1's KVM saw
    // the L2 entered at L1's own __svm_vcpu_run) is booted once more, and said, as in the
    // test harness; nothing else is retried.
    let result = match run.run() {
        Ok(result) => result,
        Err(e) => return fail(&e),
    };
    let status = result.host.result.status;
    for name in result.guests.keys() {
        match result.guest(name) {
            Ok(guest) if result.guests.len() == 1 && guest.status != status => {
                eprintln!("qemu-run: guest '{name}' exited {} but the host's command exited {status}", guest.status);
                return ExitCode::from(125);
            }
            Ok(guest) => eprintln!("qemu-run: guest '{name}' exited {} (module {:?})", guest.status, guest.module),
            Err(e) => return fail(&e),
        }
    }
    eprintln!(
        "qemu-run: the nested host's command exited {status} ({:.1} s wall)",
        result.host.output.elapsed.as_secs_f64()
    );
    ExitCode::from(u8::try_from(status).unwrap_or(255))
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("qemu-run: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(nested) = &options.nested {
        return run_nested(options.boot, nested);
    }
    if options.ktap {
        let output = match options.boot.run() {
            Ok(o) => o,
            Err(e) => return fail(&e),
        };
        let verdict = ktap::parse(&output.console).verdict();
        if let Err(e) = output.check_clean() {
            return fail(&e);
        }
        return match verdict {
            Ok(totals) => {
                eprintln!("qemu-run: KUnit: {totals} ({:.1} s)", output.elapsed.as_secs_f64());
                ExitCode::SUCCESS
            }
            Err(why) => {
                eprintln!("qemu-run: KUnit: {why}");
                ExitCode::FAILURE
            }
        };
    }
    match options.boot.run_command() {
        Ok(run) if run.result.module == ModuleState::Failed => {
            eprintln!("qemu-run: mshare.ko failed to load (see the insmod error on the console)");
            ExitCode::from(125)
        }
        Ok(run) => {
            eprintln!(
                "qemu-run: guest command exited {} (module {:?}, {:.1} s wall)",
                run.result.status,
                run.result.module,
                run.output.elapsed.as_secs_f64()
            );
            ExitCode::from(u8::try_from(run.result.status).unwrap_or(255))
        }
        Err(e) => fail(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Options, String> {
        parse_args(list.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn reads_options_kernel_and_command() {
        let o = args(&["--cpus", "4", "--append", "quiet", "/proc/self/exe", "--", "sh", "-c", "exit 3"]).unwrap();
        assert_eq!(o.boot.cpus, 4);
        assert_eq!(o.boot.cmdline, vec!["quiet"]);
        assert_eq!(o.boot.command, vec!["sh", "-c", "exit 3"]);
    }

    #[test]
    fn ivshmem_files_with_sizes() {
        let o = args(&["--ivshmem", "/dev/shm/db:64M", "/proc/self/exe"]).unwrap();
        assert_eq!(o.boot.ivshmem, vec![(PathBuf::from("/dev/shm/db"), 64 << 20)]);
        assert!(args(&["--ivshmem", "/dev/shm/db", "k"]).err().unwrap().contains("expected FILE:SIZE"));
        assert!(args(&["--ivshmem", "/dev/shm/db:3M", "k"]).err().unwrap().contains("power of two"));
    }

    #[test]
    fn nested_takes_files_and_a_host_command_and_no_kernel() {
        let o = args(&["--nested", "--memory", "4096", "--host-file", "/proc/self/exe:/usr/bin/x", "--", "x"]).unwrap();
        let nested = o.nested.unwrap();
        assert_eq!(nested.host_files, vec![(PathBuf::from("/proc/self/exe"), "/usr/bin/x".to_owned())]);
        assert_eq!(nested.memory_mib, Some(4096));
        assert_eq!(o.boot.command, vec!["x"]);
        assert!(args(&["--nested", "k", "--", "x"]).err().unwrap().contains("is not wanted"));
        assert_eq!(args(&["--nested"]).err().unwrap(), "--nested needs a COMMAND for the host after --");
        assert_eq!(args(&["--nested", "--ktap", "--", "x"]).err().unwrap(), "--ktap does not go with --nested");
        assert_eq!(args(&["--guest-file", "/proc/self/exe:/x", "k"]).err().unwrap(), "--guest-file needs --nested");
        assert!(args(&["--nested", "--host-file", "/proc/self/exe:rel", "--", "x"])
            .err()
            .unwrap()
            .contains("SRC:DEST"));
        assert!(args(&["--nested", "--host-file", "/nonexistent:/x", "--", "x"]).err().unwrap().contains("not a file"));
    }

    #[test]
    fn bad_arguments_are_named() {
        assert_eq!(args(&[]).err().unwrap(), "no KERNEL given");
        assert_eq!(args(&["--cpus", "0", "k"]).err().unwrap(), "--cpus 0: expected a whole number from 1 to 8");
        assert_eq!(args(&["--bogus"]).err().unwrap(), "unknown option --bogus");
        assert!(args(&["/nonexistent/vmlinux"]).err().unwrap().contains("is not a file"));
        assert_eq!(args(&["--log"]).err().unwrap(), "--log needs a value");
    }
}
