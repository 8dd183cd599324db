//! A VM's configuration, validated before anything starts.

use crate::boot::mptable::MAX_CPUS;
use crate::host::SoftwareHypervisor;
use crate::regions::{Attachment, RegionSpec};
use std::path::PathBuf;
use std::time::Duration;

/// Where the serial console goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SerialTarget {
    /// The VMM's stdout (and stdin feeds the guest).
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
}

impl std::str::FromStr for SerialTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(Self::Stdout),
            "" => Err("empty --serial: give stdout or a file path".to_owned()),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

/// One VM. Serializable, so that a fleet hands each VM process its whole configuration.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VmConfig {
    /// The VM's name in a fleet (prefixes its console lines on stdout).
    pub name: Option<String>,
    /// ELF vmlinux or bzImage.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: Option<PathBuf>,
    /// Extra kernel command-line words.
    pub cmdline: Option<String>,
    /// vCPUs.
    pub cpus: u8,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// Console destination.
    pub serial: SerialTarget,
    /// COM2 (the guest's ttyS1) and where its output goes; `None`: no second UART. The
    /// guest image's `/init` writes its command's output and result line there, a port
    /// the kernel never prints on.
    #[serde(default)]
    pub serial2: Option<SerialTarget>,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
    /// Guest command for /init (after `--`).
    pub command: Vec<String>,
    /// Software-hypervisor handling.
    pub software_hypervisor: SoftwareHypervisor,
    /// System.map for messages (default: beside the kernel).
    pub system_map: Option<PathBuf>,
    /// Shared regions this VM attaches (each becomes an ivshmem device).
    pub regions: Vec<(RegionSpec, Attachment)>,
    /// In-kernel interrupt controller and PIT. Always on for Linux; tiny test guests turn it
    /// off so that HLT exits to the VMM.
    pub irqchip: bool,
}

/// Errors in a configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("size '{0}': expected a number with an optional K, M or G suffix (e.g. 512M)")]
    BadSize(String),
    #[error("--memory {0}: {1}")]
    Memory(String, String),
    #[error("--cpus {0}: expected 1 to {MAX_CPUS}")]
    Cpus(u32),
    #[error("{what} {}: no such file (check the path; `make -s image-paths` prints the built images)", path.display())]
    Missing {
        /// Which option.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
}

/// Parses `512M`, `1G`, `65536`, `4k`: bytes, with binary K/M/G suffixes
/// (`mshare_uapi::formats::parse_size`, the one definition host and guest share).
pub fn parse_size(text: &str) -> Result<u64, ConfigError> {
    mshare_uapi::formats::parse_size(text).ok_or_else(|| ConfigError::BadSize(text.to_owned()))
}

impl VmConfig {
    /// A VM booting `kernel` with the defaults: 1 vCPU, 512 MiB, console on stdout.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            name: None,
            kernel: kernel.into(),
            initrd: None,
            cmdline: None,
            cpus: 1,
            memory: 512 << 20,
            serial: SerialTarget::Stdout,
            serial2: None,
            timeout: None,
            command: Vec::new(),
            software_hypervisor: SoftwareHypervisor::Auto,
            system_map: None,
            regions: Vec::new(),
            irqchip: true,
        }
    }

    /// Checks what can be checked before any resource is taken.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(ConfigError::Cpus(u32::from(self.cpus)));
        }
        crate::memory::ram_ranges(self.memory)
            .map_err(|e| ConfigError::Memory(self.memory.to_string(), e.to_string()))?;
        let files = [
            ("kernel", Some(&self.kernel)),
            ("initrd", self.initrd.as_ref()),
            ("System.map", self.system_map.as_ref()),
        ];
        for (what, path) in files {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(ConfigError::Missing { what, path: path.clone() });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("1.5G"), Err(ConfigError::BadSize("1.5G".into())));
        assert_eq!(parse_size("M"), Err(ConfigError::BadSize("M".into())));
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let mut config = VmConfig::new("/proc/self/exe");
        assert_eq!(config.validate(), Ok(()));
        config.cpus = 0;
        assert_eq!(config.validate().unwrap_err().to_string(), "--cpus 0: expected 1 to 32");
        config.cpus = 2;
        config.memory = 1 << 20;
        assert!(config.validate().unwrap_err().to_string().contains("too small"));
        config.memory = 64 << 20;
        config.initrd = Some("/nonexistent/initramfs.cpio".into());
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("initrd /nonexistent/initramfs.cpio: no such file"));
    }

    #[test]
    fn serial_target() {
        assert_eq!("stdout".parse::<SerialTarget>(), Ok(SerialTarget::Stdout));
        assert_eq!("/tmp/console".parse::<SerialTarget>(), Ok(SerialTarget::File("/tmp/console".into())));
        assert!("".parse::<SerialTarget>().is_err());
    }
}
