//! Statistics of a run: the VMM process's memory (smaps_rollup, VmPTE) and KVM's binary
//! statistics of each VM (KVM_GET_STATS_FD), printed at exit and written as JSON with
//! `--stats-json` ([`crate::report`]).
//!
//! Stage-2 page counts (`pages_4k`, `pages_2m`, `pages_1g`) are KVM x86 VM statistics on
//! hosts whose KVM exposes them; what a host does not expose is listed as missing rather
//! than reported as zero.

use kvm_bindings::{kvm_stats_desc, kvm_stats_header, KVM_CAP_BINARY_STATS_FD};
use kvm_ioctls::VmFd;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use vmm_sys_util::ioctl::ioctl;
use vmm_sys_util::ioctl_io_nr;

ioctl_io_nr!(KVM_GET_STATS_FD, kvm_bindings::KVMIO, 0xce);

/// The stage-2 statistics this project reports when the host has them.
pub const STAGE2_STATS: [&str; 3] = ["pages_4k", "pages_2m", "pages_1g"];
/// The VM statistic of a host kernel with shared stage-2 tables: tables linked so far.
pub const SHARED_LINKS: &str = "stage2_shared_links";

/// Memory of the VMM process, in KiB: /proc/self/smaps_rollup, plus `VmPTE` (its page
/// tables) from /proc/self/status.
pub fn process_memory() -> BTreeMap<String, u64> {
    let mut memory = BTreeMap::new();
    for (file, keep) in [("/proc/self/smaps_rollup", None), ("/proc/self/status", Some("VmPTE"))] {
        match std::fs::read_to_string(file) {
            Ok(text) => memory.extend(
                mshare_uapi::formats::kib_lines(&text).into_iter().filter(|(k, _)| keep.is_none_or(|w| k == w)),
            ),
            Err(e) => log::error!("reading {file}: {e}: the host memory figures are missing (is /proc mounted?)"),
        }
    }
    memory
}

/// `Rss N MiB, PSS N MiB` of a [`process_memory`] reading, or that it is unknown.
pub fn rss_pss(memory: &BTreeMap<String, u64>) -> String {
    match (memory.get("Rss"), memory.get("Pss")) {
        (Some(rss), Some(pss)) => format!("RSS {} MiB, PSS {} MiB", rss >> 10, pss >> 10),
        _ => "RSS and PSS unknown (no smaps_rollup)".to_owned(),
    }
}

/// KVM's binary statistics of a VM: name -> value, single-value statistics only
/// (histograms are left out). `None` when the host has no KVM_CAP_BINARY_STATS_FD; a host
/// that has it but whose statistics cannot be read is an error, logged, and `None`.
pub fn kvm_binary_stats(vm: &VmFd) -> Option<BTreeMap<String, u64>> {
    StatsFile::open(vm, vm, "VM")?.read()
}

/// The binary statistics file of a VM or a vCPU (KVM_GET_STATS_FD). A vCPU's stays
/// readable after its thread ended, until the file is closed.
#[derive(Debug)]
pub struct StatsFile {
    file: File,
    of: &'static str,
}

impl StatsFile {
    /// Opens the statistics of `fd`, a VM or vCPU of `vm` (`of` says which, for errors).
    /// `None` when the host has no KVM_CAP_BINARY_STATS_FD, or (logged) when KVM refused.
    pub fn open(vm: &VmFd, fd: &impl AsRawFd, of: &'static str) -> Option<Self> {
        if vm.check_extension_raw(KVM_CAP_BINARY_STATS_FD.into()) <= 0 {
            return None;
        }
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or -1.
        let stats_fd = unsafe { ioctl(fd, KVM_GET_STATS_FD()) };
        if stats_fd < 0 {
            log::error!("KVM_GET_STATS_FD: {}: the {of}'s KVM statistics are missing", std::io::Error::last_os_error());
            return None;
        }
        // SAFETY: the ioctl returned a fresh fd that nothing else owns.
        Some(Self { file: unsafe { File::from_raw_fd(stats_fd) }, of })
    }

    /// The statistics now; `None` (logged) when they cannot be read.
    pub fn read(&self) -> Option<BTreeMap<String, u64>> {
        read_stats(&self.file)
            .inspect_err(|e| {
                log::error!("reading KVM's binary statistics: {e}: the {}'s KVM statistics are missing", self.of)
            })
            .ok()
    }
}

/// Each statistic summed over `files` (a VM's vCPUs); `None` when any is unreadable.
pub fn summed(files: &[StatsFile]) -> Option<BTreeMap<String, u64>> {
    let mut total = BTreeMap::new();
    for file in files {
        for (name, value) in file.read()? {
            *total.entry(name).or_insert(0u64) += value;
        }
    }
    Some(total)
}

