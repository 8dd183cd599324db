//! Statistics of a run: the VMM process's memory (smaps_rollup) and KVM's binary statistics
//! of each VM (KVM_GET_STATS_FD), printed at exit and written as JSON with `--stats-json`.
//!
//! Stage-2 page counts (`pages_4k`, `pages_2m`, `pages_1g`) are KVM x86 VM statistics on
//! hosts whose KVM exposes them; what a host does not expose is listed as missing rather
//! than reported as zero.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use vmm_sys_util::ioctl::ioctl;
use vmm_sys_util::ioctl_io_nr;

ioctl_io_nr!(KVM_GET_STATS_FD, kvm_bindings::KVMIO, 0xce);

/// The stage-2 statistics this project reports when the host has them.
pub const STAGE2_STATS: [&str; 3] = ["pages_4k", "pages_2m", "pages_1g"];

/// Memory of the VMM process, in KiB: /proc/self/smaps_rollup, plus `VmPTE` (its page
/// tables) from /proc/self/status.
pub fn process_memory() -> BTreeMap<String, u64> {
    let mut memory = BTreeMap::new();
    for (file, keep) in [("/proc/self/smaps_rollup", None), ("/proc/self/status", Some("VmPTE"))] {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                memory.extend(parse_smaps_rollup(&text).into_iter().filter(|(k, _)| keep.is_none_or(|w| k == w)))
            }
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

/// Parses `Name:   123 kB` lines.
pub fn parse_smaps_rollup(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let kib = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some((name.trim().to_owned(), kib))
        })
        .collect()
}

/// KVM's binary statistics of a VM (or vCPU) fd: name -> value, single-value statistics
/// only (histograms are left out). `None` when the host has no KVM_GET_STATS_FD.
pub fn kvm_binary_stats(fd: &impl AsRawFd) -> Option<BTreeMap<String, u64>> {
    // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or -1.
    let stats_fd = unsafe { ioctl(fd, KVM_GET_STATS_FD()) };
    if stats_fd < 0 {
        return None;
    }
    // SAFETY: the ioctl returned a fresh fd that nothing else owns.
    let file = unsafe { File::from_raw_fd(stats_fd) };
    read_stats(&file)
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn read_stats(file: &File) -> Option<BTreeMap<String, u64>> {
    let mut header = [0u8; 24];
    file.read_exact_at(&mut header, 0).ok()?;
    // kvm_stats_header: flags, name_size, num_desc, id_offset, desc_offset, data_offset.
    let name_size = read_u32(&header, 4)? as usize;
    let num_desc = read_u32(&header, 8)? as usize;
    let desc_offset = u64::from(read_u32(&header, 16)?);
    let data_offset = u64::from(read_u32(&header, 20)?);
    // kvm_stats_desc: flags u32, exponent i16, size u16, offset u32, bucket_size u32, name.
    let desc_size = 16 + name_size;
    let mut descs = vec![0u8; desc_size * num_desc];
    file.read_exact_at(&mut descs, desc_offset).ok()?;
    let mut stats = BTreeMap::new();
    for d in descs.chunks_exact(desc_size) {
        let size = u16::from_ne_bytes([d[6], d[7]]);
        let offset = u64::from(read_u32(d, 8)?);
        let name: String = d[16..].iter().take_while(|b| **b != 0).map(|b| char::from(*b)).collect();
        if size != 1 {
            continue;
        }
        let mut value = [0u8; 8];
        file.read_exact_at(&mut value, data_offset + offset).ok()?;
        stats.insert(name, u64::from_ne_bytes(value));
    }
    Some(stats)
}

/// Which stage-2 statistics the host did not expose.
pub fn missing_stage2(stats: Option<&BTreeMap<String, u64>>) -> Vec<&'static str> {
    STAGE2_STATS.iter().copied().filter(|name| stats.is_none_or(|s| !s.contains_key(*name))).collect()
}

/// The JSON report of a run: one entry per VM (memslots, exits, regions, KVM statistics,
/// host memory at its stop), one per region (size, backing, who attached it), and for a
/// fleet the process's memory once every VM stopped.
pub fn report_json(
    vms: &[(&str, &crate::outcome::Outcome)],
    regions: &[crate::regions::RegionSpec],
    host_memory_after: Option<&BTreeMap<String, u64>>,
) -> serde_json::Value {
    use serde_json::json;
    use std::sync::atomic::Ordering::Relaxed;
    let vm_entries: Vec<_> = vms
        .iter()
        .map(|(name, o)| {
            let c = &o.counters;
            let mut memslots: Vec<_> = crate::memory::ram_ranges(o.memory)
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(slot, (addr, size))| json!({"slot": slot, "kind": "ram", "guest_address": addr.0, "size": size}))
                .collect();
            memslots.extend(o.regions.iter().enumerate().filter_map(|(i, r)| {
                let addr = r.guest_address()?;
                Some(json!({"slot": crate::memory::REGION_FIRST_SLOT as usize + i, "kind": "region", "region": r.name,
                            "guest_address": addr, "size": r.size, "read_only": r.read_only}))
            }));
            json!({
                "name": name,
                "stop": o.reason.to_string(),
                "exit_status": o.reason.exit_status(),
                "elapsed_s": o.elapsed.as_secs_f64(),
                "first_kvm_run_ms": o.first_run.map(|d| d.as_secs_f64() * 1000.0),
                "cpus": o.cpus,
                "memory_bytes": o.memory,
                "software_hypervisor": o.software_hypervisor,
                "memslots": memslots,
                "exits": {
                    "io_in": c.io_in.load(Relaxed), "io_out": c.io_out.load(Relaxed),
                    "mmio_read_unclaimed": c.mmio_read.load(Relaxed), "mmio_write_unclaimed": c.mmio_write.load(Relaxed),
                    "instructions_completed_by_vmm": c.completed_instructions.load(Relaxed),
                    "unclaimed_ports": o.unclaimed_ports,
                },
                "regions": o.regions.iter().map(|r| json!({
                    "name": r.name, "size": r.size, "read_only": r.read_only, "guest_address": r.guest_address(),
                    "read_only_writes_dropped": r.counters.read_only_writes.load(Relaxed),
                    "memslot_maps": r.counters.memslot_maps.load(Relaxed),
                })).collect::<Vec<_>>(),
                "kvm_stats": o.kvm_stats,
                "stage2_missing": missing_stage2(o.kvm_stats.as_ref()),
                "host_memory_kib_at_stop": o.host_memory,
            })
        })
        .collect();
    let region_entries: Vec<_> = regions
        .iter()
        .map(|r| {
            let attached: Vec<&str> =
                vms.iter().filter(|(_, o)| o.regions.iter().any(|u| u.name == r.name)).map(|(n, _)| *n).collect();
            json!({"name": r.name, "size": r.size, "backing": format!("{:?}", r.backing), "attached_by": attached})
        })
        .collect();
    json!({"vms": vm_entries, "regions": region_entries, "host_memory_kib_after_all_vms": host_memory_after})
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
    format!("host memory at stop: {}; KVM: {stage2}", rss_pss(&o.host_memory))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_smaps_rollup() {
        let text = "55a4-7ffd ---p 00000000 00:00 0   [rollup]\nRss:               28672 kB\nPss:               20480 kB\nPss_Shmem:          4096 kB\n";
        let m = parse_smaps_rollup(text);
        assert_eq!(m.get("Rss"), Some(&28672));
        assert_eq!(m.get("Pss_Shmem"), Some(&4096));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn own_process_memory_is_readable() {
        assert!(process_memory().get("Rss").is_some_and(|rss| *rss > 0));
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
