//! The fleet file: its TOML schema, `${VAR}` expansion, and the checks that turn it into a
//! [`Fleet`] before anything starts, each problem one line naming the file, the entry and
//! the fix.

use crate::config::{parse_size, SerialTarget, VmConfig};
use crate::regions::{Attachment, RegionFields, RegionSpec};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
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
    region: Vec<RegionFields>,
    #[serde(default)]
    vm: Vec<VmEntry>,
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
    serial2: Option<String>,
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
        let serial_target = |entry: &str, raw: &str| -> Result<SerialTarget, FleetError> {
            Ok(match raw {
                "stdout" => SerialTarget::Stdout,
                path => SerialTarget::File(resolve(entry, path)?),
            })
        };

        let mut regions = Vec::new();
        let mut names = HashSet::new();
        for r in &parsed.region {
            let entry = format!("region '{}': ", r.name);
            if !names.insert(r.name.clone()) {
                return Err(fail(entry, "defined twice; give each [[region]] its own name".into()));
            }
            let path = r.path.as_deref().map(|p| resolve(&entry, p)).transpose()?;
            let spec = r.to_spec(path).map_err(|e| fail(entry.clone(), e))?;
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
                config.serial = serial_target(&entry, serial)?;
            }
            config.serial2 = v.serial2.as_deref().map(|s| serial_target(&entry, s)).transpose()?;
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
             [[vm]]\nname = \"b\"\n{KERNEL}\nserial2 = \"b.out\"\nregions = [{{ name = \"db\", access = \"rw\" }}]\n"
        ))
        .unwrap();
        assert_eq!(fleet.regions.len(), 2);
        assert_eq!(fleet.regions[1].backing, crate::regions::Backing::Path("/etc/data/f".into()));
        let a = &fleet.vms[0];
        assert_eq!((a.name.as_deref(), a.cpus, a.memory), (Some("a"), 2, 128 << 20));
        assert!(a.regions[1].1.read_only);
        assert!(!fleet.vms[1].regions[0].1.read_only);
        assert_eq!(a.serial2, None, "no COM2 unless asked");
        assert_eq!(fleet.vms[1].serial2, Some(SerialTarget::File("/etc/b.out".into())));
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
