//! The i8042 keyboard controller, from vm-superio, for `reboot`: Linux resets the machine
//! by writing 0xfe (pulse the reset line) to the command port 0x64, which stops the VM.
//! Reads are 0 ("buffers empty"), so the kernel's wait loops finish at once.

use crate::devices::PioDevice;
use crate::stop::{StopReason, StopSignal};
use std::convert::Infallible;
use std::sync::Arc;
use vm_superio::{I8042Device, Trigger};

/// Data port.
pub const DATA_PORT: u16 = 0x60;
/// The controller's ports, 0x60 to 0x64 (the command port).
pub const PORTS_LEN: u16 = 5;

/// The controller's reset line: stops the VM.
pub struct ResetLine(Arc<StopSignal>);

impl Trigger for ResetLine {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        self.0.stop(StopReason::Reset);
        Ok(())
    }
}

/// The keyboard controller on the port bus.
pub struct I8042(I8042Device<ResetLine>);

impl I8042 {
    /// A controller whose reset stops the VM through `stop`.
    pub fn new(stop: Arc<StopSignal>) -> Self {
        Self(I8042Device::new(ResetLine(stop)))
    }
}

impl PioDevice for I8042 {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        // One register a byte; the ports are five bytes, so the offset fits.
        let value = self.0.read(offset as u8);
        data.fill(value);
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        if let Some(&value) = data.first() {
            match self.0.write(offset as u8, value) {
                Ok(()) => {}
                Err(never) => match never {},
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMAND_OFFSET: u16 = 4;
    const CMD_RESET_CPU: u8 = 0xfe;

    #[test]
    fn reset_command_stops_the_vm_and_nothing_else_does() {
        let stop = Arc::new(StopSignal::new().unwrap());
        let mut kbd = I8042::new(stop.clone());
        kbd.write(0, &[CMD_RESET_CPU]);
        kbd.write(COMMAND_OFFSET, &[0xad]);
        assert!(!stop.is_stopping());
        let mut status = [0xff];
        kbd.read(COMMAND_OFFSET, &mut status);
        assert_eq!(status, [0]);
        kbd.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(stop.reason(), Some(StopReason::Reset));
    }
}
