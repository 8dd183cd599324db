//! The exit device: reads give zeros, the first byte written is the exit status, and
//! later writes do not change it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use vmm::devices::exit::ExitDevice;
use vmm::devices::PioDevice;
use vmm::stop::{StopReason, StopSignal};

fuzz_target!(|data: &[u8]| {
    let stop = Arc::new(StopSignal::new().expect("eventfd"));
    let mut device = ExitDevice::new(stop.clone());
    let mut first = None;
    // Each access: [offset, len | write << 7, bytes..4].
    for op in data.chunks_exact(6) {
        let len = usize::from(op[1] & 7).min(4);
        let mut buf = [op[2], op[3], op[4], op[5]];
        if op[1] & 0x80 != 0 {
            device.write(u16::from(op[0]), &buf[..len]);
            if len > 0 && first.is_none() {
                first = Some(buf[0]);
            }
        } else {
            device.read(u16::from(op[0]), &mut buf[..len]);
            assert!(buf[..len].iter().all(|&b| b == 0), "reads give zeros");
        }
        assert_eq!(stop.reason(), first.map(StopReason::GuestExit));
    }
});
