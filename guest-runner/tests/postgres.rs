//! Unmodified programs on mshare, in the PostgreSQL image (POSTGRES_INITRAMFS) under QEMU
//! TCG: the preload library's C test programs, and PostgreSQL 15 serving pgbench with its
//! buffer pool on an msharefs region (guest-tests' mshare-postgres does the checking).
//!
//! These need `make images` (which `make test` runs first).

use guest_runner::images::ImagePaths;
use guest_runner::qemu::{log_path, Boot};
use std::time::Duration;

/// The module's modes: B (shared page tables), and C (`mshare_params=shared_tables=0`).
const MODES: [(&str, Option<&str>); 2] = [("B", None), ("C", Some("mshare_params=shared_tables=0"))];

/// A boot of the PostgreSQL image running `command`, with room for the server.
fn postgres_boot(name: &str, command: &[&str]) -> Boot {
    let images = ImagePaths::discover().unwrap_or_else(|e| panic!("guest images: {e}"));
    let mut boot = Boot::guest_image(&images).unwrap_or_else(|e| panic!("{e}"));
    boot.initrd = Some(images.get("POSTGRES_INITRAMFS").unwrap_or_else(|e| panic!("{e}")).to_path_buf());
    boot.memory_mib = 1024;
    boot.timeout = Duration::from_secs(600);
    boot.command = command.iter().map(|s| (*s).to_owned()).collect();
    boot.console_log = Some(log_path(name));
    boot
}

/// Runs `command` in the PostgreSQL image in each mode and checks its suite's summary.
fn passes(name: &str, command: &[&str], checks: usize) {
    for (mode, params) in MODES {
        let mut boot = postgres_boot(&format!("{name}-{mode}"), command);
        boot.cmdline.extend(params.map(str::to_owned));
        let run = boot.run_command().unwrap_or_else(|e| panic!("{e}"));
        let out = &run.output.stdout;
        let summary = format!("mshare-postgres: {checks} checks, 0 failed");
        assert!(out.lines().any(|l| l.trim_end_matches('\r') == summary), "mode {mode}: no '{summary}':\n{out}");
        assert_eq!(run.result.status, 0, "mode {mode}: {out}");
    }
}

/// A shared anonymous mapping and a System V segment of programs that know nothing of
/// mshare move onto msharefs under `mshare run`; forked workers count under futexes in
/// them; munmap, IPC_STAT, IPC_RMID behave; the library refuses a mode that does not
/// match unless told to fall back. In both modes.
#[test]
fn unmodified_c_programs_share_memory_through_msharefs() {
    passes("postgres-preload", &["mshare-postgres", "preload"], 8);
}

/// PostgreSQL, unmodified, under `mshare run`: its buffer pool is an msharefs window in
/// every server process (a backend serving pgbench included), pgbench -S completes every transaction, in mode B each backend
/// links the pool's shared PMD table once (one fault) and in mode C the module serves its
/// faults, pg_ctl stop is clean and the region goes with the server.
#[test]
fn postgres_serves_pgbench_from_an_msharefs_buffer_pool() {
    passes("postgres-server", &["mshare-postgres", "server", "--clients", "4", "--seconds", "5"], 10);
}
