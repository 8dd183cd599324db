//! qemu-run: boot the mshare-vmm guest under QEMU TCG and return the guest command's status.
//!
//! ```text
//! qemu-run [OPTIONS] KERNEL [-- COMMAND...]
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
//! ```
//!
//! Exit status: the guest command's status; with `--ktap`, 0 or 1. 2 for bad arguments,
//! 124 when the guest ran out of time, 125 when the boot failed (no result line, a kernel
//! warning or oops, mshare.ko not loaded).

use guest_runner::console::ModuleState;
use guest_runner::ktap;
use guest_runner::qemu::{Boot, QemuError};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: qemu-run [--initrd PATH] [--append WORD]... [--cpus N] [--memory MIB] [--timeout SECS] [--log FILE] [--ivshmem FILE:SIZE]... [--ktap] [--quiet] KERNEL [-- COMMAND...]";

struct Options {
    boot: Boot,
    ktap: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut boot = Boot::new(PathBuf::new());
    boot.echo = true;
    let mut kernel = None;
    let mut ktap = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--initrd" => boot.initrd = Some(PathBuf::from(value("--initrd")?)),
            "--append" => boot.cmdline.push(value("--append")?),
            "--cpus" => boot.cpus = number(&value("--cpus")?, "--cpus", 1, 8)?,
            "--memory" => boot.memory_mib = number(&value("--memory")?, "--memory", 64, 16384)?,
            "--timeout" => {
                boot.timeout = Duration::from_secs(number(&value("--timeout")?, "--timeout", 1, 86400)?.into())
            }
            "--log" => boot.console_log = Some(PathBuf::from(value("--log")?)),
            "--ivshmem" => boot.ivshmem.push(ivshmem_spec(&value("--ivshmem")?)?),
            "--ktap" => ktap = true,
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
    Ok(Options { boot, ktap })
}

/// `FILE:SIZE`, SIZE in bytes with an optional K, M or G suffix.
fn ivshmem_spec(text: &str) -> Result<(PathBuf, u64), String> {
    let bad = || format!("--ivshmem {text}: expected FILE:SIZE, e.g. /dev/shm/db:64M");
    let (path, size) = text.rsplit_once(':').ok_or_else(bad)?;
    let (digits, shift) = match size.char_indices().last().ok_or_else(bad)? {
        (i, 'k' | 'K') => (&size[..i], 10),
        (i, 'm' | 'M') => (&size[..i], 20),
        (i, 'g' | 'G') => (&size[..i], 30),
        _ => (size, 0),
    };
    let size = digits.parse::<u64>().ok().and_then(|n| n.checked_mul(1 << shift)).ok_or_else(bad)?;
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

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("qemu-run: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
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
    fn bad_arguments_are_named() {
        assert_eq!(args(&[]).err().unwrap(), "no KERNEL given");
        assert_eq!(args(&["--cpus", "0", "k"]).err().unwrap(), "--cpus 0: expected a whole number from 1 to 8");
        assert_eq!(args(&["--bogus"]).err().unwrap(), "unknown option --bogus");
        assert!(args(&["/nonexistent/vmlinux"]).err().unwrap().contains("is not a file"));
        assert_eq!(args(&["--log"]).err().unwrap(), "--log needs a value");
    }
}
