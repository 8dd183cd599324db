//! A fleet with a process per VM: the regions made here and handed down as inherited
//! descriptors, each VM process given its whole configuration as JSON (`mshare-vmm
//! run-config`), so that a VM process that dies takes nothing else with it.

use super::{wait_for_signal, Fleet};
use crate::config::VmConfig;
use crate::error::io_err;
use crate::regions::{Backing, RegionSpec};
use crate::signals::SignalFd;
use crate::vm::map_regions;
use crate::vmm::VmmError;
use std::path::{Path, PathBuf};

/// How one VM process of a `--process-per-vm` fleet ended.
#[derive(Debug)]
pub struct VmProcess {
    /// The VM's name.
    pub name: String,
    /// The process's exit status (`None` when a signal ended it).
    pub status: Option<i32>,
    /// The report it wrote (its `--stats-json`), if any.
    pub stats: Option<crate::report::Report>,
}

/// One fleet VM's configuration for its own process: the same, with each region's backing
/// replaced by the descriptor it inherits (`regions`: name and descriptor).
fn process_config(config: &VmConfig, regions: &[(String, i32)]) -> VmConfig {
    let mut config = config.clone();
    for (spec, _) in &mut config.regions {
        let fd = regions.iter().find(|(name, _)| *name == spec.name).map_or(-1, |(_, fd)| *fd);
        *spec = RegionSpec { backing: Backing::InheritedFd(fd), ..spec.clone() };
    }
    config
}

/// The report a VM process wrote, if it wrote one that reads (why not is logged).
fn read_report(name: &str, path: &Path) -> Option<crate::report::Report> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| log::error!("vm '{name}': its report {}: {e}", path.display()))
        .ok()?;
    serde_json::from_str(&text).map_err(|e| log::error!("vm '{name}': its report {}: {e}", path.display())).ok()
}

/// Writes `config` where the VM process will read it (`mshare-vmm run-config`).
fn write_config(config: &VmConfig, path: &Path) -> Result<(), VmmError> {
    let what =
        || format!("writing the configuration of vm '{}' to {}", config.name.as_deref().unwrap_or(""), path.display());
    let json = serde_json::to_string_pretty(config)
        .map_err(|e| VmmError::Io { what: what(), source: std::io::Error::other(e) })?;
    std::fs::write(path, json).map_err(io_err(what()))
}

/// Launches every VM of `fleet` in a process of its own (this binary's `run`), the regions
/// created here and handed down as inherited descriptors, so that a crashing or killed VM
/// process takes nothing else with it. SIGINT and SIGTERM are passed on to every VM process.
pub fn launch_process_per_vm(fleet: &Fleet, scratch: &Path) -> Result<Vec<VmProcess>, VmmError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| VmmError::Io { what: what.clone(), source }
    };
    let shared = map_regions(&fleet.regions)?;
    let mut fds = Vec::new();
    for region in &shared {
        let fd = region.backing_fd().ok_or_else(|| VmmError::NoDescriptor(region.spec.name.clone()))?;
        // SAFETY: clears close-on-exec on a descriptor this process owns (the region's).
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return Err(VmmError::Io { what: "fcntl(F_SETFD)".into(), source: std::io::Error::last_os_error() });
        }
        fds.push((region.spec.name.clone(), fd));
    }
    let exe = std::env::current_exe().map_err(io("finding this executable"))?;
    let signals = SignalFd::new().map_err(io_err("signalfd"))?;
    let mut children: Vec<(String, std::process::Child, PathBuf)> = Vec::new();
    for config in &fleet.vms {
        let name = config.name.clone().unwrap_or_default();
        let stats = scratch.join(format!("{name}.json"));
        let config_file = scratch.join(format!("{name}.config.json"));
        let spawned = write_config(&process_config(config, &fds), &config_file).and_then(|()| {
            std::process::Command::new(&exe)
                .arg("run-config")
                .arg(&config_file)
                .arg("--stats-json")
                .arg(&stats)
                .stdin(std::process::Stdio::null())
                .spawn()
                .map_err(io_err(format!("starting the process of vm '{name}'")))
        });
        let child = match spawned {
            Ok(child) => child,
            Err(error) => {
                // Nothing of the fleet is left running behind the error.
                let started = children.len();
                for (_, child, _) in &mut children {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(match error {
                    VmmError::Io { what, source } => VmmError::Io {
                        what: format!("{what} (the {started} VM processes started before it were stopped)"),
                        source,
                    },
                    other => other,
                });
            }
        };
        log::info!("vm '{name}': process {}", child.id());
        children.push((name, child, stats));
    }
    let mut statuses: Vec<Option<Option<i32>>> = vec![None; children.len()];
    while statuses.iter().any(Option::is_none) {
        for (i, (_, child, _)) in children.iter_mut().enumerate() {
            if statuses[i].is_none() {
                if let Ok(Some(status)) = child.try_wait() {
                    statuses[i] = Some(status.code());
                }
            }
        }
        if let Some(signo) = wait_for_signal(&signals, 50) {
            log::info!("signal {signo}: passing it to every VM process");
            for ((_, child, _), status) in children.iter().zip(&statuses) {
                // A reaped child's pid may belong to another process by now.
                if status.is_none() {
                    // SAFETY: signalling our own child, not yet reaped.
                    unsafe { libc::kill(child.id() as i32, signo) };
                }
            }
        }
    }
    Ok(children
        .into_iter()
        .zip(statuses)
        .map(|((name, _, stats), status)| VmProcess {
            stats: read_report(&name, &stats),
            name,
            status: status.flatten(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::SoftwareHypervisor;
    use crate::regions::Attachment;

    /// What the command-line rebuild used to drop (software_hypervisor, system_map, the
    /// irqchip setting) reaches the VM process, and only the backing changes.
    #[test]
    fn a_vm_process_gets_its_whole_configuration() {
        let mut config = VmConfig::new("/boot/vmlinux");
        config.name = Some("a".into());
        config.software_hypervisor = SoftwareHypervisor::No;
        config.system_map = Some("/boot/System.map".into());
        config.irqchip = false;
        config.command = vec!["sh".into(), "-c".into(), "exit 3".into()];
        let spec = RegionSpec { name: "db".into(), size: 1 << 21, backing: Backing::Memfd, stage2: Default::default() };
        config.regions = vec![(spec, Attachment { region: "db".into(), read_only: true })];
        let json = serde_json::to_string(&process_config(&config, &[("db".into(), 7)])).unwrap();
        let child: VmConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(child.software_hypervisor, SoftwareHypervisor::No);
        assert_eq!(child.system_map, config.system_map);
        assert!(!child.irqchip);
        assert_eq!((child.name, child.command, child.kernel), (config.name, config.command, config.kernel));
        assert_eq!(child.regions[0].0.backing, Backing::InheritedFd(7));
        assert_eq!(child.regions[0].1, config.regions[0].1);
    }
}
