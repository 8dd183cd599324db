//! Checks inside the guest that mshare.ko is loaded and live, and prints what it found.
//!
//! Exit status: 0 when the module is live, 1 when it is missing or not live.

use guest_tests::read_attr;
use std::process::ExitCode;

fn main() -> ExitCode {
    match read_attr("/sys/module/mshare/initstate") {
        Ok(state) if state == "live" => {
            let refcnt = read_attr("/sys/module/mshare/refcnt").unwrap_or_else(|e| e.to_string());
            println!("modcheck: mshare is live (refcnt {refcnt})");
            ExitCode::SUCCESS
        }
        Ok(state) => {
            eprintln!("modcheck: mshare is loaded but {state}, not live");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("modcheck: mshare is not loaded ({e}); is mshare.ko in the initramfs and did insmod succeed?");
            ExitCode::FAILURE
        }
    }
}
