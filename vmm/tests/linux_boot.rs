//! The real guest under `mshare-vmm`: the test kernel boots under KVM, runs its KUnit
//! suites (the module built in) and resets the machine; the console is parsed as KTAP.
//! On this project's machines KVM emulates guest kernel code, so the boot takes about a
//! minute; on a host with hardware virtualization it takes well under a second.
//!
//! These need `make images` (which `make test` runs first).

use guest_runner::images::ImagePaths;
use guest_runner::{console, ktap};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn images() -> ImagePaths {
    ImagePaths::discover().unwrap_or_else(|e| panic!("guest images: {e}"))
}

fn console_path(name: &str) -> PathBuf {
    let dir = guest_runner::images::repo_root().join("target").join("guest-logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.log"))
}

#[test]
fn test_kernel_runs_kunit_under_kvm() {
    let images = images();
    let kernel = images.get("VMLINUX_KTEST").unwrap_or_else(|e| panic!("{e}"));
    let log = console_path("ktest-kvm");
    let out = Command::new(env!("CARGO_BIN_EXE_mshare-vmm"))
        .args(["run", "--cpus", "2", "--memory", "256M", "--timeout", "900"])
        .args(["--region", "name=db,size=16M", "--region", "name=ref,size=4M,ro", "--serial"])
        .arg(&log)
        .arg("--kernel")
        .arg(kernel)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "mshare-vmm: {stderr}\nconsole: {}", log.display());
    assert!(stderr.contains("the guest reset the machine"), "{stderr}");
    let problems = console::kernel_problems(&console_text);
    assert!(problems.is_empty(), "kernel problems on the console ({}): {problems:?}", log.display());
    let report = ktap::parse(&console_text);
    report.verdict().unwrap_or_else(|e| panic!("KUnit under KVM: {e} (console: {})", log.display()));
    let suite = report.suite("mshare_granule").expect("mshare_granule did not run");
    assert_eq!(suite.outcome, Some(ktap::Outcome::Pass));
    assert!(console_text.contains("mshare 0.1.0 loaded (granule 2048 KiB, built-in): mode B"));
    // The guest's check of the names the host gives its ivshmem devices.
    let names = report.suite("mshare_ivshmem").expect("mshare_ivshmem did not run");
    assert_eq!(names.outcome, Some(ktap::Outcome::Pass));
    let region = report.suite("mshare_region").expect("mshare_region did not run");
    let shared = region.subtests.iter().find(|t| t.name == "shared_tables_follow_memory_and_protection");
    assert_eq!(shared.and_then(|t| t.outcome), Some(ktap::Outcome::Pass), "the shared-table case did not pass");
    // Both regions are enumerated by the guest where the VMM placed them: the same PCI
    // slot and BAR2 address, the read-only one marked so.
    for (name, kib, ro) in [("db", 16384, false), ("ref", 4096, true)] {
        let placed = stderr
            .lines()
            .find_map(|l| l.split(&format!("region '{name}' (")).nth(1)?.split_once(") at ").map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("the VMM did not say where it placed region '{name}': {stderr}"));
        let (addr, slot) = placed.split_once(" as PCI 00:").unwrap_or_else(|| panic!("{placed}"));
        let expected = format!(
            "mshare-ivshmem 0000:00:{slot}: ivshmem region '{name}': {kib} KiB at {addr}{}",
            if ro { ", read-only" } else { "" }
        );
        assert!(console_text.lines().any(|l| l.trim_end() == expected), "no '{expected}' in {}", log.display());
    }
    assert!(
        console_text.contains("smpboot: Total of 2 processors activated")
            || console_text.contains("Brought up 1 node, 2 CPUs"),
        "the second vCPU did not come up"
    );
}

/// `mshare-vmm run` of the guest image and its initramfs (2 vCPUs, 512 MiB), console to
/// `log`; the caller adds regions and the guest command.
fn guest_image_boot(log: &std::path::Path) -> Command {
    guest_image_boot_with_memory(log, "512M")
}

