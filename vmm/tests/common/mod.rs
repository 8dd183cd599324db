//! Tiny guests for the KVM tests: a few bytes of 64-bit machine code in a minimal ELF, and
//! helpers to run `mshare-vmm` on them.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// Where the tiny guests' code is loaded and entered.
const LOAD_ADDR: u64 = 0x10_0000;

/// A minimal ELF64 executable with one PT_LOAD segment holding `code` at [`LOAD_ADDR`].
pub fn tiny_elf(code: &[u8]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let mut elf = Vec::new();
    elf.extend(b"\x7fELF\x02\x01\x01");
    elf.resize(16, 0);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(0x3eu16.to_le_bytes()); // x86-64
    elf.extend(1u32.to_le_bytes());
    elf.extend(LOAD_ADDR.to_le_bytes()); // entry
    elf.extend((EHDR as u64).to_le_bytes()); // phoff
    elf.extend(0u64.to_le_bytes()); // shoff
    elf.extend(0u32.to_le_bytes()); // flags
    elf.extend((EHDR as u16).to_le_bytes());
    elf.extend((PHDR as u16).to_le_bytes());
    elf.extend(1u16.to_le_bytes()); // phnum
    elf.extend([0u8; 6]); // shentsize, shnum, shstrndx
    elf.extend(1u32.to_le_bytes()); // PT_LOAD
    elf.extend(5u32.to_le_bytes()); // R+X
    elf.extend(((EHDR + PHDR) as u64).to_le_bytes()); // offset
    elf.extend(LOAD_ADDR.to_le_bytes()); // vaddr
    elf.extend(LOAD_ADDR.to_le_bytes()); // paddr
    elf.extend((code.len() as u64).to_le_bytes());
    elf.extend((code.len() as u64).to_le_bytes());
    elf.extend(0x1000u64.to_le_bytes());
    elf.extend(code);
    elf
}

/// `mov dx, port`
pub fn mov_dx(port: u16) -> Vec<u8> {
    let mut v = vec![0x66, 0xba];
    v.extend(port.to_le_bytes());
    v
}

/// Writes `status` to the exit device, then spins.
pub fn exit_with(status: u8) -> Vec<u8> {
    let mut v = mov_dx(0xf4);
    v.extend([0xb0, status, 0xee, 0xeb, 0xfe]); // mov al, status; out dx, al; jmp $
    v
}

/// `out dx, al` of `al` to the exit device (status from a register, not an immediate).
pub fn exit_with_al() -> Vec<u8> {
    let mut v = mov_dx(0xf4);
    v.extend([0xee, 0xeb, 0xfe]);
    v
}

/// `mov rax, addr`
pub fn mov_rax(addr: u64) -> Vec<u8> {
    let mut v = vec![0x48, 0xb8];
    v.extend(addr.to_le_bytes());
    v
}

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

pub fn vmm_command(guest: &Guest, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mshare-vmm"));
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
