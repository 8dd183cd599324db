//! Emulated devices and the port-I/O bus that dispatches guest `in`/`out` to them.
//!
//! Every port access is a VM exit (under a software hypervisor, a costly one), so the
//! devices are the few Linux needs: the 16550 UART ([`serial`]), the keyboard controller's
//! reset line ([`i8042`]), the VMM's exit device ([`exit`]), and PCI configuration space
//! ([`pci`]) with one ivshmem-compatible device per shared region ([`ivshmem`]). The port
//! bus is vm-device's; ports nobody claims read as all ones and ignore writes, as on a
//! bus with nothing behind it.

pub mod exit;
pub mod i8042;
pub mod ivshmem;
pub mod pci;
pub mod serial;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use vm_device::bus::{Bus, PioAddress, PioAddressOffset, PioRange};
use vm_device::DevicePio;

/// Locks a device. A lock poisoned by a panic in another thread (possible in test builds;
/// release builds abort on panic) still guards the device's state: use it, rather than
/// treat the device as absent or silently skip the access.
pub fn lock<T: ?Sized>(device: &Mutex<T>) -> MutexGuard<'_, T> {
    device.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A device on the port-I/O bus; offsets are relative to the device's base port.
pub trait PioDevice: Send {
    /// Guest `in` of `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// Guest `out` of `data` at `offset`.
    fn write(&mut self, offset: u16, data: &[u8]);
}

/// Error adding a device to the bus.
#[derive(Debug, Clone, thiserror::Error)]
#[error("ports {base:#x}..{end:#x} overlap a device already on the bus")]
pub struct BusOverlap {
    /// First port of the refused range.
    pub base: u16,
    /// One past its last port.
    pub end: u32,
}

/// A device on vm-device's bus, locked through [`lock`] for each access.
struct Slot(Arc<Mutex<dyn PioDevice>>);

impl DevicePio for Slot {
    fn pio_read(&self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        lock(&self.0).read(offset, data);
    }

    fn pio_write(&self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        lock(&self.0).write(offset, data);
    }
}

/// The port-I/O bus of one VM: vm-device's bus, and what falls outside every device.
#[derive(Default)]
pub struct PioBus {
    bus: Bus<PioAddress, Slot>,
    /// Accesses to ports no device claims.
    pub unclaimed: AtomicU64,
}

impl PioBus {
    /// Puts `device` at ports `base..base + len`.
    pub fn insert(&mut self, base: u16, len: u16, device: Arc<Mutex<dyn PioDevice>>) -> Result<(), BusOverlap> {
        let overlap = BusOverlap { base, end: u32::from(base) + u32::from(len) };
        let range = PioRange::new(PioAddress(base), len).map_err(|_| overlap.clone())?;
        self.bus.register(range, Slot(device)).map_err(|_| overlap)
    }

    /// Dispatches a guest `in`; ports no device claims (for the whole access) read as all
    /// ones.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        match self.bus.check_access(PioAddress(port), data.len()) {
            Ok((range, slot)) => slot.pio_read(range.base(), PioAddress(port) - range.base(), data),
            Err(_) => {
                self.unclaimed.fetch_add(1, Ordering::Relaxed);
                data.fill(0xff);
            }
        }
    }

    /// Dispatches a guest `out`; writes to unclaimed ports are dropped.
    pub fn write(&self, port: u16, data: &[u8]) {
        match self.bus.check_access(PioAddress(port), data.len()) {
            Ok((range, slot)) => slot.pio_write(range.base(), PioAddress(port) - range.base(), data),
            Err(_) => {
                self.unclaimed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u16, Vec<u8>)>,
    }

    impl PioDevice for Recorder {
        fn read(&mut self, offset: u16, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u16, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_reach_the_device_at_their_offset() {
        let recorder = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = PioBus::default();
        bus.insert(0x3f8, 8, recorder.clone()).unwrap();
        bus.write(0x3fb, &[0x80]);
        let mut data = [0u8; 1];
        bus.read(0x3fd, &mut data);
        assert_eq!(data, [5]);
        assert_eq!(recorder.lock().unwrap().writes, vec![(3, vec![0x80])]);
    }

    #[test]
    fn unclaimed_ports_read_all_ones_and_are_counted() {
        let bus = PioBus::default();
        let mut data = [0u8; 4];
        bus.read(0xcfc, &mut data);
        bus.write(0x80, &[1]);
        assert_eq!(data, [0xff; 4]);
        assert_eq!(bus.unclaimed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let mut bus = PioBus::default();
        bus.insert(0x60, 5, Arc::new(Mutex::new(Recorder::default()))).unwrap();
        let err = bus.insert(0x64, 1, Arc::new(Mutex::new(Recorder::default()))).unwrap_err();
        assert_eq!(err.to_string(), "ports 0x64..0x65 overlap a device already on the bus");
        assert!(bus.insert(0xffff, 2, Arc::new(Mutex::new(Recorder::default()))).is_err());
    }
}