/// The same with `memory` of guest RAM.
fn guest_image_boot_with_memory(log: &std::path::Path, memory: &str) -> Command {
    let images = images();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mshare-vmm"));
    cmd.args(["run", "--cpus", "2", "--memory", memory, "--timeout", "600", "--serial"])
        .arg(log)
        .arg("--kernel")
        .arg(images.get("VMLINUX").unwrap_or_else(|e| panic!("{e}")))
        .arg("--initrd")
        .arg(images.get("INITRAMFS").unwrap_or_else(|e| panic!("{e}")))
        .stdin(Stdio::null());
    cmd
}

/// The guest image with its initramfs runs a guest command under `mshare-vmm` and the
/// command's status becomes the VMM's. Guest user space cannot run under this machine's
/// KVM (kvm_pvm breaks SYSCALL from user mode): `make test-kvm` runs this on hosts with
/// hardware virtualization; `make test` runs the same on the nested test host
/// (`vmm/tests/nested.rs`).
#[test]
#[ignore = "needs hardware virtualization (guest user space); run with `make test-kvm`"]
fn guest_command_status_becomes_the_vmm_status() {
    let log = console_path("initramfs-kvm");
    let out = guest_image_boot(&log).args(["--", "sh", "-c", "modcheck && exit 7"]).output().unwrap();
    let console_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(out.status.code(), Some(7), "{}\nconsole: {}", String::from_utf8_lossy(&out.stderr), log.display());
    let result = console::guest_result(&console_text).expect("no MSHARE-RESULT line");
    assert_eq!(result.status, 7, "the guest's own result line");
    assert_eq!(result.module, console::ModuleState::Loaded);
    assert!(console::kernel_problems(&console_text).is_empty());
}

/// The guest suites of QEMU TCG, under mshare-vmm: the API suite, 64 processes of stress
/// and the fuzzer, each a guest command whose status becomes the VMM's. Guest user space:
/// `make test-kvm` (hardware virtualization).
#[test]
#[ignore = "needs hardware virtualization (guest user space); run with `make test-kvm`"]
fn guest_suites_pass_under_mshare_vmm() {
    for (name, command) in [
        ("api-kvm", "mshare-api B"),
        ("stress-kvm", "mshare-stress 64 15"),
        ("fuzz-kvm", "mshare-fuzz 200000 20261123"),
    ] {
        let log = console_path(name);
        let out = guest_image_boot_with_memory(&log, "2048M").args(["--", "sh", "-c", command]).output().unwrap();
        let console_text = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{command}: {}\nconsole: {}",
            String::from_utf8_lossy(&out.stderr),
            log.display()
        );
        let result = console::guest_result(&console_text).unwrap_or_else(|| panic!("{command}: no MSHARE-RESULT line"));
        assert_eq!(result.status, 0, "{command}: the guest's own result line ({})", log.display());
        assert!(console::kernel_problems(&console_text).is_empty(), "{command}: kernel problems in {}", log.display());
    }
}

/// ivshmem-probe under mshare-vmm: the guest finds the region by name, reads what the host
/// put there and writes back. Guest user space: `make test-kvm` (hardware virtualization).
#[test]
#[ignore = "needs hardware virtualization (guest user space); run with `make test-kvm`"]
fn guest_program_reads_and_writes_a_named_region() {
    let log = console_path("ivshmem-kvm");
    let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/mshare-ivshmem-kvm-").unwrap();
    let backing = dir.as_path().join("region");
    let mut bytes = vec![0u8; 4 << 20];
    bytes[..19].copy_from_slice(b"hello from the host");
    std::fs::write(&backing, &bytes).unwrap();
    let out = guest_image_boot(&log)
        .args(["--region", &format!("name=db,size=4M,path={}", backing.display())])
        .args([
            "--",
            "sh",
            "-c",
            "ivshmem-probe list && ivshmem-probe read db 0 19 && ivshmem-probe write db 4096 'hello from the guest' && \
             mshare read ivshmem/db 0 19 && mshare write ivshmem/db 8192 via-msharefs",
        ])
        .output()
        .unwrap();
    let console_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "{}\nconsole: {}", String::from_utf8_lossy(&out.stderr), log.display());
    let result = console::guest_result(&console_text).expect("no MSHARE-RESULT line");
    assert_eq!(result.status, 0, "the guest's own result line ({})", log.display());
    assert!(console_text.contains(" 4194304 db rw"), "the device carries its name");
    assert!(console_text.contains("hello from the host"));
    let after = std::fs::read(&backing).unwrap();
    assert_eq!(&after[4096..4116], b"hello from the guest");
    assert_eq!(&after[8192..8204], b"via-msharefs", "the same region through msharefs");
}

