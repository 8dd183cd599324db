//! A type-0 configuration space kept as registers plus a write mask per register, because
//! the mask alone gives PCI's read-only fields, BAR sizing (the guest writes all ones and
//! reads back the size mask) and guest-programmable fields without per-field code.

use crate::devices::pci::capability::FIRST_CAPABILITY;

/// The command register (index in 32-bit registers).
pub const REG_COMMAND: usize = 1;
const REG_CLASS: usize = 2;
const REG_HEADER: usize = 3;
/// The first BAR register.
pub const REG_BAR0: usize = 4;
const REG_INTERRUPT: usize = 15;
/// Command register bit: memory space decoding on.
pub const COMMAND_MEMORY: u32 = 1 << 1;
const BAR_MEM64: u32 = 0b10 << 1;
const BAR_PREFETCHABLE: u32 = 1 << 3;

/// Bytes in a type-0 configuration space (conventional PCI). The capability list is
/// bounded by it.
pub(super) const CONFIG_SPACE_SIZE: usize = 256;

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
    /// Where the next capability goes; kept here, not in `capability`, so a space and its
    /// list cannot disagree.
    pub(super) next_capability: usize,
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

    /// Sets `bits` of register `reg` regardless of the write mask: the VMM, not the guest,
    /// is writing (the capability list's pointer and status bit).
    pub(super) fn set_bits(&mut self, reg: usize, bits: u32) {
        self.regs[reg] |= bits;
    }

    pub(super) fn byte(&self, offset: usize) -> u8 {
        (self.regs[offset / 4] >> ((offset % 4) * 8)) as u8
    }

    pub(super) fn set_byte(&mut self, offset: usize, value: u8) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
