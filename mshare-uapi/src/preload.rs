//! The settings of the preload library (guest-preload, `libmshare_preload.so`), which moves
//! an unmodified program's large shared memory onto msharefs regions, and of its launcher
//! (`mshare run`): one definition of the environment both speak. The launcher writes it,
//! the library reads it in every process of the program (children inherit it, as they
//! inherit the mappings).

use crate::formats::parse_size;
use std::fmt;

/// Where guest images install the library.
pub const LIBRARY_PATH: &str = "/usr/lib/mshare/libmshare_preload.so";

/// `B` or `C`: the mode the program must run in; the library refuses to move memory when
/// the module is in the other one. Unset: whatever the module's mode is.
pub const ENV_MODE: &str = "MSHARE_MODE";
/// Shared memory of at least this many bytes moves (binary K/M/G suffixes).
pub const ENV_THRESHOLD: &str = "MSHARE_THRESHOLD";
/// What the names of the regions made for shared anonymous mappings start with.
pub const ENV_NAME: &str = "MSHARE_NAME";
/// `1`: when memory cannot move (no msharefs, a mode that does not match, a region that
/// cannot be made), map it the ordinary way after saying why, instead of failing the call.
pub const ENV_FALLBACK: &str = "MSHARE_FALLBACK";
/// `1`: say on stderr what moved where.
pub const ENV_VERBOSE: &str = "MSHARE_VERBOSE";

/// What moves when nothing says: a granule, the least a region holds.
pub const DEFAULT_THRESHOLD: u64 = 2 << 20;
/// Region names when nothing says.
pub const DEFAULT_NAME: &str = "anon";

/// The module's mode a program asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Page tables shared between the processes that map a region.
    B,
    /// A huge mapping per process, no shared tables.
    C,
}

impl Mode {
    /// `B` or `C` (also lower case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "B" | "b" => Some(Self::B),
            "C" | "c" => Some(Self::C),
            _ => None,
        }
    }
}

impl Mode {
    /// The value of mshare.ko's `shared_tables` parameter that loads it in this mode.
    pub fn shared_tables(self) -> u8 {
        u8::from(self == Self::B)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::B => "B",
            Self::C => "C",
        })
    }
}

/// The library's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The mode required, if any.
    pub mode: Option<Mode>,
    /// Bytes from which shared memory moves.
    pub threshold: u64,
    /// Prefix of the regions' names.
    pub name: String,
    /// Map the ordinary way when memory cannot move.
    pub fallback: bool,
    /// Report each move.
    pub verbose: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: None,
            threshold: DEFAULT_THRESHOLD,
            name: DEFAULT_NAME.to_owned(),
            fallback: false,
            verbose: false,
        }
    }
}

/// A setting the environment gives that means nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSetting {
    /// The variable.
    pub variable: &'static str,
    /// Its value.
    pub value: String,
    /// What it may be.
    pub expected: &'static str,
}

impl fmt::Display for BadSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}: expected {}", self.variable, self.value, self.expected)
    }
}

impl std::error::Error for BadSetting {}

impl Settings {
    /// The settings `lookup` (an environment) gives; unset variables take their defaults.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, BadSetting> {
        let mut settings = Self::default();
        let bad = |variable, value: String, expected| BadSetting { variable, value, expected };
        if let Some(value) = lookup(ENV_MODE).filter(|v| !v.is_empty()) {
            settings.mode = Some(Mode::parse(&value).ok_or_else(|| bad(ENV_MODE, value, "B or C"))?);
        }
        if let Some(value) = lookup(ENV_THRESHOLD).filter(|v| !v.is_empty()) {
            settings.threshold = parse_size(&value)
                .filter(|&t| t > 0)
                .ok_or_else(|| bad(ENV_THRESHOLD, value, "a size above 0 (4096, 2M, 1G)"))?;
        }
        if let Some(value) = lookup(ENV_NAME).filter(|v| !v.is_empty()) {
            if value.contains('/') || value.starts_with('.') || value.len() > 200 {
                return Err(bad(ENV_NAME, value, "a file name (no '/', no leading '.', at most 200 bytes)"));
            }
            settings.name = value;
        }
        settings.fallback = flag(&lookup, ENV_FALLBACK)?;
        settings.verbose = flag(&lookup, ENV_VERBOSE)?;
        Ok(settings)
    }

    /// The settings of this process's environment.
    pub fn from_env() -> Result<Self, BadSetting> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The environment that gives these settings (what `mshare run` sets).
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            (ENV_THRESHOLD, self.threshold.to_string()),
            (ENV_NAME, self.name.clone()),
            (ENV_FALLBACK, u8::from(self.fallback).to_string()),
            (ENV_VERBOSE, u8::from(self.verbose).to_string()),
        ];
        if let Some(mode) = self.mode {
            env.push((ENV_MODE, mode.to_string()));
        }
        env
    }
}

fn flag(lookup: &impl Fn(&str) -> Option<String>, variable: &'static str) -> Result<bool, BadSetting> {
    match lookup(variable).as_deref() {
        None | Some("" | "0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => Err(BadSetting { variable, value: other.to_owned(), expected: "0 or 1" }),
    }
}

/// The region that stands for System V segment `shmid` (every process that attaches the
/// segment by its id finds the region by this name).
pub fn sysv_region_name(shmid: i32) -> String {
    format!("sysv-{shmid}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Settings, BadSetting> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn the_image_installs_the_library_where_mshare_run_loads_it() {
        let script = include_str!("../../images/scripts/postgres.sh");
        assert!(script.lines().any(|l| l == format!("PRELOAD_LIBRARY={LIBRARY_PATH}")), "images/scripts/postgres.sh");
    }

    #[test]
    fn unset_is_the_defaults() {
        assert_eq!(from(&[]), Ok(Settings::default()));
    }

    #[test]
    fn settings_round_trip_through_the_environment() {
        let settings =
            Settings { mode: Some(Mode::C), threshold: 64 << 20, name: "pg".into(), fallback: true, verbose: true };
        let env: Vec<(String, String)> = settings.to_env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(from(&pairs), Ok(settings));
    }

    #[test]
    fn bad_values_name_the_variable() {
        assert_eq!(from(&[(ENV_MODE, "D")]).map_err(|e| e.variable), Err(ENV_MODE));
        assert_eq!(from(&[(ENV_THRESHOLD, "0")]).map_err(|e| e.variable), Err(ENV_THRESHOLD));
        assert_eq!(from(&[(ENV_THRESHOLD, "lots")]).map_err(|e| e.variable), Err(ENV_THRESHOLD));
        assert_eq!(from(&[(ENV_NAME, "a/b")]).map_err(|e| e.variable), Err(ENV_NAME));
        assert_eq!(from(&[(ENV_FALLBACK, "yes")]).map_err(|e| e.variable), Err(ENV_FALLBACK));
        assert_eq!(
            from(&[(ENV_MODE, "b"), (ENV_THRESHOLD, "1G")]).map(|s| (s.mode, s.threshold)),
            Ok((Some(Mode::B), 1 << 30))
        );
    }
}
