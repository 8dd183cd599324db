//! A minimal stderr logger: `mshare-vmm: message`, warnings and errors marked.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = match record.level() {
            Level::Error => format!("mshare-vmm: error: {}\n", record.args()),
            Level::Warn => format!("mshare-vmm: warning: {}\n", record.args()),
            _ => format!("mshare-vmm: {}\n", record.args()),
        };
        // One write per line: the VM processes of a fleet share stderr, and a line written
        // in pieces would interleave with theirs.
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Installs the logger at `level` (once; later calls only change the level).
pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
