//! A fleet in this process: one thread per VM, each region mapped once and that one mapping
//! the memslot of its BAR2 in every VM.

use super::{wait_for_signal, Fleet};
use crate::error::io_err;
use crate::outcome::Outcome;
use crate::signals::SignalFd;
use crate::stop::{StopReason, StopSignal};
use crate::vm::map_regions;
use crate::vmm::{self, VmmError};
use std::sync::Arc;

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
    let signals = SignalFd::new().map_err(io_err("signalfd"))?;
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
        let spawned = std::thread::Builder::new()
            .name(format!("vm-{name}"))
            .spawn(move || vmm::run_with_regions(&config, &shared, stop, false));
        match spawned {
            Ok(handle) => threads.push((name, handle)),
            Err(source) => {
                // Nothing of the fleet is left running behind the error.
                for stop in &stops[..threads.len()] {
                    stop.stop(StopReason::VmmFailure(format!("vm '{name}' could not start: {source}")));
                }
                let started = threads.len();
                for (_, thread) in threads {
                    let _ = thread.join();
                }
                let what =
                    format!("starting the thread of vm '{name}' (the {started} VMs started before it were stopped)");
                return Err(VmmError::Io { what, source });
            }
        }
    }
    while threads.iter().any(|(_, t)| !t.is_finished()) {
        if let Some(signo) = wait_for_signal(&signals, 200) {
            log::info!("signal {signo}: stopping every VM");
            for stop in &stops {
                stop.stop(StopReason::Signal(signo));
            }
        }
    }
    drop(signals);
    let vms = threads
        .into_iter()
        .map(|(name, t)| {
            let result = t.join().unwrap_or_else(|_| Err(VmmError::VmThreadPanicked(name.clone())));
            (name, result)
        })
        .collect();
    let host_memory_after = crate::stats::process_memory();
    drop(shared);
    Ok(FleetOutcome { vms, host_memory_after })
}
