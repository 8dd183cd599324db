//! The process's settings, read once from its environment (mshare_uapi::preload).

use crate::region::MoveError;
use mshare_uapi::preload::{BadSetting, Settings};
use std::sync::OnceLock;

static SETTINGS: OnceLock<Result<Settings, BadSetting>> = OnceLock::new();

/// The settings, or why the environment gives none (reported once by the caller).
pub(crate) fn get() -> &'static Result<Settings, BadSetting> {
    SETTINGS.get_or_init(Settings::from_env)
}

/// Whether `len` bytes of shared memory are to move. A bad environment moves nothing;
/// callers that need the settings then say why.
pub(crate) fn moves(len: usize) -> bool {
    match get() {
        Ok(settings) => len as u64 >= settings.threshold,
        Err(_) => len as u64 >= mshare_uapi::preload::DEFAULT_THRESHOLD,
    }
}

/// The settings, for a call about to move memory.
pub(crate) fn for_move() -> Result<&'static Settings, MoveError> {
    get().as_ref().map_err(MoveError::Settings)
}

/// Whether a call whose memory could not move falls back to ordinary memory.
pub(crate) fn falls_back() -> bool {
    get().as_ref().is_ok_and(|s| s.fallback)
}

/// Whether each move is reported.
pub(crate) fn verbose() -> bool {
    get().as_ref().is_ok_and(|s| s.verbose)
}
