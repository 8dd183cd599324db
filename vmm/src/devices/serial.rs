//! The 16550 UART at 0x3f8 (COM1, IRQ 4), from vm-superio, its interrupt through an irqfd.
//!
//! Output goes to stdout or a file. The VMM also reads it as it passes: a guest kernel
//! panic is reported as a failure even though the guest then resets the machine.

use crate::devices::PioDevice;
use crate::stop::{StopReason, StopSignal};
use std::io::{self, Write};
use std::sync::Arc;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// COM1's base port.
pub const COM1_BASE: u16 = 0x3f8;
/// COM1's ports.
pub const COM1_LEN: u16 = 8;
/// COM1's ISA interrupt.
pub const COM1_IRQ: u32 = 4;

const PANIC_MARKER: &str = "Kernel panic - not syncing";

/// Raises the UART's interrupt by writing the irqfd registered for IRQ 4.
pub struct IrqfdTrigger(pub EventFd);

impl Trigger for IrqfdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where console bytes go, watching for a kernel panic line on the way.
pub struct ConsoleOutput {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
    stop: Arc<StopSignal>,
}

impl ConsoleOutput {
    /// Console bytes to `out`; a panic line stops the VM through `stop`.
    pub fn new(out: Box<dyn Write + Send>, stop: Arc<StopSignal>) -> Self {
        Self { out, line: Vec::new(), stop }
    }

    fn watch(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.line);
                if line.contains(PANIC_MARKER) {
                    self.stop.stop(StopReason::GuestPanic(line.trim_end().to_owned()));
                }
                self.line.clear();
            } else if self.line.len() < 4096 {
                self.line.push(b);
            }
        }
    }
}

impl Write for ConsoleOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.watch(buf);
        self.out.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The UART on the port bus.
pub struct SerialDevice {
    uart: Serial<IrqfdTrigger, vm_superio::serial::NoEvents, ConsoleOutput>,
}

impl SerialDevice {
    /// A UART raising `irq` and writing to `out`.
    pub fn new(irq: EventFd, out: ConsoleOutput) -> Self {
        Self { uart: Serial::new(IrqfdTrigger(irq), out) }
    }

    /// Flushes console output (at the end of a run).
    pub fn flush_console(&mut self) -> io::Result<()> {
        self.uart.writer_mut().flush()
    }

    /// Queues input from the host for the guest; returns how many bytes fit.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = self.uart.fifo_capacity();
        self.uart.enqueue_raw_bytes(&bytes[..bytes.len().min(room)]).map_err(|e| io::Error::other(format!("{e:?}")))
    }
}

impl PioDevice for SerialDevice {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        if let (Ok(offset), [byte]) = (u8::try_from(offset), &mut *data) {
            *byte = self.uart.read(offset);
        } else {
            data.fill(0xff);
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        if let (Ok(offset), [byte]) = (u8::try_from(offset), data) {
            // A console that cannot be written (a closed pipe) must not stop the guest.
            let _ = self.uart.write(offset, *byte);
        }
    }
}

/// A console sink tests can read back while something else writes to it.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Shared(pub(crate) Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (SerialDevice, Shared, Arc<StopSignal>, EventFd) {
        let stop = Arc::new(StopSignal::new().unwrap());
        let sink = Shared::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let device =
            SerialDevice::new(irq.try_clone().unwrap(), ConsoleOutput::new(Box::new(sink.clone()), stop.clone()));
        (device, sink, stop, irq)
    }

    #[test]
    fn bytes_written_to_thr_reach_the_console() {
        let (mut uart, sink, stop, _) = device();
        for b in b"hello\n" {
            uart.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\n");
        assert!(!stop.is_stopping());
    }

    #[test]
    fn a_panic_line_stops_the_vm() {
        let (mut uart, _, stop, _) = device();
        for b in b"[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n" {
            uart.write(0, &[*b]);
        }
        assert!(
            matches!(stop.reason(), Some(StopReason::GuestPanic(line)) if line.ends_with("Unable to mount root fs"))
        );
    }

    #[test]
    fn input_is_readable_and_raises_the_interrupt() {
        let (mut uart, _, _, irq) = device();
        uart.write(1, &[0x01]); // IER: received-data interrupt on
        assert_eq!(uart.enqueue_input(b"x").unwrap(), 1);
        let mut lsr = [0u8];
        uart.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "LSR data-ready bit");
        let mut rbr = [0u8];
        uart.read(0, &mut rbr);
        assert_eq!(rbr, *b"x");
        assert!(irq.read().unwrap() >= 1);
    }
}
