//! ivshmem-probe: list the ivshmem devices the guest sees, and read or write their BAR2.
//!
//! ```text
//! ivshmem-probe list                        address, size, name, access of each device
//! ivshmem-probe read DEV OFFSET LEN         print LEN bytes at OFFSET (as text)
//! ivshmem-probe write DEV OFFSET TEXT       write TEXT at OFFSET
//! ```
//! DEV is a PCI address (0000:00:01.0), a region name, or an index in the list.
//! Exit status: 0 done, 1 not possible (no such device, out of range), 2 bad usage.

use guest_tests::ivshmem::{devices, Device};
use guest_tests::parse_number;
use std::process::ExitCode;

const USAGE: &str = "usage: ivshmem-probe list | read DEV OFFSET LEN | write DEV OFFSET TEXT";

fn find<'a>(all: &'a [Device], which: &str) -> Option<&'a Device> {
    all.iter()
        .find(|d| d.address == which || d.name.as_deref() == Some(which))
        .or_else(|| which.parse::<usize>().ok().and_then(|i| all.get(i)))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = match devices() {
        Ok(all) => all,
        Err(e) => {
            eprintln!("ivshmem-probe: cannot scan /sys/bus/pci/devices: {e}");
            return ExitCode::FAILURE;
        }
    };
    let fail = |msg: String| {
        eprintln!("ivshmem-probe: {msg}");
        ExitCode::FAILURE
    };
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["list"] => {
            for d in &all {
                let name = d.name.as_deref().unwrap_or("-");
                println!("{} {} {} {}", d.address, d.size, name, if d.read_only { "ro" } else { "rw" });
            }
            ExitCode::SUCCESS
        }
        [op @ ("read" | "write"), dev, offset, arg] => {
            let Some(device) = find(&all, dev) else {
                return fail(format!("no ivshmem device '{dev}' ({} found)", all.len()));
            };
            let Some(offset) = parse_number(offset).and_then(|o| usize::try_from(o).ok()) else {
                eprintln!("ivshmem-probe: bad offset '{offset}'\n{USAGE}");
                return ExitCode::from(2);
            };
            let mapping = match device.map(*op == "write") {
                Ok(m) => m,
                Err(e) => return fail(format!("mapping {}/resource2: {e}", device.path.display())),
            };
            if *op == "read" {
                let Some(len) = parse_number(arg).and_then(|l| usize::try_from(l).ok()) else {
                    eprintln!("ivshmem-probe: bad length '{arg}'\n{USAGE}");
                    return ExitCode::from(2);
                };
                match mapping.read(offset, len) {
                    Some(bytes) => {
                        println!("{}", String::from_utf8_lossy(&bytes));
                        ExitCode::SUCCESS
                    }
                    None => fail(format!("{offset}+{len} is past the end of the {}-byte region", device.size)),
                }
            } else {
                match mapping.write(offset, arg.as_bytes()) {
                    Some(()) => ExitCode::SUCCESS,
                    None => fail(format!("{offset}+{} is past the end of the {}-byte region", arg.len(), device.size)),
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
