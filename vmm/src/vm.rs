//! One VM, built in steps: [`Vm::build`] opens KVM and makes the VM (guest memory, the
//! kernel and its command line, the legacy devices, one ivshmem device per attached
//! region), [`Vm::create_vcpus`] puts its vCPUs in their boot state, [`start_vcpus`] gives
//! each a thread, and [`Vm::finish`] stops them and says how the VM ended.

use crate::boot::{self, cmdline, long_mode};
use crate::config::{SerialTarget, VmConfig};
use crate::console::{console_prefix, console_sink, user_port_prefix};
use crate::devices::exit::{self as exit_device, ExitDevice, EXIT_PORT};
use crate::devices::i8042::{self, I8042};
use crate::devices::ivshmem::Ivshmem;
use crate::devices::pci::{self, PciBus, PciConfigIo};
use crate::devices::serial::{self, ConsoleOutput, SerialDevice};
use crate::devices::{self, PioBus};
use crate::error::{io_err, kvm_err, VmmError};
use crate::memory::{self, REGION_FIRST_SLOT};
use crate::outcome::{Outcome, RegionUse};
use crate::regions::{RegionError, RegionSpec, SharedRegion, Stage2};
use crate::shared_stage2;
use crate::signals::kick_signal;
use crate::stats::StatsFile;
use crate::stop::{StopReason, StopSignal};
use crate::symbols::Symbols;
use crate::vcpu::{self, BootState, ExitCounters, VcpuRunner};
use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

/// Where KVM puts its TSS (three pages just below the BIOS area of the 4 GiB hole).
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// Maps every region the configuration names (once each).
pub fn map_regions(specs: &[RegionSpec]) -> Result<Vec<Arc<SharedRegion>>, VmmError> {
    Ok(specs.iter().map(SharedRegion::map).collect::<Result<Vec<_>, _>>()?.into_iter().map(Arc::new).collect())
}

/// A VM made and ready for its vCPUs.
pub struct Vm {
    kvm: Kvm,
    fd: Arc<VmFd>,
    mem: GuestMemoryMmap,
    entry: GuestAddress,
    irqchip: bool,
    cpus: u8,
    memory: u64,
    software_hypervisor: bool,
    symbols: Option<Arc<Symbols>>,
    bus: Arc<PioBus>,
    pci: Arc<PciBus>,
    serial: Arc<Mutex<SerialDevice>>,
    /// COM2, when configured.
    user_port: Option<Arc<Mutex<SerialDevice>>>,
    regions: Vec<RegionUse>,
    stop: Arc<StopSignal>,
    counters: Arc<ExitCounters>,
    /// Each vCPU's KVM statistics, opened when it is created (read at the stop).
    vcpu_stats: Mutex<Vec<StatsFile>>,
}

