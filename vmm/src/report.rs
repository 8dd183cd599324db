//! The JSON report of a run (`--stats-json`), one schema for `run`, `launch` and
//! `launch --process-per-vm`: one entry per VM (memslots, exits, regions, KVM statistics,
//! host memory at its stop), one per region (size, backing, who attached it), and for a
//! fleet in one process the process's memory once every VM stopped.

use crate::memory::{ram_ranges, REGION_FIRST_SLOT};
use crate::outcome::Outcome;
use crate::regions::{Backing, RegionSpec};
use crate::stats::missing_stage2;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Whether each VM ran in a process of its own.
    #[serde(default)]
    pub process_per_vm: bool,
    /// Every VM that ran, in file order.
    pub vms: Vec<VmReport>,
    /// Every region.
    pub regions: Vec<RegionReport>,
    /// A fleet in one process: the process's memory (KiB) after every VM stopped, regions
    /// still mapped.
    #[serde(default)]
    pub host_memory_kib_after_all_vms: Option<BTreeMap<String, u64>>,
}

/// One VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmReport {
    /// Its name (`vm` for `mshare-vmm run` without `--name`).
    pub name: String,
    /// Why it stopped.
    pub stop: String,
    /// The VMM's exit status for that stop.
    pub exit_status: u8,
    /// Seconds from start to stop.
    pub elapsed_s: f64,
    /// Milliseconds from start to the boot vCPU's first KVM_RUN.
    pub first_kvm_run_ms: Option<f64>,
    /// vCPUs.
    pub cpus: u8,
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// Whether the software-hypervisor options were used.
    pub software_hypervisor: bool,
    /// Its memslots: RAM, and each region's BAR2 where the guest left it.
    pub memslots: Vec<Memslot>,
    /// Exit counts.
    pub exits: Exits,
    /// The regions it attached.
    pub regions: Vec<RegionUseReport>,
    /// KVM's binary statistics (absent: the host has none).
    pub kvm_stats: Option<BTreeMap<String, u64>>,
    /// KVM's binary statistics of its vCPUs, summed (absent: the host has none).
    pub kvm_vcpu_stats: Option<BTreeMap<String, u64>>,
    /// The stage-2 statistics the host did not expose.
    pub stage2_missing: Vec<String>,
    /// The VMM process's memory (KiB) when this VM stopped.
    pub host_memory_kib_at_stop: BTreeMap<String, u64>,
}

/// A memslot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Memslot {
    /// KVM's slot number.
    pub slot: u32,
    /// `ram` or `region`.
    pub kind: String,
    /// Guest-physical address.
    pub guest_address: u64,
    /// Bytes.
    pub size: u64,
    /// The region, for a region's slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Whether the slot is read-only, for a region's slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// Exit counts of one VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exits {
    /// Port reads.
    pub io_in: u64,
    /// Port writes.
    pub io_out: u64,
    /// MMIO reads no device decoded.
    pub mmio_read_unclaimed: u64,
    /// MMIO writes no device decoded.
    pub mmio_write_unclaimed: u64,
    /// Instructions the host's emulator gave up on that the VMM completed.
    pub instructions_completed_by_vmm: u64,
    /// Accesses to ports nobody claims.
    pub unclaimed_ports: u64,
}

/// One region as one VM used it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionUseReport {
    /// The region.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Attached read-only.
    pub read_only: bool,
    /// Where BAR2 was at the end (absent: decoding off).
    pub guest_address: Option<u64>,
    /// Guest writes to a read-only region, dropped.
    pub read_only_writes_dropped: u64,
    /// Times its memslot was (re)registered.
    pub memslot_maps: u64,
}

/// One region.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionReport {
    /// Its name.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// What holds its memory.
    pub backing: Backing,
    /// The VMs that attached it.
    pub attached_by: Vec<String>,
}

impl VmReport {
    /// The report of VM `name` that ended with `o`.
    pub fn new(name: &str, o: &Outcome) -> Self {
        let c = &o.counters;
        let mut memslots: Vec<Memslot> = ram_ranges(o.memory)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(slot, (addr, size))| Memslot {
                slot: slot as u32,
                kind: "ram".into(),
                guest_address: addr.0,
                size: *size as u64,
                region: None,
                read_only: None,
            })
            .collect();
        memslots.extend(o.regions.iter().enumerate().filter_map(|(i, r)| {
            Some(Memslot {
                slot: REGION_FIRST_SLOT + i as u32,
                kind: "region".into(),
                guest_address: r.guest_address()?,
                size: r.size,
                region: Some(r.name.clone()),
                read_only: Some(r.read_only),
            })
        }));
        Self {
            name: name.to_owned(),
            stop: o.reason.to_string(),
            exit_status: o.reason.exit_status(),
            elapsed_s: o.elapsed.as_secs_f64(),
            first_kvm_run_ms: o.first_run.map(|d| d.as_secs_f64() * 1000.0),
            cpus: o.cpus,
            memory_bytes: o.memory,
            software_hypervisor: o.software_hypervisor,
            memslots,
            exits: Exits {
                io_in: c.io_in.load(Relaxed),
                io_out: c.io_out.load(Relaxed),
                mmio_read_unclaimed: c.mmio_read.load(Relaxed),
                mmio_write_unclaimed: c.mmio_write.load(Relaxed),
                instructions_completed_by_vmm: c.completed_instructions.load(Relaxed),
                unclaimed_ports: o.unclaimed_ports,
            },
            regions: o
                .regions
                .iter()
                .map(|r| RegionUseReport {
                    name: r.name.clone(),
                    size: r.size,
                    read_only: r.read_only,
                    guest_address: r.guest_address(),
                    read_only_writes_dropped: r.counters.read_only_writes.load(Relaxed),
                    memslot_maps: r.counters.memslot_maps.load(Relaxed),
                })
                .collect(),
            kvm_stats: o.kvm_stats.clone(),
            kvm_vcpu_stats: o.kvm_vcpu_stats.clone(),
            stage2_missing: missing_stage2(o.kvm_stats.as_ref()).into_iter().map(str::to_owned).collect(),
            host_memory_kib_at_stop: o.host_memory.clone(),
        }
    }
}

impl Report {
    /// The report of `vms` (name and report each) over `regions`.
    pub fn new(vms: Vec<VmReport>, regions: &[RegionSpec]) -> Self {
        let regions = regions
            .iter()
            .map(|r| RegionReport {
                name: r.name.clone(),
                size: r.size,
                backing: r.backing.clone(),
                attached_by: vms
                    .iter()
                    .filter(|vm| vm.regions.iter().any(|u| u.name == r.name))
                    .map(|vm| vm.name.clone())
                    .collect(),
            })
            .collect();
        Self { process_per_vm: false, vms, regions, host_memory_kib_after_all_vms: None }
    }
}
