//! The product path on a real KVM: guest user space under `mshare-vmm`.
//!
//! This machine's KVM cannot run guest user space (it is a software hypervisor), so these
//! tests boot the nested test host under QEMU TCG — a Linux with KVM_AMD on the emulated
//! SVM, "L1" — and run the static `mshare-vmm` there on the guest image, "L2"
//! ([`guest_runner::nested`]). Each test reads the L2 guest's own `MSHARE-RESULT` line
//! (and its status must be the VMM's); a kernel warning, BUG or oops in L1 or any L2 fails
//! it. These need `make images` (which `make test` runs first).

use guest_runner::console::{self, ModuleState};
use guest_runner::images::ImagePaths;
use guest_runner::nested::{NestedBoot, L2_NAME};
use guest_runner::qemu::log_path;

fn nested(name: &str) -> NestedBoot {
    let images = ImagePaths::discover().unwrap_or_else(|e| panic!("guest images: {e}"));
    let mut boot = NestedBoot::new(&images).unwrap_or_else(|e| panic!("{e}"));
    boot.host.console_log = Some(log_path(name));
    boot
}

fn field(line: &str, key: &str) -> u64 {
    console::field(line, key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {key}= in {line}"))
}

/// The line of a guest console that starts with `prefix`.
fn line_of<'a>(console: &'a str, prefix: &str) -> &'a str {
    console.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} line:\n{console}"))
}

/// The guest command is a script added to the guest's initramfs (appended to it as a cpio
/// archive of its own).
#[test]
fn guest_command_status_is_the_guests_and_the_vmms() {
    let mut boot = nested("nested-status");
    boot.add_guest_file("/usr/bin/check-then-exit-7", 0o755, "#!/bin/sh\nmodcheck && exit 7\n");
    boot.vm(&["--cpus", "2", "--memory", "512M"], &["check-then-exit-7"]);
    let (guest, run) = boot.run_vm().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(guest.module, ModuleState::Loaded, "mshare.ko did not load in the L2 guest");
    assert_eq!(guest.status, 7, "modcheck failed, or the status was lost: {}", run.guest_console(L2_NAME));
    assert_eq!(run.host.result.status, 7, "mshare-vmm's status is the guest command's");
    assert!(run.host.output.console.contains("kvm_amd: Nested Paging enabled"), "L1's KVM uses nested paging");
    // The kernel's console output is printed by a thread of its own and can land inside
    // modcheck's line (seen once: "modcheck: mshareok 4 mshare_memory"); status 7 already
    // says modcheck succeeded, this says it ran here.
    assert!(run.guest_console(L2_NAME).contains("modcheck: mshare"), "{}", run.guest_console(L2_NAME));
}

/// Runs `mshare-api` for `mode` (B or C) in an L2 guest with `vmm_args` and checks that
/// all `checks` passed.
fn api_suite_passes(name: &str, mode: &str, vmm_args: &[&str], checks: usize) {
    let mut boot = nested(name);
    let mut args = vec!["--cpus", "2", "--memory", "512M"];
    args.extend_from_slice(vmm_args);
    boot.vm(&args, &["mshare-api", mode]);
    let (guest, run) = boot.run_vm().unwrap_or_else(|e| panic!("{e}"));
    let console = run.guest_console(L2_NAME);
    assert_eq!(guest.module, ModuleState::Loaded);
    let failed: Vec<&str> = console.lines().filter(|l| l.contains("not ok")).collect();
    assert_eq!(guest.status, 0, "mshare-api failed under mshare-vmm:\n{}", failed.join("\n"));
    assert!(console.contains(&format!("mshare-api: {checks} checks, 0 failed")), "{console}");
}

#[test]
fn msharefs_api_suite_passes_under_mshare_vmm_in_mode_b() {
    api_suite_passes("nested-api-b", "B", &[], guest_runner::API_CHECKS_MODE_B);
}

#[test]
fn msharefs_api_suite_passes_under_mshare_vmm_in_mode_c() {
    api_suite_passes(
        "nested-api-c",
        "C",
        &["--cmdline", "mshare_params=shared_tables=0"],
        guest_runner::API_CHECKS_MODE_C,
    );
}

/// `mshare-stress` and `mshare-fuzz` in one L2 guest, sized for nested emulation (each
/// prints its size; the QEMU TCG suites run them at full size).
#[test]
fn stress_and_fuzz_pass_under_mshare_vmm() {
    let mut boot = nested("nested-stress-fuzz");
    boot.vm(&["--cpus", "2", "--memory", "1536M"], &["sh", "-c", "mshare-stress 16 10 && mshare-fuzz 20000 20261129"]);
    let (guest, run) = boot.run_vm().unwrap_or_else(|e| panic!("{e}"));
    let console = run.guest_console(L2_NAME);
    let (stress, fuzz) = (line_of(console, "STRESS "), line_of(console, "FUZZ "));
    assert_eq!(guest.status, 0, "{stress}\n{fuzz}\n{console}");
    assert_eq!(field(stress, "procs"), 16);
    assert_eq!(field(stress, "failures"), 0, "{stress}");
    assert!(field(stress, "ops") >= 100, "too few operations to mean anything: {stress}");
    assert_eq!(field(fuzz, "unexpected"), 0, "{fuzz}");
    assert_eq!(field(fuzz, "calls"), 20_000, "{fuzz}");
    println!("{stress}\n{fuzz}");
}

