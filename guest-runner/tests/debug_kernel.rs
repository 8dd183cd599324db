//! The module's suites on the debug kernel (`make test-lockdep`): the nested host's kernel
//! configuration, with KASAN, lockdep and atomic-sleep checks, and mshare linked in. A
//! lock-order inversion, a sleep in atomic context or a bad access of the module is then a
//! report on the console, which fails the run (`run_command`). The guest kernel of every
//! other test has none of these checks.
//!
//! Not in `make test`: the kernel takes about 4 minutes to build and the two runs about 2
//! more, for which CI's 45 minutes on a fresh machine have no room. Ignored there, so they
//! show as such.

use guest_runner::images::ImagePaths;
use guest_runner::qemu::{log_path, Boot};
use std::time::Duration;

/// A boot of the debug kernel with the guest initramfs, running `script` in `mode` (B or C).
fn debug_boot(name: &str, mode: char, script: &str) -> Boot {
    let images = ImagePaths::discover().unwrap_or_else(|e| panic!("guest images: {e}"));
    let mut boot = Boot::guest_image(&images).unwrap_or_else(|e| panic!("{e}"));
    boot.kernel = images
        .get("VMLINUX_DEBUG")
        .unwrap_or_else(|e| panic!("{e}: build the debug kernel with `make test-lockdep`"))
        .to_path_buf();
    // The module is built in: /init has nothing to load, the script mounts msharefs.
    boot.cmdline.push("mshare_module=skip".to_owned());
    if mode == 'C' {
        boot.cmdline.push("mshare.shared_tables=0".to_owned());
    }
    boot.command = vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];
    // KASAN's shadow takes an eighth of memory, and every access is checked.
    boot.memory_mib = 3072;
    boot.timeout = Duration::from_secs(1500);
    boot.console_log = Some(log_path(name));
    boot
}

/// The API suite, 20,000 random calls, the mshare calls both ways (`mshare-calls`),
/// every mm operation on a window (`mshare-mmops`) and what /proc says a region costs its
/// sharers (`mshare-pss`: links counted and charged) in `mode`, and in mode B 12 threads
/// writing while SET_PROT flips the region: each must pass with a console free of reports. Lockdep
/// reports an order the first time each path runs, races or not. `mshare-stress` is left
/// out: its coarse free-memory check (the exact one is the module's counters) measures
/// this kernel's KASAN too, whose shadow of freed vmalloc memory (each exited process's
/// stack) goes back lazily: 21 MiB short against its 8 MiB tolerance in one run of three.
fn suites_pass_on_the_debug_kernel(mode: char, checks: usize) {
    let mut script = format!(
        "mount -t msharefs msharefs /sys/fs/mshare && chmod 0666 /dev/mshare && mshare-api {mode} && \
         mshare-fuzz 20000 1 && mshare-calls syscall && mshare-calls device && mshare-mmops && \
         mshare-pss"
    );
    if mode == 'B' {
        script.push_str(" && mshare-protflip 4 3 8");
    }
    let run = debug_boot(&format!("debug-kernel-{mode}"), mode, &script)
        .run_command()
        .unwrap_or_else(|e| panic!("mode {mode}: {e}"));
    let console = &run.output.console;
    // A kernel without the checks would pass for the wrong reason.
    assert!(console.contains("KernelAddressSanitizer initialized"), "mode {mode}: this kernel has no KASAN");
    assert!(console.contains("Lock dependency validator"), "mode {mode}: this kernel has no lockdep");
    assert!(
        console.contains(&format!("mshare 0.1.0 loaded (granule 2048 KiB, built-in): mode {mode}")),
        "mode {mode}: mshare is not built in, or not in mode {mode}"
    );
    let stdout = &run.output.stdout;
    assert_eq!(run.result.status, 0, "mode {mode}: a suite failed: {stdout}");
    assert!(stdout.contains(&format!("mshare-api: {checks} checks, 0 failed")), "mode {mode}: {stdout}");
}

#[test]
#[ignore = "needs the debug kernel: make test-lockdep"]
fn the_suites_pass_under_kasan_and_lockdep_in_mode_b() {
    suites_pass_on_the_debug_kernel('B', guest_runner::API_CHECKS_MODE_B);
}

#[test]
#[ignore = "needs the debug kernel: make test-lockdep"]
fn the_suites_pass_under_kasan_and_lockdep_in_mode_c() {
    suites_pass_on_the_debug_kernel('C', guest_runner::API_CHECKS_MODE_C);
}
