//! Where `make images` put the guest kernels and the initramfs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors finding the images.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    /// `make -s image-paths` could not be run or failed.
    #[error("`make -s image-paths` in {dir}: {reason}")]
    Make {
        /// Repository root.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A path is known but the file is not there.
    #[error("{key}={} does not exist: run `make images` first", path.display())]
    Missing {
        /// The KEY of the missing path.
        key: String,
        /// The path.
        path: PathBuf,
    },
    /// `make -s image-paths` did not print that key.
    #[error("`make -s image-paths` printed no {0}=")]
    NoKey(String),
}

/// The `export KEY=PATH` lines of `make -s image-paths`.
#[derive(Debug, Clone)]
pub struct ImagePaths {
    paths: HashMap<String, PathBuf>,
}

/// The repository root (this crate lives one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Writes a benchmark's report as `target/bench/STEM.md` and its figures as
/// `target/bench/STEM.json` (what `bench-report` gathers), then prints the report. A file
/// that cannot be written ends the benchmark with the path and the reason.
pub fn write_bench_report(stem: &str, report: &str, json: &serde_json::Value) {
    let out = repo_root().join("target").join("bench");
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    let write = |name: String, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    };
    write(format!("{stem}.md"), report.to_owned());
    write(format!("{stem}.json"), serde_json::to_string_pretty(json).unwrap_or_default() + "\n");
    println!("{report}");
}

impl ImagePaths {
    /// Takes each path from the environment variable of the same name where set (as
    /// `make test` does), else from `make -s image-paths`.
    pub fn discover() -> Result<Self, ImagesError> {
        let dir = repo_root();
        let out = Command::new("make")
            .args(["-s", "--no-print-directory", "image-paths"])
            .current_dir(&dir)
            .output()
            .map_err(|e| ImagesError::Make { dir: dir.clone(), reason: e.to_string() })?;
        if !out.status.success() {
            let reason = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(ImagesError::Make { dir, reason });
        }
        let mut paths = Self::parse(&String::from_utf8_lossy(&out.stdout)).paths;
        for (key, path) in paths.iter_mut() {
            if let Some(value) = std::env::var_os(key) {
                *path = PathBuf::from(value);
            }
        }
        Ok(Self { paths })
    }

    /// Parses `export KEY=PATH` (or `KEY=PATH`) lines; other lines are ignored.
    pub fn parse(text: &str) -> Self {
        let paths = text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("export ").unwrap_or(l).split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), PathBuf::from(v.trim())))
            .collect();
        Self { paths }
    }

    /// The path under `key`, which must exist.
    pub fn get(&self, key: &str) -> Result<&Path, ImagesError> {
        let path = self.paths.get(key).ok_or_else(|| ImagesError::NoKey(key.to_owned()))?;
        if !path.exists() {
            return Err(ImagesError::Missing { key: key.to_owned(), path: path.clone() });
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_path_lines() {
        let paths = ImagePaths::parse("export VMLINUX=/\nnoise\nKDIR = /nonexistent/kdir\n");
        assert_eq!(paths.get("VMLINUX").unwrap(), Path::new("/"));
        let missing = paths.get("KDIR").unwrap_err().to_string();
        assert_eq!(missing, "KDIR=/nonexistent/kdir does not exist: run `make images` first");
        assert_eq!(paths.get("BZIMAGE").unwrap_err().to_string(), "`make -s image-paths` printed no BZIMAGE=");
    }
}