/// Two Linux VMs of one fleet share a region: the writer's mshare module writes a pattern
/// into it at probe time, the reader's (attached read-only) waits until the pattern is
/// there; both then run KUnit and reset. Kernel mode only, so it runs here too.
#[test]
fn two_linux_vms_exchange_data_through_a_region() {
    const PATTERN: &str = "0x5345484152454d53";
    let images = images();
    let kernel = images.get("VMLINUX_KTEST").unwrap_or_else(|e| panic!("{e}"));
    let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/mshare-xchg-").unwrap();
    let (writer_log, reader_log) = (console_path("xchg-writer"), console_path("xchg-reader"));
    let vm = |name: &str, params: &str, log: &std::path::Path, access: &str| {
        format!(
            "[[vm]]\nname = \"{name}\"\nkernel = \"{}\"\ncmdline = \"{params}\"\n\
             memory = \"256M\"\ntimeout = 900\nserial = \"{}\"\nregions = [{{ name = \"xchg\", access = \"{access}\" }}]\n\n",
            kernel.display(),
            log.display()
        )
    };
    let fleet = dir.as_path().join("xchg.toml");
    std::fs::write(
        &fleet,
        format!(
            "[[region]]\nname = \"xchg\"\nsize = \"16M\"\n\n{}{}",
            vm("writer", &format!("mshare.selftest_write={PATTERN}"), &writer_log, "rw"),
            // The reader's module also writes, from the guest kernel: it must not land.
            vm(
                "reader",
                &format!("mshare.selftest_expect={PATTERN} mshare.selftest_write=0x6f6e6c7964616572"),
                &reader_log,
                "ro"
            )
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mshare-vmm")).arg("launch").arg(&fleet).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let writer = std::fs::read_to_string(&writer_log).unwrap_or_default();
    let reader = std::fs::read_to_string(&reader_log).unwrap_or_default();
    assert!(
        writer.contains(&format!("region 'xchg': selftest wrote {PATTERN} at offset 0")),
        "{}",
        writer_log.display()
    );
    assert!(reader.contains("ivshmem region 'xchg': 16384 KiB at 0x10000000, read-only"), "{}", reader_log.display());
    assert!(
        reader.contains(&format!("region 'xchg': selftest read {PATTERN} at offset 0 after")),
        "{}",
        reader_log.display()
    );
    assert!(
        reader.contains("region 'xchg': selftest write to the read-only region was dropped"),
        "the read-only VM's kernel write: {}",
        reader_log.display()
    );
    for (log, text) in [(&writer_log, &writer), (&reader_log, &reader)] {
        assert!(console::kernel_problems(text).is_empty(), "kernel problems in {}", log.display());
        ktap::parse(text).verdict().unwrap_or_else(|e| panic!("KUnit in {}: {e}", log.display()));
    }
}

/// The guest's bzImage goes in through the boot protocol: its setup header is kept and the
/// entry is the 64-bit entry of the protected-mode code at 1 MiB. (Booting it here works but
/// takes about 100 s, the decompressor being emulated: see docs/vmm.md.)
#[test]
fn bzimage_loads_through_the_boot_protocol() {
    let images = images();
    let bzimage = images.get("BZIMAGE").unwrap_or_else(|e| panic!("{e}"));
    let mem = vmm::memory::create_guest_memory(256 << 20).unwrap();
    let kernel = vmm::boot::load_kernel(&mem, bzimage).unwrap();
    assert_eq!(kernel.kind, vmm::boot::KernelKind::BzImage);
    assert_eq!(kernel.entry.0, 0x10_0200);
    let header = kernel.setup_header.expect("a bzImage has a setup header");
    assert!({ header.version } >= 0x020f, "boot protocol 2.15 or later");
    assert_eq!({ header.header }, 0x5372_6448);
    let vmlinux = vmm::boot::load_kernel(&mem, images.get("VMLINUX").unwrap_or_else(|e| panic!("{e}"))).unwrap();
    assert_eq!(vmlinux.kind, vmm::boot::KernelKind::Elf);
    assert!(vmlinux.setup_header.is_none());
}
