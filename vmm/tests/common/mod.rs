//! Tiny guests for the KVM tests: a few bytes of 64-bit machine code in a minimal ELF, and
//! helpers to run `mshare-vmm` on them.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
pub use vmm_testing::tiny::*;

/// A tiny guest kernel and its console file, in a temporary directory.
pub struct Guest {
    /// The temporary directory (removed on drop).
    pub dir: vmm_sys_util::tempdir::TempDir,
    /// The ELF file.
    pub kernel: PathBuf,
    /// Where the console goes.
    pub console: PathBuf,
}

pub fn guest(code: &[u8]) -> Guest {
    let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/mshare-vmm-tiny-").unwrap();
    let kernel = dir.as_path().join("tiny.elf");
    std::fs::File::create(&kernel).unwrap().write_all(&tiny_elf(code)).unwrap();
    let console = dir.as_path().join("console");
    Guest { kernel, console, dir }
}

/// The `mshare-vmm` binary under test: the one cargo built, or `MSHARE_VMM` where set (the
/// nested test host runs this suite with its static copy, at another path).
pub fn mshare_vmm() -> PathBuf {
    std::env::var_os("MSHARE_VMM").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mshare-vmm")), PathBuf::from)
}

pub fn vmm_command(guest: &Guest, extra: &[&str]) -> Command {
    let mut cmd = Command::new(mshare_vmm());
    cmd.args(["run", "--memory", "64M", "--kernel"]).arg(&guest.kernel);
    cmd.args(["--serial"]).arg(&guest.console).args(extra).stdin(Stdio::null());
    if !extra.contains(&"--timeout") {
        cmd.args(["--timeout", "30"]);
    }
    cmd
}

pub fn run_vmm(guest: &Guest, extra: &[&str]) -> Output {
    vmm_command(guest, extra).output().unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
