//! What the library says on stderr: every refusal and fallback, with what to do about it,
//! and with MSHARE_VERBOSE=1 every move. A line per event, written in one call, so that the
//! lines of a program's processes do not mix.

use std::io::Write;

/// Writes `mshare-preload[pid]: message` to stderr.
pub(crate) fn say(message: std::fmt::Arguments<'_>) {
    let line = format!("mshare-preload[{}]: {message}\n", std::process::id());
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Says that memory could not move and the call fails.
pub(crate) fn refused(what: std::fmt::Arguments<'_>, error: &crate::region::MoveError) {
    say(format_args!("cannot move {what}: {error}; the call fails (MSHARE_FALLBACK=1 would map it the ordinary way)"));
}

/// Says that memory could not move and stays ordinary (MSHARE_FALLBACK=1).
pub(crate) fn fell_back(what: std::fmt::Arguments<'_>, error: &crate::region::MoveError) {
    say(format_args!("{what} stays ordinary (MSHARE_FALLBACK=1): {error}"));
}
