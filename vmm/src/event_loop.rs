//! The VMM's main loop (event-manager): it waits for a stop reason, turns SIGINT/SIGTERM
//! and the timeout into one, and feeds console input.

use crate::signals::SignalFd;
use crate::stop::{StopReason, StopSignal};
use event_manager::{EventManager, EventOps, Events, MutEventSubscriber};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use vmm_sys_util::timerfd::TimerFd;

/// The main loop's events: stop requests, SIGINT/SIGTERM, the timeout.
pub struct Control {
    /// Raised by whoever stops the VM; wakes the loop.
    pub stop: Arc<StopSignal>,
    /// SIGINT/SIGTERM, when the VM owns them.
    pub signals: Option<SignalFd>,
    /// The timeout's timer and its length in seconds.
    pub timer: Option<(TimerFd, u64)>,
}

impl MutEventSubscriber for Control {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.stop.event().as_raw_fd() {
            let _ = self.stop.event().read();
        } else if let Some(signals) = self.signals.as_ref().filter(|s| s.as_raw_fd() == fd) {
            if let Some(signo) = signals.read() {
                self.stop.stop(StopReason::Signal(signo));
            }
        } else if let Some((timer, seconds)) = self.timer.as_mut() {
            if fd == timer.as_raw_fd() {
                let _ = timer.wait();
                self.stop.stop(StopReason::Timeout(*seconds));
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let watch = |ops: &mut EventOps, fd: RawFd| {
            if let Err(e) = ops.add(event_manager::Events::new_raw(fd, event_manager::EventSet::IN)) {
                log::error!("event loop: cannot watch fd {fd}: {e:?}");
            }
        };
        watch(ops, self.stop.event().as_raw_fd());
        if let Some(signals) = &self.signals {
            watch(ops, signals.as_raw_fd());
        }
        if let Some((timer, _)) = &self.timer {
            watch(ops, timer.as_raw_fd());
        }
    }
}

/// Runs `events` until `stop` is raised; a failing loop is itself a stop reason.
pub fn wait_for_stop(events: &mut EventManager<Box<dyn MutEventSubscriber + Send>>, stop: &StopSignal) {
    while !stop.is_stopping() {
        if let Err(e) = events.run_with_timeout(500) {
            stop.stop(StopReason::VmmFailure(format!("event loop: {e:?}")));
        }
    }
}
