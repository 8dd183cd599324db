//! Configuration mechanism #1, the port pair every x86 kernel can use without ACPI or
//! MMCONFIG: an address latch at 0xcf8 selects bus, slot, function and register, and the
//! data window at 0xcfc reads or writes it. Anything the latch selects that is not present
//! reads as all ones, which is how the guest's scan finds the slots that are empty.

use crate::devices::pci::bus::PciBus;
use crate::devices::{lock, PioDevice};
use std::sync::Arc;

/// First configuration port (address at 0xcf8, data at 0xcfc).
pub const CONFIG_PORT: u16 = 0xcf8;
/// Ports from 0xcf8 to 0xcff.
pub const CONFIG_PORTS_LEN: u16 = 8;

/// Configuration mechanism #1: the address latch at 0xcf8 and the data window at 0xcfc.
pub struct PciConfigIo {
    bus: Arc<PciBus>,
    address: u32,
}

impl PciConfigIo {
    /// Config access to `bus`.
    pub fn new(bus: Arc<PciBus>) -> Self {
        Self { bus, address: 0 }
    }

    /// The slot and register the latch selects, if it selects a present function on bus 0.
    fn target(&self) -> Option<(usize, usize)> {
        let enabled = self.address & 0x8000_0000 != 0;
        let bus = (self.address >> 16) & 0xff;
        let slot = ((self.address >> 11) & 0x1f) as usize;
        let function = (self.address >> 8) & 0x7;
        let reg = ((self.address >> 2) & 0x3f) as usize;
        (enabled && bus == 0 && function == 0 && self.bus.device(slot).is_some()).then_some((slot, reg))
    }
}

impl PioDevice for PciConfigIo {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        let offset = usize::from(offset);
        let (value, shift) = if offset < 4 {
            (self.address, offset)
        } else {
            let value = self
                .target()
                .and_then(|(slot, reg)| Some(lock(self.bus.device(slot)?).config().read(reg)))
                .unwrap_or(0xffff_ffff);
            (value, offset - 4)
        };
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = value.checked_shr(((shift + i) * 8) as u32).unwrap_or(0xff) as u8;
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        let offset = usize::from(offset);
        if offset < 4 {
            for (i, b) in data.iter().enumerate().take(4 - offset) {
                let shift = (offset + i) * 8;
                self.address = (self.address & !(0xff << shift)) | u32::from(*b) << shift;
            }
            return;
        }
        if let Some((slot, reg)) = self.target() {
            if let Some(device) = self.bus.device(slot) {
                let mut device = lock(device);
                device.config_mut().write(reg, offset - 4, data);
                device.config_written(reg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::pci::config_space::ConfigSpace;
    use crate::devices::pci::device::ConfigOnly;
    use std::sync::Mutex;

    fn io_with(device: Option<ConfigSpace>) -> PciConfigIo {
        let mut bus = PciBus::new();
        if let Some(config) = device {
            bus.add(Arc::new(Mutex::new(ConfigOnly(config))));
        }
        PciConfigIo::new(Arc::new(bus))
    }

    fn select(io: &mut PciConfigIo, slot: u32, reg: u32) {
        io.write(0, &(0x8000_0000 | slot << 11 | reg << 2).to_le_bytes());
    }

    fn read32(io: &mut PciConfigIo) -> u32 {
        let mut data = [0u8; 4];
        io.read(4, &mut data);
        u32::from_le_bytes(data)
    }

    #[test]
    fn host_bridge_answers_and_empty_slots_read_all_ones() {
        let mut io = io_with(None);
        select(&mut io, 0, 0);
        assert_eq!(read32(&mut io), 0x0d57_8086);
        select(&mut io, 0, 2);
        assert_eq!(read32(&mut io) >> 16, 0x0600);
        select(&mut io, 5, 0);
        assert_eq!(read32(&mut io), 0xffff_ffff);
        // Latch disabled: all ones.
        io.write(0, &0x0000_0000u32.to_le_bytes());
        assert_eq!(read32(&mut io), 0xffff_ffff);
    }

    #[test]
    fn linux_conf1_probe_echoes_the_latch() {
        // pci_check_type1: outb(0x01, 0xcfb); outl(0x80000000, 0xcf8); inl(0xcf8) == 0x80000000
        let mut io = io_with(None);
        io.write(3, &[0x01]);
        io.write(0, &0x8000_0000u32.to_le_bytes());
        let mut latch = [0u8; 4];
        io.read(0, &mut latch);
        assert_eq!(u32::from_le_bytes(latch), 0x8000_0000);
    }

    #[test]
    fn config_reads_and_writes_of_every_width() {
        let mut io = io_with(Some(ConfigSpace::new(0x1af4, 0x1110, 0x05, 0x00, 1)));
        select(&mut io, 1, 0);
        let mut b = [0u8; 1];
        io.read(5, &mut b);
        assert_eq!(b, [0x1a]);
        let mut w = [0u8; 2];
        io.read(6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x1110);
        // Interrupt line (byte 0 of register 15) is writable; the pin (byte 1) is not.
        select(&mut io, 1, 15);
        io.write(4, &[0x0b]);
        io.write(5, &[0x01]);
        assert_eq!(read32(&mut io) & 0xffff, 0x000b);
        // A word write to the command register sets memory decode.
        select(&mut io, 1, 1);
        io.write(4, &0x0002u16.to_le_bytes());
        assert_eq!(read32(&mut io) & 0xffff, 0x0002);
        // Vendor ID is read-only.
        select(&mut io, 1, 0);
        io.write(4, &0xdead_beefu32.to_le_bytes());
        assert_eq!(read32(&mut io), 0x1110_1af4);
    }
}
