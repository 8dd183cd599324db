//! One VM from start to stop: [`run`] maps its regions and hands over to
//! [`run_with_regions`], which builds the [`Vm`], starts its vCPUs and runs the main loop
//! ([`event_loop`](crate::event_loop)) until a stop reason comes: the guest's, a signal's,
//! the timeout's or a failure's.

pub use crate::error::VmmError;
pub use crate::outcome::{Outcome, RegionUse};
pub use crate::vm::map_regions;

use crate::config::{SerialTarget, VmConfig};
use crate::console::{ConsoleInput, TerminalGuard};
use crate::error::{errno_err, io_err};
use crate::event_loop::{wait_for_stop, Control};
use crate::regions::{RegionSpec, SharedRegion};
use crate::signals::{kick_signal, noop_signal_handler, SignalFd};
use crate::stop::StopSignal;
use crate::vm::{start_vcpus, Vm};
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use vmm_sys_util::timerfd::TimerFd;

/// Boots the VM described by `config`, mapping the regions it names, and runs it until it
/// stops.
pub fn run(config: &VmConfig) -> Result<Outcome, VmmError> {
    config.validate()?;
    for (spec, _) in &config.regions {
        spec.validate()?;
    }
    let specs: Vec<RegionSpec> = config.regions.iter().map(|(spec, _)| spec.clone()).collect();
    let shared = map_regions(&specs)?;
    let stop = Arc::new(StopSignal::new().map_err(io_err("eventfd"))?);
    run_with_regions(config, &shared, stop, true)
}

/// Boots the VM described by `config` with its regions already mapped (`shared`, found by
/// name: one mapping serves every VM of the process), and runs it until it stops, or until
/// someone else raises `stop`. With `own_signals`, SIGINT and SIGTERM stop it; otherwise
/// the caller handles them (and must have blocked them in this thread).
pub fn run_with_regions(
    config: &VmConfig,
    shared: &[Arc<SharedRegion>],
    stop: Arc<StopSignal>,
    own_signals: bool,
) -> Result<Outcome, VmmError> {
    let start = Instant::now();
    let vm = Vm::build(config, shared, stop.clone())?;

    let signals = if own_signals { Some(SignalFd::new().map_err(io_err("signalfd"))?) } else { None };
    vmm_sys_util::signal::register_signal_handler(kick_signal(), noop_signal_handler)
        .map_err(errno_err("registering the vCPU kick signal"))?;
    let timer = match config.timeout {
        Some(limit) => {
            let mut timer = TimerFd::new().map_err(errno_err("timerfd"))?;
            timer.reset(limit, None).map_err(errno_err("timerfd"))?;
            Some((timer, limit.as_secs()))
        }
        None => None,
    };
    let runners = vm.create_vcpus()?;

    if vm.software_hypervisor() {
        log::info!(
            "this host's KVM is a software hypervisor (kvm_pvm): added guest options '{}'",
            crate::boot::cmdline::SOFTWARE_HYPERVISOR
        );
    }
    let terminal = (own_signals && config.serial == SerialTarget::Stdout).then(TerminalGuard::new).flatten();
    let mut events: EventManager<Box<dyn MutEventSubscriber + Send>> =
        EventManager::new().map_err(VmmError::EventManager)?;
    events.add_subscriber(Box::new(Control { stop: stop.clone(), signals, timer }));
    if config.serial == SerialTarget::Stdout && terminal.is_some() {
        events.add_subscriber(Box::new(ConsoleInput::new(vm.serial().clone())));
    }

    let first_run = Arc::new(OnceLock::new());
    let threads = start_vcpus(runners, &stop, &first_run, start);
    wait_for_stop(&mut events, &stop);
    let elapsed = start.elapsed();
    let outcome = vm.finish(threads, elapsed, first_run.get().copied());
    drop(terminal);
    Ok(outcome)
}
