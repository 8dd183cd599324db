//! Just enough of the i8042 keyboard controller for `reboot`: Linux resets the machine by
//! writing 0xfe (pulse the reset line) to the command port 0x64, which stops the VM.
//! Status reads say "buffers empty" so the kernel's wait loops finish at once.

use crate::devices::PioDevice;
use crate::stop::{StopReason, StopSignal};
use std::sync::Arc;

/// Data port.
pub const DATA_PORT: u16 = 0x60;
/// Status/command port.
pub const COMMAND_PORT: u16 = 0x64;
/// The controller's ports, 0x60 to 0x64.
pub const PORTS_LEN: u16 = 5;

const CMD_RESET_CPU: u8 = 0xfe;

/// The keyboard controller's reset line.
pub struct I8042 {
    stop: Arc<StopSignal>,
}

impl I8042 {
    /// A controller whose reset stops the VM through `stop`.
    pub fn new(stop: Arc<StopSignal>) -> Self {
        Self { stop }
    }
}

impl PioDevice for I8042 {
    fn read(&mut self, _offset: u16, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        if offset == COMMAND_PORT - DATA_PORT && data.first() == Some(&CMD_RESET_CPU) {
            self.stop.stop(StopReason::Reset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_stops_the_vm_and_nothing_else_does() {
        let stop = Arc::new(StopSignal::new().unwrap());
        let mut kbd = I8042::new(stop.clone());
        kbd.write(0, &[CMD_RESET_CPU]);
        kbd.write(4, &[0xad]);
        assert!(!stop.is_stopping());
        let mut status = [0xff];
        kbd.read(4, &mut status);
        assert_eq!(status, [0]);
        kbd.write(4, &[CMD_RESET_CPU]);
        assert_eq!(stop.reason(), Some(StopReason::Reset));
    }
}
