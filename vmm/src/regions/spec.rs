//! A region as configured: its name, size, backing and stage-2 tables, parsed from a
//! `--region` flag or a fleet file's fields, printed back, and checked against what a PCI
//! BAR and the host allow.

use mshare_uapi::formats::parse_size;
use serde::Deserialize;
use std::path::PathBuf;

/// Smallest region: one page (a PCI BAR is at least that in practice).
pub const MIN_REGION_SIZE: u64 = 4096;

/// What holds a region's memory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backing {
    /// An anonymous memfd.
    Memfd,
    /// A hugetlb memfd with pages of this size (2 MiB or 1 GiB).
    Hugetlbfs {
        /// Huge page size in bytes.
        page_size: u64,
    },
    /// A file (created if missing, extended to the region's size).
    Path(PathBuf),
    /// A descriptor inherited from the process that launched this one (`--process-per-vm`),
    /// already sized: a memfd, hugetlb memfd or file opened there.
    InheritedFd(i32),
}

/// Whose stage-2 tables map a region in each VM that attaches it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage2 {
    /// Each VM builds its own entries (any KVM).
    #[default]
    Private,
    /// One set of stage-2 tables for the region, linked by every VM
    /// (`KVM_MEM_SHARED_STAGE2`: a host kernel with this project's KVM patch, docs/regions.md).
    Shared,
}

impl Stage2 {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "private" => Ok(Self::Private),
            "shared" => Ok(Self::Shared),
            other => Err(format!("stage2 '{other}': expected private or shared")),
        }
    }
}

/// A region as configured.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegionSpec {
    /// Name, shown to guests through the device's vendor capability.
    pub name: String,
    /// Size in bytes: a power of two, as a PCI BAR must be.
    pub size: u64,
    /// Where the memory comes from.
    pub backing: Backing,
    /// Whose stage-2 tables map it.
    #[serde(default)]
    pub stage2: Stage2,
}

/// A VM's attachment of a region.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    /// The region's name.
    pub region: String,
    /// Map it read-only (KVM_MEM_READONLY): guest writes never reach the region.
    pub read_only: bool,
}

