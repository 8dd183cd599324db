//! What a guest can do to PCI configuration space through ports 0xcf8-0xcff: any sequence
//! of reads and writes keeps the device's IDs and its BAR2's type and alignment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex};
use vmm::devices::ivshmem;
use vmm::devices::pci::{ConfigOnly, PciBus, PciConfigIo, PciDevice};
use vmm::devices::PioDevice;

fuzz_target!(|data: &[u8]| {
    let device = Arc::new(Mutex::new(ConfigOnly(ivshmem::config_space(1 << 30))));
    let mut bus = PciBus::new();
    bus.add(device.clone());
    let mut io = PciConfigIo::new(Arc::new(bus));
    // Each access: [offset, len | write << 7, value (4 bytes)].
    for op in data.chunks_exact(6) {
        let offset = u16::from(op[0] % 10);
        let len = usize::from(op[1] & 7).min(4);
        let mut buf = [op[2], op[3], op[4], op[5]];
        if op[1] & 0x80 != 0 {
            io.write(offset, &buf[..len]);
        } else {
            io.read(offset, &mut buf[..len]);
        }
        let device = device.lock().unwrap();
        let config = device.config();
        assert_eq!(config.read(0), 0x1110_1af4, "IDs are read-only");
        assert_eq!(config.read(6) & 0xf, 0xc, "BAR2 stays 64-bit prefetchable");
        assert_eq!(config.read(6) & 0x3fff_fff0, 0, "a 1 GiB BAR has no address bits below 1 GiB");
    }
});