impl Vm {
    /// Makes the VM `config` describes, its regions found by name in `shared` (one mapping
    /// serves every VM of the process); its devices stop it through `stop`.
    pub fn build(config: &VmConfig, shared: &[Arc<SharedRegion>], stop: Arc<StopSignal>) -> Result<Self, VmmError> {
        config.validate()?;
        let software_hypervisor = config.software_hypervisor.resolve();
        let kvm = open_kvm()?;
        let mem = memory::create_guest_memory(config.memory)?;
        let fd = Arc::new(create_vm(&kvm, config, &mem)?);
        let entry = load_guest(config, &mem, software_hypervisor)?;
        let symbols = match &config.system_map {
            Some(path) => {
                Some(Arc::new(Symbols::load(path).map_err(io_err(format!("System.map {}", path.display())))?))
            }
            None => Symbols::beside(&config.kernel).map(Arc::new),
        };

        let mut bus = PioBus::default();
        let console = match &config.serial {
            SerialTarget::File(path) => format!("--serial {}", path.display()),
            SerialTarget::Stdout => "the console on stdout".to_owned(),
        };
        let sink = console_sink(&config.serial, console_prefix(config.name.as_deref())).map_err(io_err(console))?;
        let serial = add_uart(&mut bus, &fd, config.irqchip, serial::COM1, ConsoleOutput::new(sink, stop.clone()))?;
        let user_port = match &config.serial2 {
            Some(target) => {
                let what = match target {
                    SerialTarget::File(path) => format!("--serial2 {}", path.display()),
                    SerialTarget::Stdout => "COM2 on stdout".to_owned(),
                };
                let sink =
                    console_sink(target, Some(user_port_prefix(config.name.as_deref()))).map_err(io_err(what))?;
                Some(add_uart(&mut bus, &fd, config.irqchip, serial::COM2, ConsoleOutput::unwatched(sink))?)
            }
            None => None,
        };
        bus.insert(i8042::DATA_PORT, i8042::PORTS_LEN, Arc::new(Mutex::new(I8042::new(stop.clone()))))?;
        bus.insert(EXIT_PORT, 1, Arc::new(Mutex::new(ExitDevice::new(stop.clone()))))?;
        let (pci, regions) = attach_regions(config, shared, &fd, &stop)?;
        let pci = Arc::new(pci);
        bus.insert(pci::CONFIG_PORT, pci::CONFIG_PORTS_LEN, Arc::new(Mutex::new(PciConfigIo::new(pci.clone()))))?;
        Ok(Self {
            kvm,
            fd,
            mem,
            entry,
            irqchip: config.irqchip,
            cpus: config.cpus,
            memory: config.memory,
            software_hypervisor,
            symbols,
            bus: Arc::new(bus),
            pci,
            serial,
            user_port,
            regions,
            stop,
            counters: Arc::new(ExitCounters::default()),
            vcpu_stats: Mutex::new(Vec::new()),
        })
    }

    /// Whether the guest got the software-hypervisor options (kvm_pvm).
    pub fn software_hypervisor(&self) -> bool {
        self.software_hypervisor
    }

    /// The guest's UART, for console input.
    pub fn serial(&self) -> &Arc<Mutex<SerialDevice>> {
        &self.serial
    }

    /// The vCPUs in their boot state, each with the run loop that will drive it.
    pub fn create_vcpus(&self) -> Result<Vec<VcpuRunner>, VmmError> {
        let supported = vcpu::supported_cpuid(&self.kvm)?;
        let boot = BootState { entry: self.entry, irqchip: self.irqchip };
        (0..self.cpus)
            .map(|id| {
                let fd = self.fd.create_vcpu(u64::from(id)).map_err(kvm_err("KVM_CREATE_VCPU"))?;
                vcpu::configure(&fd, &supported, id, self.cpus, boot)?;
                if let Some(stats) = StatsFile::open(&self.fd, &fd, "vCPU") {
                    devices::lock(&self.vcpu_stats).push(stats);
                }
                Ok(VcpuRunner {
                    vcpu: fd,
                    id,
                    bus: self.bus.clone(),
                    pci: self.pci.clone(),
                    mem: self.mem.clone(),
                    stop: self.stop.clone(),
                    counters: self.counters.clone(),
                    symbols: self.symbols.clone(),
                })
            })
            .collect()
    }

    /// Stops the vCPU `threads` and reads how the VM ended, `elapsed` after its start.
    pub fn finish(self, threads: Vec<JoinHandle<()>>, elapsed: Duration, first_run: Option<Duration>) -> Outcome {
        stop_vcpus(threads);
        let kvm_stats = crate::stats::kvm_binary_stats(self.fd.as_ref());
        let kvm_vcpu_stats = {
            let files = devices::lock(&self.vcpu_stats);
            if files.is_empty() {
                None
            } else {
                crate::stats::summed(&files)
            }
        };
        let host_memory = crate::stats::process_memory();
        if let Err(e) = devices::lock(&self.serial).flush_console() {
            log::error!("writing the guest console's last bytes: {e}");
        }
        if let Some(Err(e)) = self.user_port.as_ref().map(|port| devices::lock(port).flush_console()) {
            log::error!("writing the last bytes of the guest's COM2: {e}");
        }
        Outcome {
            reason: self.stop.reason().unwrap_or(StopReason::PowerOff),
            elapsed,
            first_run,
            counters: self.counters,
            unclaimed_ports: self.bus.unclaimed.load(std::sync::atomic::Ordering::Relaxed),
            software_hypervisor: self.software_hypervisor,
            regions: self.regions,
            kvm_stats,
            kvm_vcpu_stats,
            host_memory,
            memory: self.memory,
            cpus: self.cpus,
        }
    }
}

