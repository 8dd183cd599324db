//! The exit device: one I/O port; the byte the guest writes there becomes the exit status
//! of `mshare-vmm` and stops the VM. The guest's `/init` uses it when the kernel command
//! line says `mshare_exit=ioport:0xf4` (the VMM adds that), through the `guest-exit` program.
//! The port is the one QEMU's isa-debug-exit uses by default.

use crate::devices::PioDevice;
use crate::stop::{StopReason, StopSignal};
use std::sync::Arc;

/// The exit device's port.
pub const EXIT_PORT: u16 = 0xf4;

/// The kernel command-line word that tells the guest's /init where the exit device is.
pub fn cmdline_word() -> String {
    format!("mshare_exit=ioport:{EXIT_PORT:#x}")
}

/// The exit device.
pub struct ExitDevice {
    stop: Arc<StopSignal>,
}

impl ExitDevice {
    /// A device that stops the VM through `stop`.
    pub fn new(stop: Arc<StopSignal>) -> Self {
        Self { stop }
    }
}

impl PioDevice for ExitDevice {
    fn read(&mut self, _offset: u16, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u16, data: &[u8]) {
        if let Some(&status) = data.first() {
            self.stop.stop(StopReason::GuestExit(status));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_written_is_the_exit_status() {
        let stop = Arc::new(StopSignal::new().unwrap());
        ExitDevice::new(stop.clone()).write(0, &[7]);
        assert_eq!(stop.reason(), Some(StopReason::GuestExit(7)));
        assert_eq!(cmdline_word(), "mshare_exit=ioport:0xf4");
    }
}
