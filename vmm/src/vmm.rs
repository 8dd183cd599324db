//! One VM from start to stop: KVM, memory, the kernel, devices, vCPU threads, and the main
//! loop (event-manager) that waits for a stop reason, feeds console input and handles
//! SIGINT/SIGTERM and the timeout.

use crate::boot::{self, cmdline, long_mode};
use crate::config::{SerialTarget, VmConfig};
use crate::devices::exit::{self as exit_device, ExitDevice, EXIT_PORT};
use crate::devices::i8042::{self, I8042};
use crate::devices::ivshmem::{Ivshmem, IvshmemCounters, MemslotError};
use crate::devices::pci::{self, PciBus, PciConfigIo};
use crate::devices::serial::{self, ConsoleOutput, SerialDevice};
use crate::devices::{self, BusOverlap, PioBus};
use crate::memory;
use crate::regions::{RegionError, RegionSpec, SharedRegion};
use crate::stop::{StopReason, StopSignal};
use crate::symbols::Symbols;
use crate::vcpu::{self, BootState, ExitCounters, VcpuRunner};
use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

/// Where KVM puts its TSS (three pages just below the BIOS area of the 4 GiB hole).
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// Errors that keep a VM from starting.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// /dev/kvm missing.
    #[error(
        "/dev/kvm does not exist: this host has no KVM (load kvm_intel or kvm_amd, or enable nested virtualization)"
    )]
    NoKvm,
    /// /dev/kvm not accessible.
    #[error("/dev/kvm: permission denied (run as root or add your user to the kvm group)")]
    KvmPermission,
    /// Any other KVM failure.
    #[error("{what}: {source}")]
    Kvm {
        /// Which step.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// A capability the VMM needs is missing.
    #[error("this host's KVM lacks {0:?}, which mshare-vmm needs")]
    MissingCap(Cap),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// Kernel, initrd, zero page.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// Command line.
    #[error(transparent)]
    Cmdline(#[from] cmdline::CmdlineError),
    /// Writing the boot page tables and GDT.
    #[error("writing the boot GDT and page tables: {0}")]
    Tables(vm_memory::GuestMemoryError),
    /// vCPU setup.
    #[error(transparent)]
    Vcpu(#[from] vcpu::VcpuError),
    /// Devices.
    #[error(transparent)]
    Bus(#[from] BusOverlap),
    /// Shared regions.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// A region's memslot.
    #[error(transparent)]
    Memslot(#[from] MemslotError),
    /// Too many devices.
    #[error("{0} regions attached: the PCI bus has room for {max}", max = pci::SLOTS - 1)]
    TooManyRegions(usize),
    /// Host resources (files, eventfds, threads, epoll).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The event loop.
    #[error("event loop: {0:?}")]
    EventManager(event_manager::Error),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::Kvm { what, source }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> VmmError {
    let what = what.into();
    move |source| VmmError::Io { what, source }
}

/// [`io_err`] for the errno errors of vmm-sys-util.
fn errno_err(what: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> VmmError {
    move |e| io_err(what)(e.into())
}

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

/// Maps every region the configuration names (once each).
pub fn map_regions(specs: &[RegionSpec]) -> Result<Vec<Arc<SharedRegion>>, VmmError> {
    Ok(specs.iter().map(SharedRegion::map).collect::<Result<Vec<_>, _>>()?.into_iter().map(Arc::new).collect())
}

fn open_kvm() -> Result<Kvm, VmmError> {
    Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT => VmmError::NoKvm,
        libc::EACCES | libc::EPERM => VmmError::KvmPermission,
        _ => VmmError::Kvm { what: "opening /dev/kvm", source: e },
    })
}

fn create_vm(kvm: &Kvm, config: &VmConfig, mem: &vm_memory::GuestMemoryMmap) -> Result<VmFd, VmmError> {
    for cap in [Cap::UserMemory, Cap::Irqchip, Cap::Irqfd, Cap::Pit2] {
        if !kvm.check_extension(cap) {
            return Err(VmmError::MissingCap(cap));
        }
    }
    if config.regions.iter().any(|(_, attach)| attach.read_only) && !kvm.check_extension(Cap::ReadonlyMem) {
        return Err(VmmError::MissingCap(Cap::ReadonlyMem));
    }
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    vm.set_tss_address(KVM_TSS_ADDRESS).map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    if config.irqchip {
        vm.create_irq_chip().map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
        vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
    }
    for (slot, region) in mem.iter().enumerate() {
        let host = mem.get_host_address(region.start_addr()).map_err(VmmError::Tables)?;
        let memslot = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the host range is guest RAM mapped by `mem`; every vCPU runner holds a clone
        // of `mem`, so the mapping outlives any vCPU that can still enter the guest (even one
        // `stop_vcpus` had to leave behind), and slots do not overlap.
        unsafe { vm.set_user_memory_region(memslot) }.map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(vm)
}

/// Console output sink for the configured target; on stdout, lines of a named VM (in a
/// fleet) start with `[name] `.
fn console_sink(target: &SerialTarget, name: Option<&str>) -> Result<Box<dyn Write + Send>, VmmError> {
    Ok(match target {
        SerialTarget::Stdout => match name {
            Some(name) => Box::new(LinePrefix { prefix: format!("[{name}] "), line: Vec::new(), out: io::stdout() }),
            None => Box::new(io::stdout()),
        },
        SerialTarget::File(path) => {
            Box::new(File::create(path).map_err(io_err(format!("--serial {}", path.display())))?)
        }
    })
}

/// Writes whole lines, each starting with `prefix`, so that the consoles of several VMs
/// sharing stdout interleave by line, not by byte.
struct LinePrefix<W: Write> {
    prefix: String,
    line: Vec<u8>,
    out: W,
}

impl<W: Write> LinePrefix<W> {
    fn emit(&mut self) -> io::Result<()> {
        let mut whole = Vec::with_capacity(self.prefix.len() + self.line.len());
        whole.extend_from_slice(self.prefix.as_bytes());
        whole.append(&mut self.line);
        self.out.write_all(&whole)
    }
}

impl<W: Write> Write for LinePrefix<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            self.line.push(b);
            if b == b'\n' {
                self.emit()?;
            }
        }
        Ok(buf.len())
    }

    /// Flushes whole lines only: the UART flushes after every byte, and a partial line
    /// written then would be cut in pieces. What is left is written when the console goes.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> Drop for LinePrefix<W> {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.line.push(b'\n');
            let _ = self.emit();
        }
        let _ = self.out.flush();
    }
}

