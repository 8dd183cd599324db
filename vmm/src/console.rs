//! The guest's console on the host: where its output goes (stdout, with a `[name] ` prefix
//! per line for VMs of a fleet, or a file), and the terminal's keys to its UART.

use crate::config::SerialTarget;
use crate::devices::{self, serial::SerialDevice};
use event_manager::{EventOps, Events, MutEventSubscriber};
use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

/// Output sink of a UART for the configured target; on stdout with a `prefix`, each line
/// starts with it.
pub fn console_sink(target: &SerialTarget, prefix: Option<String>) -> io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        SerialTarget::Stdout => match prefix {
            Some(prefix) => Box::new(LinePrefix { prefix, line: Vec::new(), out: io::stdout() }),
            None => Box::new(io::stdout()),
        },
        SerialTarget::File(path) => Box::new(File::create(path)?),
    })
}

/// The prefix of the console's lines on stdout: `[name] ` for a named VM (in a fleet).
pub fn console_prefix(name: Option<&str>) -> Option<String> {
    name.map(|name| format!("[{name}] "))
}

/// The prefix of COM2's lines on stdout, which always has one (the console's lines share
/// stdout): `[name/ttyS1] `, or `[ttyS1] ` for a VM without a name.
pub fn user_port_prefix(name: Option<&str>) -> String {
    match name {
        Some(name) => format!("[{name}/ttyS1] "),
        None => "[ttyS1] ".to_owned(),
    }
}

/// Writes whole lines, each starting with `prefix`, so that the ports of several VMs
/// sharing stdout interleave by line, not by byte: one `write` per line, which a pipe or
/// terminal does not split between writers.
struct LinePrefix<W: Write> {
    prefix: String,
    line: Vec<u8>,
    out: W,
}

impl<W: Write> LinePrefix<W> {
    fn emit(&mut self) -> io::Result<()> {
        let mut whole = Vec::with_capacity(self.prefix.len() + self.line.len());
        whole.extend_from_slice(self.prefix.as_bytes());
        whole.append(&mut self.line);
        self.out.write_all(&whole)
    }
}

impl<W: Write> Write for LinePrefix<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            self.line.push(b);
            if b == b'\n' {
                self.emit()?;
            }
        }
        Ok(buf.len())
    }

    /// Flushes whole lines only: the UART flushes after every byte, and a partial line
    /// written then would be cut in pieces. What is left is written when the console goes.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> Drop for LinePrefix<W> {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.line.push(b'\n');
            let _ = self.emit();
        }
        let _ = self.out.flush();
    }
}

/// Puts a terminal stdin in non-canonical, no-echo mode (keys reach the guest as typed;
/// Ctrl-C still signals the VMM) and restores it when dropped.
pub struct TerminalGuard {
    saved: libc::termios,
}

impl TerminalGuard {
    /// Raw mode on a terminal stdin; `None` when stdin is no terminal or refuses it.
    pub fn new() -> Option<Self> {
        let fd = libc::STDIN_FILENO;
        // SAFETY: isatty only inspects the fd.
        if unsafe { libc::isatty(fd) } != 1 {
            return None;
        }
        // SAFETY: termios is plain data; tcgetattr fills it for a valid tty fd.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO);
        // SAFETY: `raw` is a valid termios derived from the current one.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            log::warn!(
                "console input: cannot switch the terminal to raw mode ({}); keys reach the guest a line at a time",
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(Self { saved })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        // SAFETY: restores the termios read from this fd in `new`.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) } != 0 {
            log::error!(
                "restoring the terminal: {} (run `stty sane` if it stays without echo)",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Host stdin to the guest's UART.
pub struct ConsoleInput {
    serial: Arc<Mutex<SerialDevice>>,
    /// Whether input that did not fit in the UART's FIFO was reported (once per VM).
    warned: bool,
}

impl MutEventSubscriber for ConsoleInput {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        // SAFETY: reading into a local buffer from stdin, which this subscriber watches.
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            // EOF or error: stop watching stdin, the guest keeps running.
            let _ = ops.remove(events);
            return;
        }
        let typed = &buf[..n as usize];
        let taken = devices::lock(&self.serial).enqueue_input(typed).unwrap_or(0);
        if taken < typed.len() {
            // The guest is not reading its UART (its 64-byte FIFO is full): say so, once.
            if !self.warned {
                self.warned = true;
                log::warn!("console input: the guest's UART FIFO is full; dropping what does not fit");
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(event_manager::Events::new_raw(libc::STDIN_FILENO, event_manager::EventSet::IN));
    }
}

impl ConsoleInput {
    /// Feeds the terminal's keys to `serial`.
    pub fn new(serial: Arc<Mutex<SerialDevice>>) -> Self {
        Self { serial, warned: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_console_writes_whole_lines() {
        let sink = crate::devices::serial::Shared::default();
        let text = || String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let mut console = LinePrefix { prefix: "[a] ".into(), line: Vec::new(), out: sink.clone() };
        // The UART flushes after every byte.
        for b in b"hello\nwor" {
            console.write_all(&[*b]).unwrap();
            console.flush().unwrap();
        }
        assert_eq!(text(), "[a] hello\n", "a partial line waits for its end");
        drop(console);
        assert_eq!(text(), "[a] hello\n[a] wor\n", "what is left is written at the end");
    }
}