/// Gives each vCPU its thread; the boot vCPU records in `first_run` when it first runs,
/// counted from `start`. A thread that cannot start stops the VM (the vCPUs already
/// started must not run on without a VMM loop).
pub fn start_vcpus(
    runners: Vec<VcpuRunner>,
    stop: &StopSignal,
    first_run: &Arc<OnceLock<Duration>>,
    start: Instant,
) -> Vec<JoinHandle<()>> {
    let mut threads = Vec::new();
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
                stop.stop(StopReason::VmmFailure(format!("starting a vCPU thread: {e}")));
                break;
            }
        }
    }
    threads
}

fn open_kvm() -> Result<Kvm, VmmError> {
    Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT => VmmError::NoKvm,
        libc::EACCES | libc::EPERM => VmmError::KvmPermission,
        _ => VmmError::Kvm { what: "opening /dev/kvm", source: e },
    })
}

fn create_vm(kvm: &Kvm, config: &VmConfig, mem: &GuestMemoryMmap) -> Result<VmFd, VmmError> {
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
    if config.regions.iter().any(|(spec, _)| spec.stage2 == Stage2::Shared) && shared_stage2::supported(&vm) {
        shared_stage2::zap_only_deleted_slots(&vm).map_err(kvm_err("KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS2)"))?;
    }
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

/// A UART at `port` writing to `out`, its interrupt through an irqfd when the VM has the
/// in-kernel interrupt controller.
fn add_uart(
    bus: &mut PioBus,
    vm: &VmFd,
    irqchip: bool,
    port: serial::UartPort,
    out: ConsoleOutput,
) -> Result<Arc<Mutex<SerialDevice>>, VmmError> {
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
    if irqchip {
        vm.register_irqfd(&irq, port.irq).map_err(kvm_err("KVM_IRQFD (serial)"))?;
    }
    let uart = Arc::new(Mutex::new(SerialDevice::new(irq, out)));
    bus.insert(port.base, serial::UART_PORTS, uart.clone())?;
    Ok(uart)
}

/// Loads the kernel and initrd, builds the command line, and writes the zero page, MP table,
/// GDT and boot page tables; returns the kernel's entry point.
fn load_guest(config: &VmConfig, mem: &GuestMemoryMmap, software_hypervisor: bool) -> Result<GuestAddress, VmmError> {
    let kernel = boot::load_kernel(mem, &config.kernel)?;
    let initrd = match &config.initrd {
        Some(path) => Some(boot::load_initrd(mem, path, config.memory, kernel.end)?),
        None => None,
    };
    let parts = cmdline::CmdlineParts {
        host: software_hypervisor.then_some(cmdline::SOFTWARE_HYPERVISOR),
        user: config.cmdline.as_deref(),
        devices: [
            Some(exit_device::cmdline_word()),
            config.serial2.as_ref().map(|_| serial::USER_PORT_WORD.to_owned()),
        ]
        .into_iter()
        .flatten()
        .collect(),
        command: &config.command,
    };
    let kernel_cmdline = cmdline::build(&parts)?;
    boot::configure_system(mem, &kernel, &kernel_cmdline, initrd, config.memory, config.cpus)?;
    long_mode::write_tables(mem).map_err(VmmError::Tables)?;
    Ok(kernel.entry)
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
    let addresses = memory::pci_bar64_addresses(config.memory, &sizes)?;
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
