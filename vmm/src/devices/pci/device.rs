//! What the bus needs of a device: its configuration space, a hook after the guest writes
//! it, and MMIO it may decode. A trait, so the bus holds ivshmem devices and the host
//! bridge alike without knowing their kinds.

use crate::devices::pci::config_space::ConfigSpace;

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