/// A region of L1 backed by a file: the L2 guest's programs find it by name, read what L1
/// put there and write back, through the device and through msharefs; L1 then reads the
/// file.
#[test]
fn guest_programs_read_and_write_a_named_region() {
    let mut boot = nested("nested-ivshmem");
    let vm = NestedBoot::vm_command(
        L2_NAME,
        &["--memory", "512M", "--region", "name=db,size=4M,path=/tmp/region"],
        &[
            "sh",
            "-c",
            "ivshmem-probe list && ivshmem-probe read db 0 19 && ivshmem-probe write db 4096 'hello from the guest' && \
             mshare read ivshmem/db 0 19 && mshare write ivshmem/db 8192 via-msharefs",
        ],
    );
    boot.script(&format!(
        "dd if=/dev/zero of=/tmp/region bs=1M count=4 2>/dev/null\n\
         printf 'hello from the host' | dd of=/tmp/region conv=notrunc 2>/dev/null\n\
         {vm}\nstatus=$?\n\
         echo \"L1 read: $(dd if=/tmp/region bs=1 skip=4096 count=20 2>/dev/null)|$(dd if=/tmp/region bs=1 skip=8192 count=12 2>/dev/null)\"\n\
         exit $status\n"
    ));
    let run = boot.run_retrying_early_crash().unwrap_or_else(|e| panic!("{e}"));
    let guest = run.guest(L2_NAME).unwrap_or_else(|e| panic!("{e}"));
    let console = run.guest_console(L2_NAME);
    assert_eq!((guest.status, run.host.result.status), (0, 0), "{console}");
    assert!(console.contains(" 4194304 db rw"), "the device carries its name: {console}");
    assert!(console.lines().filter(|l| *l == "hello from the host").count() == 2, "read twice: {console}");
    assert!(run.host.output.console.contains("L1 read: hello from the guest|via-msharefs"), "L1 sees the writes");
}

/// `examples/two-vms-programs.sh` on the nested host: a user program in the writer VM
/// writes a region through msharefs; then a program in the reader VM (the same region,
/// attached read-only) reads those bytes and cannot write: mapping the read-only region
/// for writing is refused (EACCES), and the bytes stay as the writer left them.
#[test]
fn two_vms_exchange_data_through_msharefs_and_the_read_only_one_cannot_write() {
    let mut boot = nested("nested-xchg");
    boot.add_host_file("/xchg.sh", 0o755, include_str!("../../examples/two-vms-programs.sh"));
    boot.host.command = vec!["sh".to_owned(), "/xchg.sh".to_owned()];
    let run = boot.run_retrying_early_crash().unwrap_or_else(|e| panic!("{e}"));
    let (writer, reader) = (run.guest_console("writer"), run.guest_console("reader"));
    let (w, r) = (run.guest("writer"), run.guest("reader"));
    let (w, r) = (w.unwrap_or_else(|e| panic!("{e}")), r.unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(w.status, 0, "writer:\n{writer}");
    assert_eq!(r.status, 0, "reader:\n{reader}");
    assert_eq!(run.host.result.status, 0, "the nested host's script");
    assert!(reader.lines().any(|l| l.starts_with("ivshmem/xchg ") && l.contains(" 16M ")), "{reader}");
    assert!(reader.contains("Permission denied"), "the read-only VM's write is refused with EACCES:\n{reader}");
    assert!(reader.contains("write status 1"), "{reader}");
    assert_eq!(
        reader.lines().filter(|l| *l == "written-by-the-writer-vm").count(),
        2,
        "read, then unchanged: {reader}"
    );
}

/// The tiny-guest suite (`vmm/tests/tiny_guests.rs`, built static) inside L1: every VMM
/// mechanism it tests, on a real SVM with nested paging instead of this machine's KVM.
#[test]
fn tiny_guest_suite_passes_on_the_nested_host() {
    let mut boot = nested("nested-tiny-guests");
    boot.script("MSHARE_VMM=/usr/bin/mshare-vmm exec vmm-tiny-guests --test-threads=1\n");
    let run = boot.run_retrying_early_crash().unwrap_or_else(|e| panic!("{e}"));
    let console = &run.host.output.console;
    let summary = line_of(console, "test result: ");
    assert_eq!(run.host.result.status, 0, "{summary}\n{console}");
    assert!(summary.starts_with("test result: ok. 10 passed; 0 failed"), "{summary}");
}
