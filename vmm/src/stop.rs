//! Why a VM stopped, and the one-shot signal that carries it from whoever noticed (a vCPU,
//! a device, a signal handler, the timer) to the VMM's main loop.

use std::sync::Mutex;
use vmm_sys_util::eventfd::EventFd;

/// Why a VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The guest wrote its status to the exit device.
    GuestExit(u8),
    /// The guest reset the machine (i8042 reset line, or a KVM reset event).
    Reset,
    /// The guest powered off (KVM system event).
    PowerOff,
    /// The guest kernel panicked (seen on its console).
    GuestPanic(String),
    /// A vCPU halted with no interrupt controller to wake it (tiny guests).
    Halted(u8),
    /// A vCPU triple-faulted.
    TripleFault {
        /// Which vCPU.
        vcpu: u8,
        /// Register dump.
        registers: String,
    },
    /// KVM could not run or emulate something.
    InternalError {
        /// Which vCPU.
        vcpu: u8,
        /// What KVM reported, with instruction bytes and symbol where known.
        detail: String,
    },
    /// KVM_RUN itself failed, or an exit no device handles.
    VcpuFailure {
        /// Which vCPU.
        vcpu: u8,
        /// What happened.
        detail: String,
    },
    /// The VMM itself failed while the VM ran (a thread or the event loop).
    VmmFailure(String),
    /// `--timeout` expired.
    Timeout(u64),
    /// SIGINT or SIGTERM.
    Signal(i32),
}

impl StopReason {
    /// The exit status `mshare-vmm` ends with: the guest's own status, 0 for a clean reset or
    /// power-off, 124 for a timeout, 128 + signal for a signal, 125 for a guest or KVM failure.
    pub fn exit_status(&self) -> u8 {
        match self {
            Self::GuestExit(status) => *status,
            Self::Reset | Self::PowerOff => 0,
            Self::Timeout(_) => 124,
            Self::Signal(signal) => 128u8.saturating_add(u8::try_from(*signal).unwrap_or(127)),
            Self::GuestPanic(_)
            | Self::Halted(_)
            | Self::TripleFault { .. }
            | Self::InternalError { .. }
            | Self::VcpuFailure { .. }
            | Self::VmmFailure(_) => 125,
        }
    }

    /// Whether this is a failure worth reporting as an error.
    pub fn is_failure(&self) -> bool {
        self.exit_status() == 125 || matches!(self, Self::Timeout(_))
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::GuestExit(status) => write!(f, "the guest exited with status {status}"),
            Self::Reset => write!(f, "the guest reset the machine"),
            Self::PowerOff => write!(f, "the guest powered off"),
            Self::GuestPanic(line) => write!(f, "the guest kernel panicked: {line}"),
            Self::Halted(vcpu) => write!(f, "vCPU {vcpu} halted with interrupts off and no interrupt controller"),
            Self::TripleFault { vcpu, registers } => {
                write!(f, "vCPU {vcpu} triple-faulted (KVM_EXIT_SHUTDOWN)\n{registers}")
            }
            Self::InternalError { vcpu, detail } => {
                write!(f, "KVM internal error on vCPU {vcpu}: {detail}")
            }
            Self::VcpuFailure { vcpu, detail } => write!(f, "vCPU {vcpu}: {detail}"),
            Self::VmmFailure(what) => write!(f, "the VMM failed: {what}"),
            Self::Timeout(seconds) => {
                write!(f, "the guest did not finish within {seconds} s (--timeout)")
            }
            Self::Signal(signal) => write!(f, "stopped by signal {signal}"),
        }
    }
}

/// The first stop reason wins; the event wakes the main loop.
pub struct StopSignal {
    reason: Mutex<Option<StopReason>>,
    event: EventFd,
}

impl StopSignal {
    /// A signal not yet raised.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self { reason: Mutex::new(None), event: EventFd::new(libc::EFD_NONBLOCK)? })
    }

    /// Records `reason` unless one was recorded already, and wakes the main loop.
    pub fn stop(&self, reason: StopReason) {
        let mut current = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if current.is_none() {
            *current = Some(reason);
            // A full eventfd counter still wakes the reader: nothing to handle here.
            let _ = self.event.write(1);
        }
    }

    /// The recorded reason, if any.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the VM is stopping.
    pub fn is_stopping(&self) -> bool {
        self.reason().is_some()
    }

    /// The event the main loop waits on.
    pub fn event(&self) -> &EventFd {
        &self.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins() {
        let stop = StopSignal::new().unwrap();
        assert!(!stop.is_stopping());
        stop.stop(StopReason::GuestExit(7));
        stop.stop(StopReason::Reset);
        assert_eq!(stop.reason(), Some(StopReason::GuestExit(7)));
        assert_eq!(stop.event().read().unwrap(), 1);
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(StopReason::GuestExit(7).exit_status(), 7);
        assert_eq!(StopReason::Reset.exit_status(), 0);
        assert_eq!(StopReason::Timeout(5).exit_status(), 124);
        assert_eq!(StopReason::Signal(libc::SIGTERM).exit_status(), 143);
        assert_eq!(StopReason::TripleFault { vcpu: 0, registers: String::new() }.exit_status(), 125);
        assert!(StopReason::Timeout(1).is_failure());
        assert!(!StopReason::GuestExit(3).is_failure());
    }
}
