//! Tiny hand-made guests under the real KVM run loop: a few bytes of 64-bit machine code in
//! a minimal ELF, booted by the `mshare-vmm` binary exactly as a kernel would be (64-bit
//! entry, identity page tables, zero page in RSI). Each exercises one VMM mechanism.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vmm::config::{SerialTarget, VmConfig};
use vmm::stop::StopReason;

#[test]
fn exit_device_status_becomes_the_vmm_status() {
    let g = guest(&exit_with(7));
    let out = run_vmm(&g, &[]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("the guest exited with status 7"));
}

#[test]
fn port_input_reads_a_device_register() {
    // in al, dx from the UART's line status register: transmitter empty (0x60).
    let mut code = mov_dx(0x3fd);
    code.push(0xec);
    code.extend(exit_with_al());
    let out = run_vmm(&guest(&code), &[]);
    assert_eq!(out.status.code(), Some(0x60), "{}", stderr(&out));
}

#[test]
fn serial_line_reaches_the_console_file() {
    let mut code = mov_dx(0x3f8);
    for b in b"hello from a tiny guest\n" {
        code.extend([0xb0, *b, 0xee]);
    }
    code.extend(exit_with(0));
    let g = guest(&code);
    let out = run_vmm(&g, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&g.console).unwrap(), "hello from a tiny guest\n");
}

#[test]
fn mmio_outside_memory_exits_to_the_vmm() {
    // Write then read an address inside the identity map but outside guest RAM (64 MiB).
    let mut code = mov_rax(0x3000_0000);
    code.extend([0xc6, 0x00, 0x5a]); // mov byte [rax], 0x5a
    code.extend([0x8a, 0x00]); // mov al, [rax]
    code.extend(exit_with_al());
    let out = run_vmm(&guest(&code), &[]);
    assert_eq!(out.status.code(), Some(0xff), "unbacked MMIO reads as all ones: {}", stderr(&out));
    assert!(stderr(&out).contains("mmio-read 1, mmio-write 1"), "{}", stderr(&out));
}

#[test]
fn triple_fault_is_reported_with_registers() {
    // ud2 with no IDT: #UD cannot be delivered, the vCPU shuts down.
    let out = run_vmm(&guest(&[0x0f, 0x0b]), &[]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("triple-faulted") || err.contains("KVM internal error"), "{err}");
    // Where the guest faulted; KVM on AMD resets a vCPU that shuts down, and the VMM says so.
    assert!(err.contains("rip 0x0000000000100000") || err.contains("these are the reset values"), "{err}");
}

/// `reboot`'s way out: the reset command (0xfe) on the keyboard controller's command port
/// (0x64, vm-superio's i8042) stops the VM, status 0, saying so.
#[test]
fn a_reset_through_the_keyboard_controller_stops_the_vm() {
    // mov al, 0xfe; out 0x64, al; jmp $
    let out = run_vmm(&guest(&[0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe]), &["--timeout", "10"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("the guest reset the machine"), "{}", stderr(&out));
}

#[test]
fn timeout_stops_a_spinning_guest() {
    let started = Instant::now();
    let out = run_vmm(&guest(&[0xeb, 0xfe]), &["--timeout", "1"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(stderr(&out).contains("did not finish within 1 s"));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn one_thread_per_vcpu_and_sigterm_stops_them_all() {
    let g = guest(&[0xeb, 0xfe]);
    let child = vmm_command(&g, &["--cpus", "3"]).stderr(Stdio::piped()).spawn().unwrap();
    let task_dir = PathBuf::from(format!("/proc/{}/task", child.id()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut vcpus = Vec::new();
    while Instant::now() < deadline {
        vcpus = vcpu_threads(&task_dir);
        if vcpus.len() == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(vcpus, vec!["vcpu0", "vcpu1", "vcpu2"]);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert!(stderr(&out).contains("stopped by signal 15"));
}

fn vcpu_threads(task_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(task_dir)
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
                .map(|n| n.trim().to_owned())
                .filter(|n| n.starts_with("vcpu"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn garbage_kernel_is_a_one_line_error_with_status_2() {
    let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/mshare-vmm-tiny-").unwrap();
    let kernel = dir.as_path().join("garbage");
    std::fs::write(&kernel, b"certainly not a kernel image").unwrap();
    let out = Command::new(mshare_vmm()).args(["run", "--kernel"]).arg(&kernel).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not an ELF vmlinux nor a bzImage"), "{err}");
}

#[test]
fn bad_arguments_exit_2() {
    let out =
        Command::new(mshare_vmm()).args(["run", "--kernel", "/nonexistent", "--memory", "lots"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("size 'lots'"), "{}", stderr(&out));
}

#[test]
fn hlt_without_an_interrupt_controller_stops_the_vm() {
    let g = guest(&[0xf4]);
    let mut config = VmConfig::new(&g.kernel);
    config.memory = 64 << 20;
    config.irqchip = false;
    config.serial = SerialTarget::File(g.console.clone());
    config.timeout = Some(Duration::from_secs(30));
    let outcome = vmm::vmm::run(&config).unwrap();
    assert_eq!(outcome.reason, StopReason::Halted(0));
    assert!(outcome.first_run.is_some());
}
