//! Writes an exit status to the VMM's exit device (an I/O port), which ends the VM with
//! that status. Used by /init when the kernel command line says `mshare_exit=ioport:PORT`.
//!
//! Usage: guest-exit PORT STATUS   (PORT decimal or 0x-hex, STATUS 0..=255)

use guest_tests::parse_number;
use std::process::ExitCode;

fn usage(problem: &str) -> ExitCode {
    eprintln!(
        "guest-exit: {problem}\nusage: guest-exit PORT STATUS   (PORT decimal or 0x-hex below 0x10000, STATUS 0..=255)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, status] = args.as_slice() else {
        return usage("expected two arguments");
    };
    let Some(port) = parse_number(port).and_then(|p| u16::try_from(p).ok()) else {
        return usage(&format!("bad port '{port}'"));
    };
    let Some(status) = parse_number(status).and_then(|s| u8::try_from(s).ok()) else {
        return usage(&format!("bad status '{status}'"));
    };
    // SAFETY: ioperm only changes this process's I/O permission bitmap.
    if unsafe { libc::ioperm(u64::from(port), 1, 1) } != 0 {
        eprintln!("guest-exit: ioperm({port:#x}): {}", std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }
    // SAFETY: the port was granted above; writing one byte to it has no effect on this
    // process's memory. On the VMM's exit device it ends the VM.
    unsafe { std::arch::asm!("out dx, al", in("dx") port, in("al") status, options(nomem, nostack)) };
    // Only reached where no exit device listens on that port.
    eprintln!("guest-exit: the write to port {port:#x} did not end the VM");
    ExitCode::FAILURE
}
