//! The 16550 UARTs, from vm-superio, each interrupt through an irqfd: COM1 (0x3f8, IRQ 4),
//! the kernel's console, and optionally COM2 (0x2f8, IRQ 3), a port only the guest's user
//! space writes (its `/init` puts the command's output and result line there, so that no
//! kernel message can split a line a reader parses).
//!
//! Output goes to stdout or a file. The VMM also reads the console as it passes: a guest
//! kernel panic is reported as a failure even though the guest then resets the machine.

use crate::devices::PioDevice;
use crate::stop::{StopReason, StopSignal};
use std::io::{self, Write};
use std::sync::Arc;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// Where a UART sits: its base port and ISA interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UartPort {
    /// First of its [`UART_PORTS`] ports.
    pub base: u16,
    /// Its ISA interrupt (an IOAPIC pin of the same number).
    pub irq: u32,
}

/// COM1: the guest's ttyS0, the kernel's console.
pub const COM1: UartPort = UartPort { base: 0x3f8, irq: 4 };
/// COM2: the guest's ttyS1, for its user space's output.
pub const COM2: UartPort = UartPort { base: 0x2f8, irq: 3 };
/// Ports of one UART.
pub const UART_PORTS: u16 = 8;
/// The kernel command-line word that tells the guest image's `/init` to write its
/// command's output and result line on COM2 (the VMM adds it when COM2 is configured).
pub const USER_PORT_WORD: &str = "mshare_out=ttyS1";

const PANIC_MARKER: &str = "Kernel panic - not syncing";

/// Raises the UART's interrupt by writing the irqfd registered for its IRQ.
pub struct IrqfdTrigger(pub EventFd);

impl Trigger for IrqfdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where a UART's bytes go; on the console, watching for a kernel panic line on the way.
pub struct ConsoleOutput {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
    /// Stopped by a panic line; `None` for a port the kernel does not print on, where a
    /// program's text must not end the VM.
    stop: Option<Arc<StopSignal>>,
}

impl ConsoleOutput {
    /// Console bytes to `out`; a panic line stops the VM through `stop`.
    pub fn new(out: Box<dyn Write + Send>, stop: Arc<StopSignal>) -> Self {
        Self { out, line: Vec::new(), stop: Some(stop) }
    }

    /// Bytes of a port user space writes (COM2) to `out`, unread.
    pub fn unwatched(out: Box<dyn Write + Send>) -> Self {
        Self { out, line: Vec::new(), stop: None }
    }

    fn watch(&mut self, bytes: &[u8]) {
        let Some(stop) = &self.stop else { return };
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.line);
                if line.contains(PANIC_MARKER) {
                    stop.stop(StopReason::GuestPanic(line.trim_end().to_owned()));
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
    fn a_panic_line_on_the_user_port_is_only_text() {
        let sink = Shared::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut uart = SerialDevice::new(irq, ConsoleOutput::unwatched(Box::new(sink.clone())));
        let line = b"echo Kernel panic - not syncing\n";
        for b in line {
            uart.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), line);
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