/// Errors describing or mapping a region.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegionError {
    #[error("--region {spec}: {problem} (expected name=NAME,size=SIZE[,backing=memfd|hugetlbfs][,pagesize=2M|1G][,path=FILE|,fd=N][,stage2=private|shared][,ro])")]
    Spec {
        /// The spec.
        spec: String,
        /// What is wrong.
        problem: String,
    },
    #[error("region '{name}': {problem}")]
    Invalid {
        /// The region.
        name: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

/// Free huge pages of `page_size` on this host, if the host has that pool at all.
pub fn free_huge_pages(page_size: u64) -> Option<u64> {
    let path = format!("/sys/kernel/mm/hugepages/hugepages-{}kB/free_hugepages", page_size >> 10);
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl RegionSpec {
    /// Checks size and backing against what a BAR and the host allow.
    pub fn validate(&self) -> Result<(), RegionError> {
        let invalid = |problem: String| Err(RegionError::Invalid { name: self.name.clone(), problem });
        // The guest makes the name a file (`/sys/fs/mshare/ivshmem/NAME`): `.` and `..`
        // are not names, and the guest's module refuses them too.
        if self.name.is_empty()
            || self.name.len() > 32
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || self.name == "."
            || self.name == ".."
        {
            return invalid(
                "names are 1 to 32 characters of letters, digits, '-', '_' and '.', other than '.' and '..'".into(),
            );
        }
        if self.size < MIN_REGION_SIZE || !self.size.is_power_of_two() {
            return invalid(format!(
                "size {} is not a power of two of at least 4K: a PCI BAR must be (e.g. 64M, 256M, 1G)",
                self.size
            ));
        }
        if let Backing::Hugetlbfs { page_size } = self.backing {
            if page_size != 2 << 20 && page_size != 1 << 30 {
                return invalid(format!("huge page size {page_size}: use pagesize=2M or pagesize=1G"));
            }
            if !self.size.is_multiple_of(page_size) {
                return invalid(format!("size {} is not a multiple of its huge page size {page_size}", self.size));
            }
            let needed = self.size / page_size;
            match free_huge_pages(page_size) {
                None => return invalid(format!("this host has no {} KiB huge page pool", page_size >> 10)),
                Some(free) if free < needed => {
                    return invalid(format!(
                        "needs {needed} free {} KiB huge pages, the host has {free}: echo {needed} > /sys/kernel/mm/hugepages/hugepages-{}kB/nr_hugepages",
                        page_size >> 10,
                        page_size >> 10
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Parses `name=db,size=256M[,backing=memfd|hugetlbfs][,pagesize=2M][,path=FILE][,stage2=shared][,ro]`
    /// into a region and this VM's attachment of it: the fields of a fleet file's
    /// `[[region]]` ([`RegionFields`]), plus `fd=` and the access.
    pub fn parse_flag(spec: &str) -> Result<(RegionSpec, Attachment), RegionError> {
        let err = |problem: String| RegionError::Spec { spec: one_line(spec), problem: one_line(&problem) };
        let (mut fields, mut fd, mut read_only) = (RegionFields::default(), None, false);
        let (mut name, mut size) = (None, None);
        for item in spec.split(',') {
            match item.split_once('=') {
                Some(("name", v)) => name = Some(v.to_owned()),
                Some(("size", v)) => size = Some(v.to_owned()),
                Some(("backing", v)) => fields.backing = Some(v.to_owned()),
                Some(("pagesize", v)) => fields.page_size = Some(v.to_owned()),
                Some(("path", v)) => fields.path = Some(v.to_owned()),
                Some(("stage2", v)) => fields.stage2 = Some(v.to_owned()),
                Some(("fd", v)) => fd = Some(v.parse::<i32>().map_err(|_| err(format!("fd '{v}' is not a number")))?),
                None if item == "ro" => read_only = true,
                None if item == "rw" => read_only = false,
                _ => return Err(err(format!("unknown item '{item}'"))),
            }
        }
        fields.name = name.ok_or_else(|| err("no name=".into()))?;
        fields.size = size.ok_or_else(|| err("no size=".into()))?;
        let region = match fd {
            Some(_) if fields.backing.is_some() || fields.path.is_some() => {
                return Err(err("fd= stands alone: no backing= or path= with it".into()))
            }
            Some(fd) => RegionSpec { backing: Backing::InheritedFd(fd), ..fields.to_spec(None).map_err(err)? },
            None => {
                let path = fields.path.as_ref().map(PathBuf::from);
                fields.to_spec(path).map_err(err)?
            }
        };
        let attach = Attachment { region: region.name.clone(), read_only };
        Ok((region, attach))
    }

    /// The `--region` spec that [`RegionSpec::parse_flag`] reads back as this region and
    /// `attach` (sizes in bytes).
    pub fn to_flag(&self, attach: &Attachment) -> String {
        let backing = match &self.backing {
            Backing::Memfd => String::new(),
            Backing::Hugetlbfs { page_size } => format!(",backing=hugetlbfs,pagesize={page_size}"),
            Backing::Path(path) => format!(",path={}", path.display()),
            Backing::InheritedFd(fd) => format!(",fd={fd}"),
        };
        let ro = if attach.read_only { ",ro" } else { "" };
        let stage2 = if self.stage2 == Stage2::Shared { ",stage2=shared" } else { "" };
        format!("name={},size={}{backing}{stage2}{ro}", self.name, self.size)
    }
}

/// A region as a user writes it, in a fleet file's `[[region]]` or a `--region` flag: the
/// same fields, turned into a [`RegionSpec`] the same way.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionFields {
    /// Its name.
    pub name: String,
    /// Its size, e.g. `64M`.
    pub size: String,
    /// `memfd` (default), `hugetlbfs` or `path`.
    pub backing: Option<String>,
    /// Huge page size for `hugetlbfs`: `2M` (default) or `1G`.
    pub page_size: Option<String>,
    /// The file of `backing = "path"`, as written.
    pub path: Option<String>,
    /// `private` (default) or `shared`: see [`Stage2`].
    pub stage2: Option<String>,
}

impl RegionFields {
    /// The region, with `path` (the file, resolved by the caller) as its backing file;
    /// the problem, if any, as one message.
    pub fn to_spec(&self, path: Option<PathBuf>) -> Result<RegionSpec, String> {
        let size_of = |text: &str| {
            parse_size(text).ok_or_else(|| {
                format!("size '{text}': expected a number with an optional K, M or G suffix (e.g. 512M)")
            })
        };
        let size = size_of(&self.size)?;
        let page_size = self.page_size.as_deref().map(size_of).transpose()?;
        let backing = backing_from(self.backing.as_deref(), page_size, path)?;
        let stage2 = self.stage2.as_deref().map(Stage2::parse).transpose()?.unwrap_or_default();
        Ok(RegionSpec { name: self.name.clone(), size, backing, stage2 })
    }
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`), so that an error quoting
/// it stays one line.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// The backing named by `backing=`, `pagesize=` and `path=`.
pub fn backing_from(kind: Option<&str>, page_size: Option<u64>, path: Option<PathBuf>) -> Result<Backing, String> {
    match (kind, path) {
        (None | Some("path"), Some(path)) => Ok(Backing::Path(path)),
        (Some("path"), None) => Err("backing=path needs path=FILE".into()),
        (None | Some("memfd"), None) => Ok(Backing::Memfd),
        (Some("hugetlbfs"), None) => Ok(Backing::Hugetlbfs { page_size: page_size.unwrap_or(2 << 20) }),
        (Some(other), None) if !["memfd", "hugetlbfs", "path"].contains(&other) => {
            Err(format!("unknown backing '{other}' (memfd, hugetlbfs, path)"))
        }
        (Some(other), Some(_)) => Err(format!("path= goes with backing=path, not backing={other}")),
        _ => Err("unusable backing".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_region_flags() {
        let (region, attach) = RegionSpec::parse_flag("name=db,size=256M,ro").unwrap();
        assert_eq!(
            region,
            RegionSpec { name: "db".into(), size: 256 << 20, backing: Backing::Memfd, stage2: Stage2::Private }
        );
        assert!(attach.read_only);
        let (region, _) = RegionSpec::parse_flag("name=h,size=1G,backing=hugetlbfs,pagesize=1G").unwrap();
        assert_eq!(region.backing, Backing::Hugetlbfs { page_size: 1 << 30 });
        let (region, attach) = RegionSpec::parse_flag("name=f,size=4M,path=/dev/shm/f,rw").unwrap();
        assert_eq!(region.backing, Backing::Path("/dev/shm/f".into()));
        assert!(!attach.read_only);
        let (region, _) = RegionSpec::parse_flag("name=s,size=1G,stage2=shared").unwrap();
        assert_eq!(region.stage2, Stage2::Shared);
        let err = RegionSpec::parse_flag("name=s,size=1G,stage2=yes").unwrap_err().to_string();
        assert!(err.contains("stage2 'yes': expected private or shared"), "{err}");
    }

    #[test]
    fn specs_print_back_as_themselves_and_errors_stay_one_line() {
        for text in [
            "name=db,size=256M,ro",
            "name=h,size=1G,backing=hugetlbfs,pagesize=1G",
            "name=f,size=4M,path=/x",
            "name=i,size=64K,fd=3",
            "name=s,size=1G,backing=hugetlbfs,pagesize=2M,stage2=shared,ro",
        ] {
            let (region, attach) = RegionSpec::parse_flag(text).unwrap();
            assert_eq!(RegionSpec::parse_flag(&region.to_flag(&attach)), Ok((region, attach)), "{text}");
        }
        let err = RegionSpec::parse_flag("name=db,si\nze=4M").unwrap_err().to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("unknown item 'si\\nze=4M'"), "{err}");
    }

    #[test]
    fn bad_region_flags_say_what_is_wrong() {
        let msg = |s: &str| RegionSpec::parse_flag(s).unwrap_err().to_string();
        assert!(msg("size=4M").contains("no name="));
        assert!(msg("name=a").contains("no size="));
        assert!(msg("name=a,size=4M,colour=red").contains("unknown item 'colour=red'"));
        assert!(msg("name=a,size=4M,backing=tmpfs").contains("unknown backing 'tmpfs'"));
        assert!(msg("name=a,size=lots").contains("size 'lots'"));
    }

    #[test]
    fn sizes_must_be_bar_compatible() {
        let spec = RegionSpec { name: "db".into(), size: 3 << 20, backing: Backing::Memfd, stage2: Stage2::Private };
        assert!(spec.validate().unwrap_err().to_string().contains("not a power of two"));
        for name in ["bad name", "a/b", ".", "..", "", "x".repeat(33).as_str()] {
            let spec =
                RegionSpec { name: name.into(), size: 4 << 20, backing: Backing::Memfd, stage2: Stage2::Private };
            let err = spec.validate().unwrap_err().to_string();
            assert!(err.contains("names are 1 to 32 characters"), "{name:?}: {err}");
        }
        for name in ["db", "a.b", "...", "x".repeat(32).as_str()] {
            let spec =
                RegionSpec { name: name.into(), size: 4 << 20, backing: Backing::Memfd, stage2: Stage2::Private };
            assert!(spec.validate().is_ok(), "{name:?}");
        }
        let spec = RegionSpec {
            name: "h".into(),
            size: 4 << 20,
            backing: Backing::Hugetlbfs { page_size: 4096 },
            stage2: Stage2::Private,
        };
        assert!(spec.validate().unwrap_err().to_string().contains("pagesize=2M or pagesize=1G"));
    }
}
