//! What kind of KVM this host has. On hosts whose /dev/kvm is a software hypervisor
//! (kvm_pvm: guest kernel code emulated one instruction at a time), the guest must be told
//! on its command line to avoid what the emulator lacks (see `boot::cmdline`).

use std::path::Path;

/// Whether to treat the host as a software hypervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum SoftwareHypervisor {
    /// Detect it (the default).
    #[default]
    Auto,
    /// Assume it.
    Yes,
    /// Assume hardware virtualization.
    No,
}

impl std::str::FromStr for SoftwareHypervisor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "yes" => Ok(Self::Yes),
            "no" => Ok(Self::No),
            other => Err(format!("'{other}': expected auto, yes or no")),
        }
    }
}

/// The module whose presence marks a software hypervisor.
const KVM_PVM_MODULE: &str = "/sys/module/kvm_pvm";

/// Whether this host's KVM is kvm_pvm.
pub fn detect_software_hypervisor() -> bool {
    Path::new(KVM_PVM_MODULE).exists()
}

impl SoftwareHypervisor {
    /// Resolves `Auto` by looking at the host.
    pub fn resolve(self) -> bool {
        match self {
            Self::Auto => detect_software_hypervisor(),
            Self::Yes => true,
            Self::No => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_overrides() {
        assert_eq!("yes".parse::<SoftwareHypervisor>().unwrap(), SoftwareHypervisor::Yes);
        assert!("maybe".parse::<SoftwareHypervisor>().unwrap_err().contains("auto, yes or no"));
        assert!(SoftwareHypervisor::Yes.resolve());
        assert!(!SoftwareHypervisor::No.resolve());
        assert_eq!(SoftwareHypervisor::Auto.resolve(), Path::new(KVM_PVM_MODULE).exists());
    }
}
