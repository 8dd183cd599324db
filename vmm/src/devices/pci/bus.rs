//! Bus 0 and nothing else: one function per slot and no bridges, because the guest needs
//! only a host bridge and one device per shared region. MMIO goes to whichever device
//! decodes the address, since BARs move when the guest reprograms them.

use crate::devices::lock;
use crate::devices::pci::config_space::ConfigSpace;
use crate::devices::pci::device::{ConfigOnly, PciDevice};
use std::sync::{Arc, Mutex};

/// Slots on bus 0.
pub const SLOTS: usize = 32;

/// The host bridge at 00:00.0 (Intel 0x0d57, as Cloud Hypervisor's), class 0x0600.
pub fn host_bridge() -> ConfigOnly {
    ConfigOnly(ConfigSpace::new(0x8086, 0x0d57, 0x06, 0x00, 0))
}

/// Bus 0: a host bridge in slot 0 and devices in the following slots.
pub struct PciBus {
    slots: Vec<Arc<Mutex<dyn PciDevice>>>,
}

impl PciBus {
    /// A bus with only the host bridge.
    pub fn new() -> Self {
        Self { slots: vec![Arc::new(Mutex::new(host_bridge()))] }
    }

    /// Adds a device in the next free slot; returns the slot, or `None` when the bus is full.
    pub fn add(&mut self, device: Arc<Mutex<dyn PciDevice>>) -> Option<usize> {
        if self.slots.len() >= SLOTS {
            return None;
        }
        self.slots.push(device);
        Some(self.slots.len() - 1)
    }

    /// The device in `slot`, for configuration accesses through the port window.
    pub(super) fn device(&self, slot: usize) -> Option<&Arc<Mutex<dyn PciDevice>>> {
        self.slots.get(slot)
    }

    /// Dispatches an MMIO read to the device decoding `addr`.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        self.slots.iter().any(|d| lock(d).mmio_read(addr, data))
    }

    /// Dispatches an MMIO write to the device decoding `addr`.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        self.slots.iter().any(|d| lock(d).mmio_write(addr, data))
    }
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholder() -> Arc<Mutex<dyn PciDevice>> {
        Arc::new(Mutex::new(ConfigOnly(ConfigSpace::new(0x1af4, 0x1110, 0x05, 0x00, 1))))
    }

    /// Decodes one byte at a fixed address and records what was written there.
    struct OneByte {
        config: ConfigSpace,
        addr: u64,
        value: u8,
    }

    impl PciDevice for OneByte {
        fn config(&self) -> &ConfigSpace {
            &self.config
        }
        fn config_mut(&mut self) -> &mut ConfigSpace {
            &mut self.config
        }
        fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool {
            if addr != self.addr {
                return false;
            }
            data.fill(self.value);
            true
        }
        fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool {
            if addr != self.addr {
                return false;
            }
            self.value = data[0];
            true
        }
    }

    #[test]
    fn slot_zero_is_the_host_bridge_and_the_bus_holds_31_more() {
        let mut bus = PciBus::new();
        let bridge = bus.device(0).map(|d| lock(d).config().read(0));
        assert_eq!(bridge, Some(0x0d57_8086));
        for slot in 1..SLOTS {
            assert_eq!(bus.add(placeholder()), Some(slot));
        }
        assert_eq!(bus.add(placeholder()), None);
        assert!(bus.device(SLOTS).is_none());
    }

    #[test]
    fn mmio_reaches_only_the_device_that_decodes_it() {
        let mut bus = PciBus::new();
        let device = OneByte { config: ConfigSpace::new(1, 2, 3, 4, 5), addr: 0x1000, value: 0 };
        bus.add(Arc::new(Mutex::new(device)));
        assert!(bus.mmio_write(0x1000, &[0x5a]));
        let mut data = [0u8; 1];
        assert!(bus.mmio_read(0x1000, &mut data));
        assert_eq!(data, [0x5a]);
        assert!(!bus.mmio_read(0x2000, &mut data));
        assert!(!bus.mmio_write(0x2000, &[1]));
    }
}
