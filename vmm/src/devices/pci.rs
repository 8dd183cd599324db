//! PCI without ACPI: configuration mechanism #1 on ports 0xcf8/0xcfc, a host bridge at
//! 00:00.0 (so Linux's conf1 sanity check finds one), and a bus of up to 32 devices on
//! bus 0, function 0 each. Devices keep a type-0 configuration space ([`ConfigSpace`])
//! with per-register write masks, which is all BAR sizing needs: the guest writes all ones
//! and reads back the size mask.

use crate::devices::{lock, PioDevice};
use std::sync::{Arc, Mutex};

/// First configuration port (address at 0xcf8, data at 0xcfc).
pub const CONFIG_PORT: u16 = 0xcf8;
/// Ports from 0xcf8 to 0xcff.
pub const CONFIG_PORTS_LEN: u16 = 8;
/// Slots on bus 0.
pub const SLOTS: usize = 32;

/// The command register (index in 32-bit registers).
pub const REG_COMMAND: usize = 1;
const REG_CLASS: usize = 2;
const REG_HEADER: usize = 3;
/// The first BAR register.
pub const REG_BAR0: usize = 4;
const REG_CAPABILITIES: usize = 13;
const REG_INTERRUPT: usize = 15;
/// Command register bit: memory space decoding on.
pub const COMMAND_MEMORY: u32 = 1 << 1;
const STATUS_CAPABILITIES: u32 = 1 << 20;
const FIRST_CAPABILITY: usize = 0x40;
const BAR_MEM64: u32 = 0b10 << 1;
const BAR_PREFETCHABLE: u32 = 1 << 3;

/// Bytes in a type-0 configuration space (conventional PCI).
const CONFIG_SPACE_SIZE: usize = 256;

/// A capability that does not fit in the configuration space.
#[derive(Debug, thiserror::Error)]
#[error(
    "PCI capability {id:#04x} of {len} bytes at {offset:#x} runs past the {CONFIG_SPACE_SIZE}-byte configuration space"
)]
pub struct CapabilityError {
    id: u8,
    len: usize,
    offset: usize,
}

/// A BAR of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// Size in bytes (a power of two).
    pub size: u64,
    /// Whether it spans two registers.
    pub is_64bit: bool,
}

/// A type-0 configuration space: 64 registers and the bits of each the guest may write.
#[derive(Debug, Clone)]
pub struct ConfigSpace {
    regs: [u32; CONFIG_SPACE_SIZE / 4],
    writable: [u32; CONFIG_SPACE_SIZE / 4],
    bars: [Option<Bar>; 6],
    /// BAR registers whose last write was the all-ones of a size probe.
    sizing: [bool; 6],
    next_capability: usize,
}

impl ConfigSpace {
    /// A device `vendor:device` of class `class`/`subclass`, revision `revision`.
    pub fn new(vendor: u16, device: u16, class: u8, subclass: u8, revision: u8) -> Self {
        let mut regs = [0u32; CONFIG_SPACE_SIZE / 4];
        let mut writable = [0u32; CONFIG_SPACE_SIZE / 4];
        regs[0] = u32::from(device) << 16 | u32::from(vendor);
        regs[REG_CLASS] = u32::from(class) << 24 | u32::from(subclass) << 16 | u32::from(revision);
        writable[REG_COMMAND] = 0x0000_0547; // I/O, memory, bus master, parity, SERR, INTx disable
        writable[REG_HEADER] = 0x0000_ffff; // cache line size, latency timer
        writable[REG_INTERRUPT] = 0x0000_00ff; // interrupt line
        Self { regs, writable, bars: [None; 6], sizing: [false; 6], next_capability: FIRST_CAPABILITY }
    }

    /// Declares a 32-bit memory BAR `index` of `size` bytes.
    pub fn add_bar32(&mut self, index: usize, size: u32) {
        self.bars[index] = Some(Bar { size: u64::from(size), is_64bit: false });
        self.writable[REG_BAR0 + index] = !(size - 1) & !0xf;
    }

    /// Declares a 64-bit memory BAR at `index` and `index + 1`.
    pub fn add_bar64(&mut self, index: usize, size: u64, prefetchable: bool) {
        self.bars[index] = Some(Bar { size, is_64bit: true });
        let mask = !(size - 1);
        self.regs[REG_BAR0 + index] = BAR_MEM64 | if prefetchable { BAR_PREFETCHABLE } else { 0 };
        self.writable[REG_BAR0 + index] = (mask as u32) & !0xf;
        self.writable[REG_BAR0 + index + 1] = (mask >> 32) as u32;
    }

