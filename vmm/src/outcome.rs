//! How a VM ended: why, when, and what it used (exits, regions, KVM's statistics, host
//! memory), for the report at exit and `--stats-json`.

use crate::devices::ivshmem::IvshmemCounters;
use crate::stop::StopReason;
use crate::vcpu::ExitCounters;
use std::sync::Arc;
use std::time::Duration;

/// How a VM ended.
#[derive(Debug)]
pub struct Outcome {
    /// Why it stopped.
    pub reason: StopReason,
    /// Wall-clock time from `run` to the stop.
    pub elapsed: Duration,
    /// Time from `run` to the boot vCPU's first KVM_RUN.
    pub first_run: Option<Duration>,
    /// Exit counts.
    pub counters: Arc<ExitCounters>,
    /// Accesses to ports nobody claims.
    pub unclaimed_ports: u64,
    /// Whether the software-hypervisor options were used.
    pub software_hypervisor: bool,
    /// Per attached region: name, where BAR2 was at the end, counters.
    pub regions: Vec<RegionUse>,
    /// KVM's binary statistics of the VM at its stop (None: the host has no stats fd).
    pub kvm_stats: Option<std::collections::BTreeMap<String, u64>>,
    /// KVM's binary statistics of its vCPUs at its stop, summed (e.g. `pf_fixed`: stage-2
    /// faults that mapped memory).
    pub kvm_vcpu_stats: Option<std::collections::BTreeMap<String, u64>>,
    /// The VMM process's smaps_rollup (KiB) when this VM stopped, guest RAM still mapped.
    pub host_memory: std::collections::BTreeMap<String, u64>,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// vCPUs.
    pub cpus: u8,
}

/// One region as one VM used it.
#[derive(Debug)]
pub struct RegionUse {
    /// The region's name.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Whether the VM attached it read-only.
    pub read_only: bool,
    /// The device's counters, BAR2's address among them.
    pub counters: Arc<IvshmemCounters>,
}

impl RegionUse {
    /// BAR2's guest-physical address now (at the end of a run: where the guest left it),
    /// `None` while the guest has decoding off.
    pub fn guest_address(&self) -> Option<u64> {
        self.counters.mapped_at()
    }
}