/// Puts a terminal stdin in non-canonical, no-echo mode (keys reach the guest as typed;
/// Ctrl-C still signals the VMM) and restores it when dropped.
struct TerminalGuard {
    saved: libc::termios,
}

impl TerminalGuard {
    fn new() -> Option<Self> {
        let fd = libc::STDIN_FILENO;
        // SAFETY: isatty only inspects the fd.
        if unsafe { libc::isatty(fd) } != 1 {
            return None;
        }
        // SAFETY: termios is plain data; tcgetattr fills it for a valid tty fd.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO);
        // SAFETY: `raw` is a valid termios derived from the current one.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            log::warn!(
                "console input: cannot switch the terminal to raw mode ({}); keys reach the guest a line at a time",
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(Self { saved })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        // SAFETY: restores the termios read from this fd in `new`.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) } != 0 {
            log::error!(
                "restoring the terminal: {} (run `stty sane` if it stays without echo)",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it starts) and returns a
/// signalfd that receives them.
pub fn signal_fd() -> Result<OwnedFd, VmmError> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; these calls only edit it and this thread's mask.
    let fd = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
    };
    if fd < 0 {
        return Err(VmmError::Io { what: "signalfd".into(), source: io::Error::last_os_error() });
    }
    // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one signal number from a signalfd.
pub fn read_signal(signals: &OwnedFd) -> Option<i32> {
    let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
    let n = File::from(signals.try_clone().ok()?).read(&mut info).ok()?;
    (n == info.len()).then(|| u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32)
}

/// Unblocks SIGINT/SIGTERM again (after the VM is done).
pub fn unblock_signals() {
    // SAFETY: as in `signal_fd`, on a local sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// The main loop's events: stop requests, SIGINT/SIGTERM, the timeout.
struct Control {
    stop: Arc<StopSignal>,
    signals: Option<OwnedFd>,
    timer: Option<(TimerFd, u64)>,
}

impl MutEventSubscriber for Control {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.stop.event().as_raw_fd() {
            let _ = self.stop.event().read();
        } else if let Some(signals) = self.signals.as_ref().filter(|s| s.as_raw_fd() == fd) {
            if let Some(signo) = read_signal(signals) {
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

/// Host stdin to the guest's UART.
struct ConsoleInput {
    serial: Arc<Mutex<SerialDevice>>,
    /// Whether input that did not fit in the UART's FIFO was reported (once per VM).
    warned: bool,
}

impl MutEventSubscriber for ConsoleInput {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        // SAFETY: reading into a local buffer from stdin, which this subscriber watches.
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            // EOF or error: stop watching stdin, the guest keeps running.
            let _ = ops.remove(events);
            return;
        }
        let typed = &buf[..n as usize];
        let taken = devices::lock(&self.serial).enqueue_input(typed).unwrap_or(0);
        if taken < typed.len() {
            // The guest is not reading its UART (its 64-byte FIFO is full): say so, once.
            if !self.warned {
                self.warned = true;
                log::warn!("console input: the guest's UART FIFO is full; dropping what does not fit");
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(event_manager::Events::new_raw(libc::STDIN_FILENO, event_manager::EventSet::IN));
    }
}

/// Kick signal for vCPU threads: it interrupts KVM_RUN so the thread sees the stop.
fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn noop_signal_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

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
    config.validate()?;
    let software_hypervisor = config.software_hypervisor.resolve();
    let kvm = open_kvm()?;
    let mem = memory::create_guest_memory(config.memory)?;
    let vm = Arc::new(create_vm(&kvm, config, &mem)?);

    let kernel = boot::load_kernel(&mem, &config.kernel)?;
    let initrd = match &config.initrd {
        Some(path) => Some(boot::load_initrd(&mem, path, config.memory, kernel.end)?),
        None => None,
    };
    let parts = cmdline::CmdlineParts {
        host: software_hypervisor.then_some(cmdline::SOFTWARE_HYPERVISOR),
        user: config.cmdline.as_deref(),
        devices: vec![exit_device::cmdline_word()],
        command: &config.command,
    };
    let kernel_cmdline = cmdline::build(&parts)?;
    boot::configure_system(&mem, &kernel, &kernel_cmdline, initrd, config.memory, config.cpus)?;
    long_mode::write_tables(&mem).map_err(VmmError::Tables)?;
    let symbols = match &config.system_map {
        Some(path) => Some(Arc::new(Symbols::load(path).map_err(io_err(format!("System.map {}", path.display())))?)),
        None => Symbols::beside(&config.kernel).map(Arc::new),
    };

    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
    if config.irqchip {
        vm.register_irqfd(&serial_irq, serial::COM1_IRQ).map_err(kvm_err("KVM_IRQFD (serial)"))?;
    }
    let serial_device = Arc::new(Mutex::new(SerialDevice::new(
        serial_irq,
        ConsoleOutput::new(console_sink(&config.serial, config.name.as_deref())?, stop.clone()),
    )));
    let mut bus = PioBus::default();
    bus.insert(serial::COM1_BASE, serial::COM1_LEN, serial_device.clone())?;
    bus.insert(i8042::DATA_PORT, i8042::PORTS_LEN, Arc::new(Mutex::new(I8042::new(stop.clone()))))?;
    bus.insert(EXIT_PORT, 1, Arc::new(Mutex::new(ExitDevice::new(stop.clone()))))?;
    let (pci_bus, regions) = attach_regions(config, shared, &vm, &stop)?;
    let pci_bus = Arc::new(pci_bus);
    bus.insert(pci::CONFIG_PORT, pci::CONFIG_PORTS_LEN, Arc::new(Mutex::new(PciConfigIo::new(pci_bus.clone()))))?;
    let bus = Arc::new(bus);

    let signals = if own_signals { Some(signal_fd()?) } else { None };
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

    let supported = vcpu::supported_cpuid(&kvm)?;
    let counters = Arc::new(ExitCounters::default());
    let first_run = Arc::new(std::sync::OnceLock::new());
    let mut runners = Vec::new();
    for id in 0..config.cpus {
        let fd = vm.create_vcpu(u64::from(id)).map_err(kvm_err("KVM_CREATE_VCPU"))?;
        vcpu::configure(&fd, &supported, id, config.cpus, BootState { entry: kernel.entry, irqchip: config.irqchip })?;
        runners.push(VcpuRunner {
            vcpu: fd,
            id,
            bus: bus.clone(),
            pci: pci_bus.clone(),
            mem: mem.clone(),
            stop: stop.clone(),
            counters: counters.clone(),
            symbols: symbols.clone(),
        });
    }

    if software_hypervisor {
        log::info!(
            "this host's KVM is a software hypervisor (kvm_pvm): added guest options '{}'",
            cmdline::SOFTWARE_HYPERVISOR
        );
    }
    let _terminal = (own_signals && config.serial == SerialTarget::Stdout).then(TerminalGuard::new).flatten();
    let mut events: EventManager<Box<dyn MutEventSubscriber + Send>> =
        EventManager::new().map_err(VmmError::EventManager)?;
    events.add_subscriber(Box::new(Control { stop: stop.clone(), signals, timer }));
    if config.serial == SerialTarget::Stdout && _terminal.is_some() {
        events.add_subscriber(Box::new(ConsoleInput { serial: serial_device.clone(), warned: false }));
    }

    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for runner in runners {
        let first_run = first_run.clone();
        let handle = std::thread::Builder::new().name(format!("vcpu{}", runner.id)).spawn(move || {
            if runner.id == 0 {
                let _ = first_run.set(start.elapsed());
            }
            runner.run();
        });
        match handle {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                // The vCPUs already started must not run on without a VMM loop.
                stop.stop(StopReason::VmmFailure(format!("starting a vCPU thread: {e}")));
                break;
            }
        }
    }

    while !stop.is_stopping() {
        if let Err(e) = events.run_with_timeout(500) {
            stop.stop(StopReason::VmmFailure(format!("event loop: {e:?}")));
        }
    }
    let elapsed = start.elapsed();
    stop_vcpus(threads);
    let kvm_stats = crate::stats::kvm_binary_stats(vm.as_ref());
    let host_memory = crate::stats::process_memory();
    if own_signals {
        unblock_signals();
    }
    if let Err(e) = devices::lock(&serial_device).flush_console() {
        log::error!("writing the guest console's last bytes: {e}");
    }
    let reason = stop.reason().unwrap_or(StopReason::PowerOff);
    Ok(Outcome {
        reason,
        elapsed,
        first_run: first_run.get().copied(),
        counters,
        unclaimed_ports: bus.unclaimed.load(std::sync::atomic::Ordering::Relaxed),
        software_hypervisor,
        regions,
        kvm_stats,
        host_memory,
        memory: config.memory,
        cpus: config.cpus,
    })
}

/// One ivshmem device per attached region on a fresh PCI bus, BARs above guest RAM.
fn attach_regions(
    config: &VmConfig,
    shared: &[Arc<SharedRegion>],
    vm: &Arc<VmFd>,
    stop: &Arc<StopSignal>,
) -> Result<(PciBus, Vec<RegionUse>), VmmError> {
    if config.regions.len() >= pci::SLOTS {
        return Err(VmmError::TooManyRegions(config.regions.len()));
    }
    let mut pci_bus = PciBus::new();
    let mut uses = Vec::new();
    let regions: Vec<(Arc<SharedRegion>, bool)> = config
        .regions
        .iter()
        .map(|(spec, attach)| {
            let region = shared.iter().find(|r| r.spec.name == attach.region).cloned();
            region.map(|r| (r, attach.read_only)).ok_or_else(|| RegionError::Invalid {
                name: spec.name.clone(),
                problem: "attached but not mapped".into(),
            })
        })
        .collect::<Result<_, _>>()?;
    let sizes: Vec<u64> = regions.iter().map(|(r, _)| r.size()).collect();
    let addresses = memory::pci_bar64_addresses(config.memory, &sizes);
    for (i, ((region, read_only), addr)) in regions.into_iter().zip(addresses).enumerate() {
        let slot = REGION_FIRST_SLOT + i as u32;
        let registers = memory::pci_registers_address(i + 1);
        let device = Ivshmem::new(region.clone(), read_only, vm.clone(), slot, registers, addr, stop.clone())?;
        log::info!(
            "region '{}' ({} MiB{}) at {addr:#x} as PCI 00:{:02x}.0",
            region.spec.name,
            region.size() >> 20,
            if read_only { ", read-only" } else { "" },
            i + 1
        );
        let counters = device.counters.clone();
        pci_bus.add(Arc::new(Mutex::new(device))).ok_or(VmmError::TooManyRegions(config.regions.len()))?;
        uses.push(RegionUse { name: region.spec.name.clone(), size: region.size(), read_only, counters });
    }
    Ok((pci_bus, uses))
}

/// Memslots of regions come after the (at most two) RAM slots.
pub const REGION_FIRST_SLOT: u32 = 2;

/// Kicks every vCPU thread out of KVM_RUN until it has seen the stop and ended.
fn stop_vcpus(threads: Vec<JoinHandle<()>>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for handle in threads {
        while !handle.is_finished() && Instant::now() < deadline {
            // SAFETY: the thread is alive (not finished) and its pthread handle valid while
            // we hold the JoinHandle; the signal has a no-op handler.
            unsafe { libc::pthread_kill(handle.as_pthread_t(), kick_signal()) };
            std::thread::sleep(Duration::from_millis(5));
        }
        if handle.is_finished() {
            let _ = handle.join();
        } else {
            log::warn!("a vCPU thread did not stop within 5 s; leaving it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_console_writes_whole_lines() {
        let sink = crate::devices::serial::Shared::default();
        let text = || String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let mut console = LinePrefix { prefix: "[a] ".into(), line: Vec::new(), out: sink.clone() };
        // The UART flushes after every byte.
        for b in b"hello\nwor" {
            console.write_all(&[*b]).unwrap();
            console.flush().unwrap();
        }
        assert_eq!(text(), "[a] hello\n", "a partial line waits for its end");
        drop(console);
        assert_eq!(text(), "[a] hello\n[a] wor\n", "what is left is written at the end");
    }
}