    /// Programs BAR `index` the way firmware would.
    pub fn set_bar_address(&mut self, index: usize, addr: u64) {
        let flags = self.regs[REG_BAR0 + index] & 0xf;
        self.regs[REG_BAR0 + index] = (addr as u32 & !0xf) | flags;
        if self.bars[index].is_some_and(|b| b.is_64bit) {
            self.regs[REG_BAR0 + index + 1] = (addr >> 32) as u32;
        }
    }

    /// The address BAR `index` holds now.
    pub fn bar_address(&self, index: usize) -> u64 {
        let low = u64::from(self.regs[REG_BAR0 + index] & !0xf);
        match self.bars[index] {
            Some(Bar { is_64bit: true, .. }) => low | u64::from(self.regs[REG_BAR0 + index + 1]) << 32,
            _ => low,
        }
    }

    /// The BAR declared at `index`.
    pub fn bar(&self, index: usize) -> Option<Bar> {
        self.bars[index]
    }

    /// Whether BAR `index` is being sized: the guest's last write to it (either half of a
    /// 64-bit BAR) was all ones, so it holds a size mask, not an address. Decided by the
    /// write, not the value: a real address may look like a mask.
    pub fn bar_probing(&self, index: usize) -> bool {
        self.sizing[index]
            || (self.bars[index].is_some_and(|b| b.is_64bit) && self.sizing.get(index + 1) == Some(&true))
    }

    /// Whether the command register enables memory decoding.
    pub fn memory_enabled(&self) -> bool {
        self.regs[REG_COMMAND] & COMMAND_MEMORY != 0
    }

    /// Turns memory decoding on (as firmware leaves a device it programmed).
    pub fn enable_memory(&mut self) {
        self.regs[REG_COMMAND] |= COMMAND_MEMORY;
    }

    /// Appends a capability `id` with `body` to the list; returns its offset. Refuses one
    /// that would run past the 256-byte configuration space (changing nothing).
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<usize, CapabilityError> {
        let offset = self.next_capability;
        let len = 2 + body.len();
        if offset + len > CONFIG_SPACE_SIZE {
            return Err(CapabilityError { id, len, offset });
        }
        let mut bytes = vec![id, 0];
        bytes.extend_from_slice(body);
        for (i, b) in bytes.iter().enumerate() {
            self.set_byte(offset + i, *b);
        }
        if offset == FIRST_CAPABILITY {
            self.regs[REG_CAPABILITIES] = FIRST_CAPABILITY as u32;
            self.regs[REG_COMMAND] |= STATUS_CAPABILITIES;
        } else {
            // Link the previous capability, whose next pointer is the last one still zero.
            let mut prev = FIRST_CAPABILITY;
            while self.byte(prev + 1) != 0 {
                prev = usize::from(self.byte(prev + 1));
            }
            self.set_byte(prev + 1, offset as u8);
        }
        self.next_capability = (offset + len + 3) & !3;
        Ok(offset)
    }

    fn byte(&self, offset: usize) -> u8 {
        (self.regs[offset / 4] >> ((offset % 4) * 8)) as u8
    }

    fn set_byte(&mut self, offset: usize, value: u8) {
        let shift = (offset % 4) * 8;
        self.regs[offset / 4] = (self.regs[offset / 4] & !(0xff << shift)) | u32::from(value) << shift;
    }

    /// Reads register `reg` (0..64).
    pub fn read(&self, reg: usize) -> u32 {
        self.regs.get(reg).copied().unwrap_or(0xffff_ffff)
    }

    /// Writes `data` (1, 2 or 4 bytes) at byte `offset` of register `reg`, honouring the
    /// write mask; other bits keep their value.
    pub fn write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        if reg >= 64 || offset + data.len() > 4 || data.is_empty() {
            return;
        }
        let mut value = 0u32;
        let mut mask = 0u32;
        for (i, b) in data.iter().enumerate() {
            value |= u32::from(*b) << ((offset + i) * 8);
            mask |= 0xff << ((offset + i) * 8);
        }
        let writable = self.writable[reg] & mask;
        self.regs[reg] = (self.regs[reg] & !writable) | (value & writable);
        if let Some(sizing) = reg.checked_sub(REG_BAR0).and_then(|bar| self.sizing.get_mut(bar)) {
            *sizing = mask == u32::MAX && value == u32::MAX;
        }
    }
}