/// Reads a `#[repr(C)]` KVM statistics structure at `offset` of the stats file.
fn read_struct<T: Default + Copy>(file: &File, offset: u64) -> std::io::Result<T> {
    let mut value = T::default();
    // SAFETY: `T` is one of kvm-bindings' plain-data statistics structures (integers only,
    // every bit pattern valid); the slice covers exactly its bytes while `value` lives.
    let bytes = unsafe { std::slice::from_raw_parts_mut((&mut value as *mut T).cast::<u8>(), size_of::<T>()) };
    file.read_exact_at(bytes, offset)?;
    Ok(value)
}

/// The fixed part of a `kvm_stats_desc` (its name follows it in the file).
#[derive(Default, Clone, Copy)]
#[repr(C)]
struct StatsDesc {
    flags: u32,
    exponent: i16,
    size: u16,
    offset: u32,
    bucket_size: u32,
}

// The layout is kvm-bindings' kvm_stats_desc without its flexible name.
const _: () = assert!(size_of::<StatsDesc>() == size_of::<kvm_stats_desc>());

fn read_stats(file: &File) -> std::io::Result<BTreeMap<String, u64>> {
    let header: kvm_stats_header = read_struct(file, 0)?;
    let desc_size = (size_of::<kvm_stats_desc>() + header.name_size as usize) as u64;
    let mut stats = BTreeMap::new();
    for i in 0..u64::from(header.num_desc) {
        let at = u64::from(header.desc_offset) + i * desc_size;
        let desc: StatsDesc = read_struct(file, at)?;
        let mut name = vec![0u8; header.name_size as usize];
        file.read_exact_at(&mut name, at + size_of::<kvm_stats_desc>() as u64)?;
        let name: String = name.iter().take_while(|b| **b != 0).map(|b| char::from(*b)).collect();
        if desc.size != 1 {
            continue;
        }
        let value: u64 = read_struct(file, u64::from(header.data_offset) + u64::from(desc.offset))?;
        stats.insert(name, value);
    }
    Ok(stats)
}

/// Which stage-2 statistics the host did not expose.
pub fn missing_stage2(stats: Option<&BTreeMap<String, u64>>) -> Vec<&'static str> {
    STAGE2_STATS.iter().copied().filter(|name| stats.is_none_or(|s| !s.contains_key(*name))).collect()
}

/// One line per VM for the log: host memory and the stage-2 counts (or what is missing).
pub fn summary_line(o: &crate::outcome::Outcome) -> String {
    let stage2 = match &o.kvm_stats {
        Some(s) if missing_stage2(Some(s)).is_empty() => {
            STAGE2_STATS.iter().map(|n| format!("{n} {}", s[*n])).collect::<Vec<_>>().join(", ")
        }
        Some(_) => {
            format!("stage-2 counts not exposed by this host ({})", missing_stage2(o.kvm_stats.as_ref()).join(", "))
        }
        None => "no KVM binary statistics on this host".to_owned(),
    };
    let shared = o.kvm_stats.as_ref().and_then(|s| s.get(SHARED_LINKS)).filter(|n| **n > 0);
    let shared = shared.map(|n| format!(", {SHARED_LINKS} {n}")).unwrap_or_default();
    let faults = o.kvm_vcpu_stats.as_ref().and_then(|s| s.get("pf_fixed"));
    let faults = faults.map(|n| format!(", pf_fixed {n}")).unwrap_or_default();
    format!("host memory at stop: {}; KVM: {stage2}{shared}{faults}", rss_pss(&o.host_memory))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_memory_is_readable() {
        let memory = process_memory();
        assert!(memory.get("Rss").is_some_and(|rss| *rss > 0));
        assert!(memory.contains_key("VmPTE"), "{memory:?}");
    }

    #[test]
    fn missing_stage2_names_what_is_absent() {
        let mut s = BTreeMap::new();
        s.insert("pages_4k".to_owned(), 10);
        assert_eq!(missing_stage2(Some(&s)), vec!["pages_2m", "pages_1g"]);
        assert_eq!(missing_stage2(None), STAGE2_STATS.to_vec());
    }

    #[test]
    fn a_vm_has_binary_stats() {
        let vm = kvm_ioctls::Kvm::new().unwrap().create_vm().unwrap();
        let stats = kvm_binary_stats(&vm).expect("KVM_GET_STATS_FD");
        assert!(!stats.is_empty());
    }
}
