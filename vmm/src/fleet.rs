//! Fleets: one TOML file describing shared regions and the VMs that attach them, launched
//! together. All VMs run in this process; each region is mapped once and that one mapping
//! is the memslot of its ivshmem BAR2 in every VM that attaches it, so host page tables and
//! data exist once whatever the number of VMs.
//!
//! ```toml
//! [[region]]
//! name = "db"
//! size = "64M"
//! backing = "memfd"        # memfd (default), hugetlbfs (page_size = "2M" or "1G"), path
//! # path = "/dev/shm/db"   # with backing = "path": any mmap-able file; contents outlive the VMs
//!
//! [[vm]]
//! name = "writer"
//! kernel = "${VMLINUX}"    # ${VAR} is taken from the environment; relative paths from the file's directory
//! initrd = "${INITRAMFS}"
//! cmdline = "loglevel=4"
//! cpus = 1
//! memory = "256M"
//! timeout = 600            # seconds
//! serial = "stdout"        # or a file path; on stdout lines start with [name]
//! command = ["sh", "-c", "..."]
//! regions = [{ name = "db", access = "rw" }]   # access: rw (default) or ro
//! ```
//!
//! Everything is checked before anything starts; each problem is one line naming the file,
//! the entry and the fix.

use crate::config::{parse_size, SerialTarget, VmConfig};
use crate::error::io_err;
use crate::outcome::Outcome;
use crate::regions::{backing_from, Attachment, Backing, RegionSpec};
use crate::signals::{read_signal, signal_fd, unblock_signals};
use crate::stop::StopSignal;
use crate::vm::map_regions;
use crate::vmm::{self, VmmError};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A fleet file problem: one line, with the file and the entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}: {entry}{problem}")]
pub struct FleetError {
    file: String,
    entry: String,
    problem: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    #[serde(default)]
    region: Vec<RegionEntry>,
    #[serde(default)]
    vm: Vec<VmEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionEntry {
    name: String,
    size: String,
    backing: Option<String>,
    page_size: Option<String>,
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmEntry {
    name: String,
    kernel: String,
    initrd: Option<String>,
    cmdline: Option<String>,
    #[serde(default = "one")]
    cpus: u8,
    memory: Option<String>,
    timeout: Option<u64>,
    serial: Option<String>,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    regions: Vec<AttachEntry>,
}

fn one() -> u8 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachEntry {
    name: String,
    #[serde(default)]
    access: Access,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Access {
    #[default]
    Rw,
    Ro,
}

/// A validated fleet.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The file it came from.
    pub file: PathBuf,
    /// Regions, mapped once each.
    pub regions: Vec<RegionSpec>,
    /// VMs, each with its attachments in `regions`.
    pub vms: Vec<VmConfig>,
}

/// Expands `${VAR}` from the environment; `Err(VAR)` if one is unset.
fn expand(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unclosed '${{' in '{text}'"))?;
        let var = &after[..end];
        out.push_str(&std::env::var(var).map_err(|_| format!("environment variable {var} is not set (used in '{text}'); set it, e.g. eval \"$(make -s image-paths)\""))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Fleet {
    /// Reads and validates a fleet file.
    pub fn load(path: &Path) -> Result<Self, FleetError> {
        let text = std::fs::read_to_string(path).map_err(|e| FleetError {
            file: path.display().to_string(),
            entry: String::new(),
            problem: format!("cannot read it: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Validates fleet `text` as read from `path` (relative paths are taken from its directory).
    pub fn parse(path: &Path, text: &str) -> Result<Self, FleetError> {
        let file = path.display().to_string();
        let fail = |entry: String, problem: String| FleetError { file: file.clone(), entry, problem };
        let parsed: FleetFile = toml::from_str(text).map_err(|e| {
            let at =
                e.span().map(|s| format!("line {}: ", text[..s.start].matches('\n').count() + 1)).unwrap_or_default();
            fail(at, e.message().to_owned())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |entry: &str, raw: &str| -> Result<PathBuf, FleetError> {
            let expanded = expand(raw).map_err(|e| fail(entry.to_owned(), e))?;
            let p = PathBuf::from(expanded);
            Ok(if p.is_relative() { base.join(p) } else { p })
        };

        let mut regions = Vec::new();
        let mut names = HashSet::new();
        for r in &parsed.region {
            let entry = format!("region '{}': ", r.name);
            if !names.insert(r.name.clone()) {
                return Err(fail(entry, "defined twice; give each [[region]] its own name".into()));
            }
            let size = parse_size(&r.size).map_err(|e| fail(entry.clone(), e.to_string()))?;
            let page_size =
                r.page_size.as_deref().map(parse_size).transpose().map_err(|e| fail(entry.clone(), e.to_string()))?;
            let path = r.path.as_deref().map(|p| resolve(&entry, p)).transpose()?;
            let backing = backing_from(r.backing.as_deref(), page_size, path).map_err(|e| fail(entry.clone(), e))?;
            let spec = RegionSpec { name: r.name.clone(), size, backing };
            spec.validate().map_err(|e| fail(String::new(), e.to_string()))?;
            regions.push(spec);
        }
        if parsed.vm.is_empty() {
            return Err(fail(String::new(), "no [[vm]]: a fleet needs at least one VM".into()));
        }

        let mut vms = Vec::new();
        let mut vm_names = HashSet::new();
        for v in &parsed.vm {
            let entry = format!("vm '{}': ", v.name);
            if !vm_names.insert(v.name.clone()) {
                return Err(fail(entry, "defined twice; give each [[vm]] its own name".into()));
            }
            let mut config = VmConfig::new(resolve(&entry, &v.kernel)?);
            config.name = Some(v.name.clone());
            config.initrd = v.initrd.as_deref().map(|p| resolve(&entry, p)).transpose()?;
            config.cmdline = v.cmdline.clone();
            config.cpus = v.cpus;
            if let Some(memory) = &v.memory {
                config.memory = parse_size(memory).map_err(|e| fail(entry.clone(), e.to_string()))?;
            }
            config.timeout = v.timeout.map(Duration::from_secs);
            config.command = v.command.clone();
            if let Some(serial) = &v.serial {
                config.serial = match serial.as_str() {
                    "stdout" => SerialTarget::Stdout,
                    other => SerialTarget::File(resolve(&entry, other)?),
                };
            }
            let mut attached = HashSet::new();
            for a in &v.regions {
                let Some(spec) = regions.iter().find(|r| r.name == a.name) else {
                    let known: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
                    return Err(fail(
                        entry,
                        format!(
                            "attaches region '{}', which no [[region]] defines (defined: {})",
                            a.name,
                            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                        ),
                    ));
                };
                if !attached.insert(a.name.clone()) {
                    return Err(fail(entry, format!("attaches region '{}' twice", a.name)));
                }
                config
                    .regions
                    .push((spec.clone(), Attachment { region: a.name.clone(), read_only: a.access == Access::Ro }));
            }
            config.validate().map_err(|e| fail(entry.clone(), e.to_string()))?;
            vms.push(config);
        }
        Ok(Self { file: path.to_path_buf(), regions, vms })
    }
}

/// Waits up to `millis` for a signal on the launcher's signalfd.
fn wait_for_signal(signals: &std::os::fd::OwnedFd, millis: i32) -> Option<i32> {
    let mut poll = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(signals), events: libc::POLLIN, revents: 0 };
    // SAFETY: polls one valid fd for a bounded time.
    let ready = unsafe { libc::poll(&mut poll, 1, millis) };
    if ready > 0 {
        read_signal(signals)
    } else {
        None
    }
}

/// How one VM of a fleet ended: its name and its outcome (or why it could not start).
pub type VmResult = (String, Result<Outcome, VmmError>);

/// How a fleet ended.
#[derive(Debug)]
pub struct FleetOutcome {
    /// Each VM's name and outcome, in file order.
    pub vms: Vec<VmResult>,
    /// The process's smaps_rollup (KiB) after every VM stopped, regions still mapped: the
    /// VMM's own memory plus one copy of each region, whatever the number of VMs.
    pub host_memory_after: std::collections::BTreeMap<String, u64>,
}

/// Launches every VM of `fleet` in this process and waits for all of them. SIGINT and
/// SIGTERM stop them all.
pub fn launch(fleet: &Fleet) -> Result<FleetOutcome, VmmError> {
    let shared = map_regions(&fleet.regions)?;
    // Blocked here, inherited by every VM and vCPU thread: only this thread sees them.
    let signals = signal_fd().map_err(io_err("signalfd"))?;
    let stops: Vec<Arc<StopSignal>> = fleet
        .vms
        .iter()
        .map(|_| StopSignal::new().map(Arc::new))
        .collect::<Result<_, _>>()
        .map_err(|source| VmmError::Io { what: "eventfd".into(), source })?;
    let mut threads = Vec::new();
    for (config, stop) in fleet.vms.iter().zip(&stops) {
        let (config, shared, stop) = (config.clone(), shared.clone(), stop.clone());
        let name = config.name.clone().unwrap_or_default();
        let handle = std::thread::Builder::new()
            .name(format!("vm-{name}"))
            .spawn(move || vmm::run_with_regions(&config, &shared, stop, false))
            .map_err(|source| VmmError::Io { what: "starting a VM thread".into(), source })?;
        threads.push((name, handle));
    }
    while threads.iter().any(|(_, t)| !t.is_finished()) {
        if let Some(signo) = wait_for_signal(&signals, 200) {
            log::info!("signal {signo}: stopping every VM");
            for stop in &stops {
                stop.stop(crate::stop::StopReason::Signal(signo));
            }
        }
    }
    unblock_signals();
    let vms = threads
        .into_iter()
        .map(|(name, t)| {
            (
                name,
                t.join().unwrap_or_else(|_| {
                    Err(VmmError::Io { what: "a VM thread panicked".into(), source: std::io::Error::other("panic") })
                }),
            )
        })
        .collect();
    let host_memory_after = crate::stats::process_memory();
    drop(shared);
    Ok(FleetOutcome { vms, host_memory_after })
}

/// How one VM process of a `--process-per-vm` fleet ended.
#[derive(Debug)]
pub struct VmProcess {
    /// The VM's name.
    pub name: String,
    /// The process's exit status (`None` when a signal ended it).
    pub status: Option<i32>,
    /// The statistics it wrote (its `--stats-json`), if any.
    pub stats: Option<serde_json::Value>,
}

/// The `mshare-vmm run` arguments of one fleet VM in its own process; regions are passed as
/// inherited descriptors.
fn run_args(config: &VmConfig, regions: &[(String, i32)], stats: &Path) -> Vec<String> {
    let mut args = vec!["run".to_owned(), "--kernel".to_owned(), config.kernel.display().to_string()];
    if let Some(name) = &config.name {
        args.extend(["--name".to_owned(), name.clone()]);
    }
    if let Some(initrd) = &config.initrd {
        args.extend(["--initrd".to_owned(), initrd.display().to_string()]);
    }
    if let Some(cmdline) = &config.cmdline {
        args.extend(["--cmdline".to_owned(), cmdline.clone()]);
    }
    args.extend(["--cpus".to_owned(), config.cpus.to_string(), "--memory".to_owned(), config.memory.to_string()]);
    args.extend([
        "--serial".to_owned(),
        match &config.serial {
            SerialTarget::Stdout => "stdout".to_owned(),
            SerialTarget::File(path) => path.display().to_string(),
        },
    ]);
    if let Some(timeout) = config.timeout {
        args.extend(["--timeout".to_owned(), timeout.as_secs().to_string()]);
    }
    for (spec, attach) in &config.regions {
        let fd = regions.iter().find(|(name, _)| *name == spec.name).map_or(-1, |(_, fd)| *fd);
        let inherited = RegionSpec { backing: Backing::InheritedFd(fd), ..spec.clone() };
        args.extend(["--region".to_owned(), inherited.to_flag(attach)]);
    }
    args.extend(["--stats-json".to_owned(), stats.display().to_string()]);
    if !config.command.is_empty() {
        args.push("--".to_owned());
        args.extend(config.command.iter().cloned());
    }
    args
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
        let fd = region.backing_fd().ok_or_else(|| VmmError::Io {
            what: format!("region '{}' has no descriptor to hand down", region.spec.name),
            source: std::io::Error::other("no fd"),
        })?;
        // SAFETY: clears close-on-exec on a descriptor this process owns (the region's).
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return Err(VmmError::Io { what: "fcntl(F_SETFD)".into(), source: std::io::Error::last_os_error() });
        }
        fds.push((region.spec.name.clone(), fd));
    }
    let exe = std::env::current_exe().map_err(io("finding this executable"))?;
    let signals = signal_fd().map_err(io_err("signalfd"))?;
    let mut children: Vec<(String, std::process::Child, PathBuf)> = Vec::new();
    for config in &fleet.vms {
        let name = config.name.clone().unwrap_or_default();
        let stats = scratch.join(format!("{name}.json"));
        let spawned = std::process::Command::new(&exe)
            .args(run_args(config, &fds, &stats))
            .stdin(std::process::Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(source) => {
                // Nothing of the fleet is left running behind the error.
                let started = children.len();
                for (_, child, _) in &mut children {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                let what = format!(
                    "starting the process of vm '{name}' (the {started} VM processes started before it were stopped)"
                );
                return Err(VmmError::Io { what, source });
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
    unblock_signals();
    Ok(children
        .into_iter()
        .zip(statuses)
        .map(|((name, _, stats), status)| VmProcess {
            name,
            status: status.flatten(),
            stats: std::fs::read_to_string(&stats).ok().and_then(|t| serde_json::from_str(&t).ok()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Fleet, String> {
        Fleet::parse(Path::new("/etc/fleet.toml"), text).map_err(|e| e.to_string())
    }

    const KERNEL: &str = "kernel = \"/proc/self/exe\"";

    #[test]
    fn a_good_fleet() {
        let fleet = parse(&format!(
            "[[region]]\nname = \"db\"\nsize = \"64M\"\n\n[[region]]\nname = \"f\"\nsize = \"4M\"\npath = \"data/f\"\n\n\
             [[vm]]\nname = \"a\"\n{KERNEL}\nmemory = \"128M\"\ncpus = 2\ncommand = [\"true\"]\nregions = [{{ name = \"db\" }}, {{ name = \"f\", access = \"ro\" }}]\n\n\
             [[vm]]\nname = \"b\"\n{KERNEL}\nregions = [{{ name = \"db\", access = \"rw\" }}]\n"
        ))
        .unwrap();
        assert_eq!(fleet.regions.len(), 2);
        assert_eq!(fleet.regions[1].backing, crate::regions::Backing::Path("/etc/data/f".into()));
        let a = &fleet.vms[0];
        assert_eq!((a.name.as_deref(), a.cpus, a.memory), (Some("a"), 2, 128 << 20));
        assert!(a.regions[1].1.read_only);
        assert!(!fleet.vms[1].regions[0].1.read_only);
    }

    #[test]
    fn bad_fleets_get_one_line_errors_naming_file_entry_and_fix() {
        let vm = |extra: &str| format!("[[vm]]\nname = \"a\"\n{KERNEL}\n{extra}\n");
        let region = "[[region]]\nname = \"db\"\nsize = \"64M\"\n";
        let cases: Vec<(String, &str)> = vec![
            (format!("{region}colour = \"red\"\n{}", vm("")), "/etc/fleet.toml: line 4: unknown field `colour`"),
            (
                vm("regions = [{ name = \"nope\" }]"),
                "/etc/fleet.toml: vm 'a': attaches region 'nope', which no [[region]] defines (defined: none)",
            ),
            (format!("{region}{region}{}", vm("")), "/etc/fleet.toml: region 'db': defined twice"),
            (format!("{}{}", vm(""), vm("")), "/etc/fleet.toml: vm 'a': defined twice"),
            (
                "[[region]]\nname = \"db\"\nsize = \"3M\"\n".to_owned() + &vm(""),
                "/etc/fleet.toml: region 'db': size 3145728 is not a power of two",
            ),
            (
                vm("initrd = \"/nonexistent/initrd\""),
                "/etc/fleet.toml: vm 'a': initrd /nonexistent/initrd: no such file",
            ),
            (vm("memory = \"lots\""), "/etc/fleet.toml: vm 'a': size 'lots'"),
            (vm("regions = [{ name = \"db\", access = \"rx\" }]"), "unknown variant `rx`, expected `rw` or `ro`"),
            (vm("kernel2 = \"x\""), "unknown field `kernel2`"),
            (region.to_owned(), "/etc/fleet.toml: no [[vm]]"),
            (
                "[[vm]]\nname = \"a\"\nkernel = \"${MSHARE_SURELY_UNSET}\"\n".to_owned(),
                "environment variable MSHARE_SURELY_UNSET is not set",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(expected), "expected '{expected}' in '{err}' for:\n{text}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }

    #[test]
    fn expands_environment_variables() {
        std::env::set_var("MSHARE_FLEET_TEST_DIR", "/opt/k");
        assert_eq!(expand("${MSHARE_FLEET_TEST_DIR}/vmlinux").unwrap(), "/opt/k/vmlinux");
        assert!(expand("${UNCLOSED").is_err());
    }
}