/// A device on the PCI bus.
pub trait PciDevice: Send {
    /// Its configuration space.
    fn config(&self) -> &ConfigSpace;
    /// Its configuration space, to write.
    fn config_mut(&mut self) -> &mut ConfigSpace;
    /// Called after the guest wrote register `reg` (BAR moves, decode on/off).
    fn config_written(&mut self, _reg: usize) {}
    /// An MMIO read at `addr`; `false` if this device does not decode it.
    fn mmio_read(&mut self, _addr: u64, _data: &mut [u8]) -> bool {
        false
    }
    /// An MMIO write at `addr`; `false` if this device does not decode it.
    fn mmio_write(&mut self, _addr: u64, _data: &[u8]) -> bool {
        false
    }
}

/// A device that is only its configuration space: the host bridge, or placeholders.
pub struct ConfigOnly(pub ConfigSpace);

impl PciDevice for ConfigOnly {
    fn config(&self) -> &ConfigSpace {
        &self.0
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.0
    }
}

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

    fn device(&self, slot: usize) -> Option<&Arc<Mutex<dyn PciDevice>>> {
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

    #[test]
    fn bar_sizing_reads_back_the_mask() {
        let mut config = ConfigSpace::new(0x1af4, 0x1110, 0x05, 0x00, 1);
        config.add_bar32(0, 256);
        config.add_bar64(2, 1 << 30, true);
        config.set_bar_address(2, 0x40_0000_0000);
        assert_eq!(config.bar_address(2), 0x40_0000_0000);
        config.write(4, 0, &[0xff; 4]);
        assert_eq!(config.read(4), 0xffff_ff00);
        config.write(6, 0, &[0xff; 4]);
        config.write(7, 0, &[0xff; 4]);
        assert_eq!(config.read(6), 0xc000_000c, "1 GiB, 64-bit, prefetchable");
        assert_eq!(config.read(7), 0xffff_ffff);
        assert!(config.bar_probing(2));
        config.write(6, 0, &0u32.to_le_bytes());
        assert!(config.bar_probing(2), "the high half still holds its mask");
        config.write(7, 0, &0x80u32.to_le_bytes());
        assert!(!config.bar_probing(2));
        assert_eq!(config.bar_address(2), 0x80_0000_0000);
        assert_eq!(config.read(6) & 0xf, 0xc, "type bits survive");
    }

    #[test]
    fn an_address_that_looks_like_a_mask_is_an_address() {
        // A 1 GiB BAR at 0x1_c000_0000: its low half equals the size mask.
        let mut config = ConfigSpace::new(0x1af4, 0x1110, 0x05, 0x00, 1);
        config.add_bar64(2, 1 << 30, true);
        config.write(6, 0, &0xc000_0000u32.to_le_bytes());
        config.write(7, 0, &1u32.to_le_bytes());
        assert!(!config.bar_probing(2));
        assert_eq!(config.bar_address(2), 0x1_c000_0000);
        // A BAR of 4 GiB or more has no writable low bits at all.
        let mut big = ConfigSpace::new(0x1af4, 0x1110, 0x05, 0x00, 1);
        big.add_bar64(2, 8 << 30, true);
        big.write(6, 0, &0u32.to_le_bytes());
        big.write(7, 0, &4u32.to_le_bytes());
        assert!(!big.bar_probing(2));
        assert_eq!(big.bar_address(2), 4 << 32);
    }

    #[test]
    fn capabilities_are_chained() {
        let mut config = ConfigSpace::new(1, 2, 3, 4, 5);
        assert_eq!(config.add_capability(0x09, &[5, b'a', b'b']).unwrap(), 0x40);
        assert_eq!(config.add_capability(0x09, &[3]).unwrap(), 0x48);
        assert_ne!(config.read(1) & STATUS_CAPABILITIES, 0);
        assert_eq!(config.read(13), 0x40);
        assert_eq!(config.read(0x40 / 4) & 0xffff, 0x4809);
        assert_eq!(config.read(0x48 / 4) & 0xffff, 0x0009);
    }

    #[test]
    fn a_capability_past_the_configuration_space_is_refused() {
        let mut config = ConfigSpace::new(1, 2, 3, 4, 5);
        assert_eq!(config.add_capability(0x09, &[0; 100]).unwrap(), 0x40);
        // 0xa8 + 2 + 86 = 256: the last byte fits.
        assert_eq!(config.add_capability(0x09, &[0; 86]).unwrap(), 0xa8);
        let before = (0..64).map(|r| config.read(r)).collect::<Vec<_>>();
        let err = config.add_capability(0x09, &[0; 1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PCI capability 0x09 of 3 bytes at 0x100 runs past the 256-byte configuration space"
        );
        assert_eq!((0..64).map(|r| config.read(r)).collect::<Vec<_>>(), before);
    }
}
