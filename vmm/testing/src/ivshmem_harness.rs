//! Test support shared by the seeded randomized tests (`vmm/tests/input_fuzz.rs`, stable,
//! every `cargo test`) and the cargo-fuzz targets (`vmm/fuzz`, nightly, coverage-guided):
//! one harness and two sources of bytes, so that both kinds of run reach the same code and
//! make the same checks, and a failure of one replays in the other. Not part of the VMM's
//! interface (hidden from its docs); a failed check panics, saying what broke, after which
//! step, and in what state the devices were.
//!
//! [`IvshmemHarness`] is the guest's view of the ivshmem devices: a real KVM VM (no vCPU is
//! needed: what is under test is the VMM's side) with a RAM memslot at guest-physical 0 and
//! two [`Ivshmem`] devices of different sizes, one read-only, placed the way the VMM places
//! them, on a [`PciBus`] behind the configuration ports. The input drives them as a guest
//! can: configuration-port accesses aimed at their command and BAR registers (size probes,
//! BAR2 moved over RAM, onto the other device, past what KVM accepts, decoding turned off
//! and on) and MMIO through the bus. After every step the memslot bookkeeping is checked
//! against what the guest programmed and against KVM itself, which has the last word:
//! a spare memslot registered over a mapped BAR2 must be refused (the slot is there),
//! deleting the slot of an unmapped BAR2 must find nothing (the slot is gone), and a range
//! a BAR2 moved away from must be free again.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Cap, Kvm, VmFd};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use vm_memory::mmap::MmapRegion;
use vmm::devices::ivshmem::{self, Ivshmem};
use vmm::devices::pci::{PciBus, PciConfigIo, PciDevice, COMMAND_MEMORY, REG_BAR0, REG_COMMAND};
use vmm::devices::{lock, PioDevice};
use vmm::memory;
use vmm::memory::REGION_FIRST_SLOT;
use vmm::regions::{RegionSpec, SharedRegion};
use vmm::stop::{StopReason, StopSignal};

/// Bytes per operation of an [`IvshmemHarness`] input; a shorter tail is ignored.
pub const OP_LEN: usize = 8;
/// Guest RAM of the harness VM, at guest-physical 0 (enough to move a BAR2 over it).
pub const RAM_SIZE: u64 = 16 << 20;
/// The regions behind the two devices: different BAR sizes, the second attached read-only.
const REGIONS: [&str; 2] = ["name=fuzz-rw,size=2M", "name=fuzz-ro,size=4M,ro"];
const RAM_SLOT: u32 = 0;
/// A memslot no device uses, registered only to ask KVM whether a range is free.
const PROBE_SLOT: u32 = REGION_FIRST_SLOT + 8;
const PAGE: u64 = 4096;
const BAR0_SIZE: u64 = ivshmem::REGISTERS_SIZE as u64;
const REG_BAR2: usize = REG_BAR0 + 2;
const REG_BAR2_HIGH: usize = REG_BAR0 + 3;
/// Bits of each register the guest may change (the rest must keep their value): command,
/// cache line and latency, BAR0, BAR2 and interrupt line. Everything else is read-only.
const WRITABLE: [(usize, u32); 6] =
    [(1, 0xffff), (3, 0xffff), (REG_BAR0, !0), (REG_BAR2, !0), (REG_BAR2_HIGH, !0), (15, 0xff)];

/// A KVM VM with RAM and the two regions, reused across inputs: each [`run`](Self::run)
/// creates the devices afresh and checks, after dropping them, that their memslots are gone.
pub struct IvshmemHarness {
    // Declared before `ram`, so the VM (and its memslots) goes first.
    vm: Arc<VmFd>,
    ram: MmapRegion,
    regions: Vec<(Arc<SharedRegion>, bool)>,
    /// End (exclusive) of the guest-physical addresses KVM accepts in a memslot.
    gpa_end: u64,
}

impl IvshmemHarness {
    /// The VM, its RAM slot and the two regions; fails without a usable /dev/kvm.
    pub fn new() -> Result<Self, String> {
        let kvm = Kvm::new().map_err(|e| format!("opening /dev/kvm: {e}"))?;
        if !kvm.check_extension(Cap::ReadonlyMem) {
            return Err("KVM has no KVM_CAP_READONLY_MEM, which the read-only region needs".into());
        }
        let vm = Arc::new(kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?);
        let ram = MmapRegion::new(RAM_SIZE as usize).map_err(|e| format!("mapping guest RAM: {e}"))?;
        let regions = REGIONS
            .iter()
            .map(|flag| {
                let (spec, attach) = RegionSpec::parse_flag(flag).map_err(|e| e.to_string())?;
                Ok((Arc::new(SharedRegion::map(&spec).map_err(|e| e.to_string())?), attach.read_only))
            })
            .collect::<Result<_, String>>()?;
        let mut harness = Self { vm, ram, regions, gpa_end: 0 };
        harness.set_slot(RAM_SLOT, 0, RAM_SIZE, 0).map_err(|e| format!("registering guest RAM: {e}"))?;
        harness.gpa_end = harness.measure_gpa_end()?;
        Ok(harness)
    }

    /// End (exclusive) of the guest-physical addresses KVM accepts in a memslot, found once
    /// by bisection with the probe slot, so that a refusal there is told from an overlap.
    pub fn gpa_end(&self) -> u64 {
        self.gpa_end
    }

    fn measure_gpa_end(&self) -> Result<u64, String> {
        // Pages: `low` is accepted, `high` is not (the last page of 2^64 always wraps).
        let (mut low, mut high) = (RAM_SIZE / PAGE, (u64::MAX / PAGE));
        if !self.try_free(low * PAGE, PAGE)? {
            return Err(format!("KVM refuses a page-sized memslot at {RAM_SIZE:#x}, just above RAM"));
        }
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if self.try_free(mid * PAGE, PAGE)? {
                low = mid;
            } else {
                high = mid;
            }
        }
        Ok((low + 1) * PAGE)
    }

    /// Registers (or, with `size` 0, deletes) memslot `slot` over the harness's RAM mapping.
    fn set_slot(&self, slot: u32, addr: u64, size: u64, flags: u32) -> Result<(), kvm_ioctls::Error> {
        debug_assert!(size <= RAM_SIZE);
        let memslot = kvm_userspace_memory_region {
            slot,
            flags,
            guest_phys_addr: addr,
            memory_size: size,
            userspace_addr: self.ram.as_ptr() as u64,
        };
        // SAFETY: the host range is inside the harness's RAM mapping (sizes never exceed it),
        // which is dropped after the VM and so outlives every memslot; no vCPU ever runs.
        unsafe { self.vm.set_user_memory_region(memslot) }
    }

    /// Whether KVM accepts the probe slot at `addr..addr + size`; removes it again.
    fn try_free(&self, addr: u64, size: u64) -> Result<bool, String> {
        if self.set_slot(PROBE_SLOT, addr, size, 0).is_err() {
            return Ok(false);
        }
        self.set_slot(PROBE_SLOT, addr, 0, 0).map_err(|e| format!("deleting the probe memslot at {addr:#x}: {e}"))?;
        Ok(true)
    }

    /// Runs one input: fresh devices at the VMM's placement, the input's operations with the
    /// checks after every step, then the devices dropped and their memslots checked gone.
    /// Ends early, as the VM would, when a device stops it. Panics when a check fails.
    pub fn run(&self, data: &[u8]) {
        let mut run = Run::new(self);
        if run.check().is_ok() {
            for (index, op) in data.chunks_exact(OP_LEN).enumerate() {
                run.op = Some(index);
                if run.apply(op).is_err() {
                    break;
                }
            }
        }
        run.finish();
    }
}

/// The VM stopped: the input ends here.
struct Stopped;

/// What the last step did, for failure messages.
#[derive(Debug, Clone, Copy)]
enum Step {
    Setup,
    Port { write: bool, offset: u16, len: usize, value: u32 },
    Config { slot: u32, reg: usize, offset: usize, len: usize, value: u32 },
    MmioRead { addr: u64, len: usize },
    MmioWrite { addr: u64, len: usize },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Setup => write!(f, "the devices' creation"),
            Self::Port { write: true, offset, len, value } => {
                write!(f, "a {len}-byte write of {value:#x} to port {:#x}", 0xcf8 + offset)
            }
            Self::Port { write: false, offset, len, .. } => {
                write!(f, "a {len}-byte read of port {:#x}", 0xcf8 + offset)
            }
            Self::Config { slot, reg, offset, len, value } => {
                write!(f, "a {len}-byte config write of {value:#x} to 00:{slot:02x}.0 register {reg} byte {offset}")
            }
            Self::MmioRead { addr, len } => write!(f, "a {len}-byte MMIO read at {addr:#x}"),
            Self::MmioWrite { addr, len } => write!(f, "a {len}-byte MMIO write at {addr:#x}"),
        }
    }
}

/// One device and what the checks last saw of it.
struct Device {
    ivshmem: Arc<Mutex<Ivshmem>>,
    name: String,
    size: u64,
    read_only: bool,
    memslot: u32,
    pci_slot: u32,
    /// Registers (index, read-only bits, value) as created.
    fixed: Vec<(usize, u32, u32)>,
    /// BAR2's memslot after the previous step.
    mapped: Option<u64>,
    /// The memslot map counter after the previous step.
    maps: u64,
}

/// A device's state now, read under its lock (checked after it is released).
struct Now {
    command: u32,
    bar0: u32,
    bar2: u64,
    bar2_flags: u32,
    probing: bool,
    want: Option<u64>,
    mapped: Option<u64>,
    counted: Option<u64>,
    maps: u64,
    changed: Option<(usize, u32, u32)>,
}

impl Device {
    fn now(&self) -> Now {
        let device = lock(&self.ivshmem);
        let config = device.config();
        let probing = config.bar_probing(2);
        let decoding = config.memory_enabled();
        Now {
            command: config.read(REG_COMMAND),
            bar0: config.read(REG_BAR0),
            bar2: config.bar_address(2),
            bar2_flags: config.read(REG_BAR2) & 0xf,
            probing,
            want: (decoding && !probing).then(|| config.bar_address(2)),
            mapped: device.mapped_at(),
            counted: device.counters.mapped_at(),
            maps: device.counters.memslot_maps.load(Ordering::Relaxed),
            changed: self
                .fixed
                .iter()
                .find(|(reg, mask, value)| config.read(*reg) & mask != *value)
                .map(|&(reg, mask, value)| (reg, value, config.read(reg) & mask)),
        }
    }

    fn bar(&self, index: usize) -> (u64, u64) {
        let device = lock(&self.ivshmem);
        let size = if index == 0 { BAR0_SIZE } else { self.size };
        (device.config().bar_address(index), size)
    }

    fn read_only_writes(&self) -> u64 {
        lock(&self.ivshmem).counters.read_only_writes.load(Ordering::Relaxed)
    }
}

fn describe(mapped: Option<u64>) -> String {
    mapped.map_or("not mapped".into(), |addr| format!("mapped at {addr:#x}"))
}

fn overlaps(a: u64, a_size: u64, b: u64, b_size: u64) -> bool {
    // Ends computed in u128: a BAR near the top of the address space wraps in u64.
    u128::from(a) < u128::from(b) + u128::from(b_size) && u128::from(b) < u128::from(a) + u128::from(a_size)
}

fn latch(slot: u32, reg: usize) -> u32 {
    0x8000_0000 | slot << 11 | (reg as u32) << 2
}

/// One input's devices, bus and progress.
struct Run<'h> {
    harness: &'h IvshmemHarness,
    stop: Arc<StopSignal>,
    devices: Vec<Device>,
    bus: Arc<PciBus>,
    io: PciConfigIo,
    op: Option<usize>,
    step: Step,
}

impl<'h> Run<'h> {
    fn new(harness: &'h IvshmemHarness) -> Self {
        let stop = Arc::new(StopSignal::new().expect("an eventfd for the stop signal"));
        let sizes: Vec<u64> = harness.regions.iter().map(|(r, _)| r.size()).collect();
        let addresses = memory::pci_bar64_addresses(RAM_SIZE, &sizes).expect("BAR placement for the harness");
        let mut bus = PciBus::new();
        let mut devices = Vec::new();
        for (i, ((region, read_only), addr)) in harness.regions.iter().zip(addresses).enumerate() {
            let memslot = REGION_FIRST_SLOT + i as u32;
            let registers = memory::pci_registers_address(i + 1);
            let ivshmem =
                Ivshmem::new(region.clone(), *read_only, harness.vm.clone(), memslot, registers, addr, stop.clone())
                    .unwrap_or_else(|e| panic!("creating the device of region '{}': {e}", region.spec.name));
            let config = ivshmem.config();
            let fixed = (0..64)
                .map(|reg| {
                    let writable = WRITABLE.iter().find(|(r, _)| *r == reg).map_or(0, |(_, bits)| *bits);
                    (reg, !writable, config.read(reg) & !writable)
                })
                .filter(|(_, mask, _)| *mask != 0)
                .collect();
            let ivshmem = Arc::new(Mutex::new(ivshmem));
            let pci_slot = bus.add(ivshmem.clone()).expect("room on the bus") as u32;
            devices.push(Device {
                ivshmem,
                name: region.spec.name.clone(),
                size: region.size(),
                read_only: *read_only,
                memslot,
                pci_slot,
                fixed,
                mapped: None,
                maps: 0,
            });
        }
        let bus = Arc::new(bus);
        let io = PciConfigIo::new(bus.clone());
        Self { harness, stop, devices, bus, io, op: None, step: Step::Setup }
    }

    /// Panics with `what`, the step and the devices' state.
    fn fail(&self, what: String) -> ! {
        let mut state = String::new();
        for d in &self.devices {
            let now = d.now();
            state += &format!(
                "\n  region '{}' ({} MiB{}, 00:{:02x}.0, memslot {}): command {:#06x}, BAR0 {:#x}, BAR2 {:#x}{}, {}",
                d.name,
                d.size >> 20,
                if d.read_only { ", read-only" } else { "" },
                d.pci_slot,
                d.memslot,
                now.command & 0xffff,
                now.bar0,
                now.bar2,
                if now.probing { " (size probe)" } else { "" },
                describe(now.mapped),
            );
        }
        let op = self.op.map_or("before the first operation".into(), |i| format!("in operation {i}"));
        panic!("{what}\n  {op}, after {}; RAM is 0..{RAM_SIZE:#x}{state}", self.step);
    }

    fn apply(&mut self, op: &[u8]) -> Result<(), Stopped> {
        let value = u32::from_le_bytes([op[4], op[5], op[6], op[7]]);
        let dev = usize::from(op[1] & 1);
        match op[0] % 8 {
            0 => self.port_access(op, value),
            1 => {
                // Any register of a device at any width, mostly the command and BAR registers.
                let reg = match (op[1] >> 1) % 8 {
                    0 => REG_COMMAND,
                    1 => REG_BAR0,
                    2 | 3 => REG_BAR2,
                    4 | 5 => REG_BAR2_HIGH,
                    6 => 15,
                    _ => usize::from(op[2] % 64),
                };
                let (offset, len) = match op[3] % 4 {
                    0 => (0, 4),
                    1 => (usize::from(op[3] >> 2 & 2), 2),
                    _ => (usize::from(op[3] >> 2 & 3), 1),
                };
                // Random high halves put BAR2 past what KVM accepts, which stops the VM and
                // ends the input: mostly keep BAR2 below 64 GiB.
                let (offset, len, value) = if reg == REG_BAR2_HIGH && op[3] & 0xc0 != 0xc0 {
                    (0, 4, value % 16)
                } else {
                    (offset, len, value)
                };
                let slot = self.devices[dev].pci_slot;
                self.config_write(slot, reg, offset, &value.to_le_bytes()[..len])
            }
            2 => {
                let command = value & 0x0545 | if op[1] & 2 != 0 { COMMAND_MEMORY } else { 0 };
                self.config_write32(dev, REG_COMMAND, command)
            }
            3 => self.size_probe(dev, op[2]),
            4 => {
                let target = self.target_address(dev, op[2], op[3], value);
                self.move_bar2(dev, target, op[1])
            }
            5 => self.mmio(dev, false, op, value),
            6 => self.mmio(dev, true, op, value),
            _ => {
                self.config_read(op);
                Ok(())
            }
        }
    }

    /// A raw access to the configuration ports at offsets 0-9 (a little past the eight):
    /// partial latch writes, odd widths, other slots, the host bridge.
    fn port_access(&mut self, op: &[u8], value: u32) -> Result<(), Stopped> {
        let offset = u16::from(op[1] % 10);
        let len = usize::from(op[2] & 7).min(4);
        let mut data = value.to_le_bytes();
        let write = op[2] & 0x80 != 0;
        self.step = Step::Port { write, offset, len, value };
        if write {
            self.io.write(offset, &data[..len]);
            self.check()
        } else {
            self.io.read(offset, &mut data[..len]);
            self.check_config();
            Ok(())
        }
    }

    fn config_write(&mut self, slot: u32, reg: usize, offset: usize, data: &[u8]) -> Result<(), Stopped> {
        self.io.write(0, &latch(slot, reg).to_le_bytes());
        self.io.write(4 + offset as u16, data);
        let mut value = [0u8; 4];
        value[..data.len()].copy_from_slice(data);
        self.step = Step::Config { slot, reg, offset, len: data.len(), value: u32::from_le_bytes(value) };
        self.check()
    }

    fn config_write32(&mut self, dev: usize, reg: usize, value: u32) -> Result<(), Stopped> {
        let slot = self.devices[dev].pci_slot;
        self.config_write(slot, reg, 0, &value.to_le_bytes())
    }

    fn read32(&mut self, slot: u32, reg: usize) -> u32 {
        self.io.write(0, &latch(slot, reg).to_le_bytes());
        let mut data = [0u8; 4];
        self.io.read(4, &mut data);
        u32::from_le_bytes(data)
    }

    fn command(&self, dev: usize) -> u32 {
        lock(&self.devices[dev].ivshmem).config().read(REG_COMMAND) & 0xffff
    }

    fn decode(&mut self, dev: usize, on: bool) -> Result<(), Stopped> {
        let command = self.command(dev) & !COMMAND_MEMORY | if on { COMMAND_MEMORY } else { 0 };
        self.config_write32(dev, REG_COMMAND, command)
    }

    /// BAR sizing as firmware and Linux do it, in the order and with the restoring and
    /// re-enabling that `flags` picks; the size masks read back must be the BAR's size.
    fn size_probe(&mut self, dev: usize, flags: u8) -> Result<(), Stopped> {
        let slot = self.devices[dev].pci_slot;
        let regs: &[(usize, u32)] = if flags & 0x10 != 0 {
            &[(REG_BAR0, !(BAR0_SIZE as u32 - 1))]
        } else {
            &[(REG_BAR2, !(self.devices[dev].size as u32 - 1) | 0xc), (REG_BAR2_HIGH, !0)]
        };
        let saved: Vec<u32> = regs.iter().map(|(reg, _)| self.read32(slot, *reg)).collect();
        if flags & 1 != 0 {
            self.decode(dev, false)?;
        }
        // Left unrestored, BAR2 holds its mask, which KVM refuses once decoding is on: rare.
        let restore = flags & 0x24 != 0x24;
        let linux_order = flags & 2 == 0;
        for (i, &(reg, mask)) in regs.iter().enumerate() {
            self.config_write32(dev, reg, !0)?;
            let read = self.read32(slot, reg);
            if read != mask {
                self.fail(format!("sizing register {reg} read back {read:#010x}, not the size mask {mask:#010x}"));
            }
            if restore && linux_order {
                self.config_write32(dev, reg, saved[i])?;
            }
        }
        if restore && !linux_order {
            for (i, &(reg, _)) in regs.iter().enumerate().rev() {
                self.config_write32(dev, reg, saved[i])?;
            }
        }
        if flags & 8 != 0 {
            self.decode(dev, true)?;
        }
        Ok(())
    }

    /// Where to move device `dev`'s BAR2 (aligned to its size): over RAM, on or next to the
    /// other device's BAR2, where the VMM places BARs, anywhere below 4 GiB, far up, or
    /// straddling the end of what KVM accepts.
    fn target_address(&self, dev: usize, choice: u8, shift: u8, value: u32) -> u64 {
        let size = self.devices[dev].size;
        let v = u64::from(value);
        let (other, _) = self.devices[1 - dev].bar(2);
        let step = |base: u64, steps: u64| base.wrapping_add(steps.wrapping_mul(size)).wrapping_sub(2 * size);
        // Mostly places that work, so that inputs run on after the move.
        let addr = match choice % 16 {
            0 => v % (RAM_SIZE / size) * size,
            1 => step(other, v % 5),
            2 => other,
            3 | 4 => v,
            5 => v << (shift % 48) | v,
            6 => step(self.harness.gpa_end, v % 4 + 1),
            _ => RAM_SIZE + v % 16 * size,
        };
        addr & !(size - 1)
    }

    /// Moves BAR2 as a guest does: decoding off or left on, halves in either order,
    /// decoding on after (or not), each write a step of its own.
    fn move_bar2(&mut self, dev: usize, target: u64, flags: u8) -> Result<(), Stopped> {
        if flags & 2 != 0 {
            self.decode(dev, false)?;
        }
        let halves = [(REG_BAR2, target as u32), (REG_BAR2_HIGH, (target >> 32) as u32)];
        let order: [usize; 2] = if flags & 4 != 0 { [1, 0] } else { [0, 1] };
        for i in order {
            self.config_write32(dev, halves[i].0, halves[i].1)?;
        }
        let (now, _) = self.devices[dev].bar(2);
        if now != target {
            self.fail(format!("BAR2 holds {now:#x} after both halves were written with {target:#x}"));
        }
        if flags & 8 != 0 {
            self.decode(dev, true)?;
        }
        Ok(())
    }

    /// An MMIO access through the bus near a device's BAR0 or BAR2 (or anywhere): BAR0 is
    /// claimed and reads as zeros wherever a decoding device has it; writes to the read-only
    /// device's BAR2 are claimed, dropped and counted; nothing else is claimed.
    fn mmio(&mut self, dev: usize, write: bool, op: &[u8], value: u32) -> Result<(), Stopped> {
        let len = [1, 2, 4, 8][usize::from(op[2] % 4)];
        let addr = if op[2] & 0x80 != 0 {
            u64::from(value) | u64::from(op[3]) << 32
        } else {
            let (base, size) = self.devices[dev].bar(if op[1] & 2 != 0 { 2 } else { 0 });
            base.wrapping_add(u64::from(value) % (size + 2 * BAR0_SIZE)).wrapping_sub(BAR0_SIZE)
        };
        // Bus order: the first device that decodes the address claims it.
        let claimant = self.devices.iter().enumerate().find_map(|(i, d)| {
            let now = d.now();
            if now.command & COMMAND_MEMORY == 0 {
                return None;
            }
            if overlaps(addr, 1, u64::from(now.bar0), BAR0_SIZE) {
                return Some((i, 0));
            }
            (write && d.read_only && overlaps(addr, 1, now.bar2, d.size)).then_some((i, 2))
        });
        let counts: Vec<u64> = self.devices.iter().map(Device::read_only_writes).collect();
        let mut data = [0xa5u8; 8];
        let claimed = if write {
            self.step = Step::MmioWrite { addr, len };
            self.bus.mmio_write(addr, &data[..len])
        } else {
            self.step = Step::MmioRead { addr, len };
            self.bus.mmio_read(addr, &mut data[..len])
        };
        if claimed != claimant.is_some() {
            let who = claimant.map_or("no device".into(), |(i, bar)| format!("BAR{bar} of '{}'", self.devices[i].name));
            self.fail(format!("the bus {} the access; {who} decodes it", if claimed { "claimed" } else { "left" }));
        }
        if !write && claimed && data[..len].iter().any(|b| *b != 0) {
            self.fail(format!("BAR0 read gave {:x?}, not zeros", &data[..len]));
        }
        if !write && !claimed && data[..len].iter().any(|b| *b != 0xa5) {
            self.fail("an MMIO read nobody claimed changed the buffer".into());
        }
        for (i, d) in self.devices.iter().enumerate() {
            let counted = d.read_only_writes() - counts[i];
            let expected = u64::from(claimant == Some((i, 2)));
            if counted != expected {
                self.fail(format!("region '{}' counted {counted} dropped read-only writes, not {expected}", d.name));
            }
        }
        self.check()
    }

    /// A 32-bit configuration read: a device reads as its registers, the host bridge as
    /// itself, empty slots as all ones.
    fn config_read(&mut self, op: &[u8]) {
        let reg = usize::from(op[2] % 64);
        let slot = match op[1] % 4 {
            0 => 0,
            1 | 2 => self.devices[usize::from(op[1] & 1)].pci_slot,
            _ => 3 + u32::from(op[1] >> 2) % 29,
        };
        let read = self.read32(slot, reg);
        let expected = match self.devices.iter().find(|d| d.pci_slot == slot) {
            Some(d) => lock(&d.ivshmem).config().read(reg),
            None if slot == 0 && reg == 0 => 0x0d57_8086,
            None if slot == 0 => read,
            None => !0,
        };
        self.step = Step::Port { write: false, offset: 4, len: 4, value: latch(slot, reg) };
        if read != expected {
            self.fail(format!(
                "00:{slot:02x}.0 register {reg} read {read:#010x} through the ports, not {expected:#010x}"
            ));
        }
        self.check_config();
    }

    /// Configuration space alone: read-only registers keep their value, BAR2 stays 64-bit
    /// prefetchable and both BARs aligned to their size.
    fn check_config(&self) -> Vec<Now> {
        let nows: Vec<Now> = self.devices.iter().map(Device::now).collect();
        for (d, now) in self.devices.iter().zip(&nows) {
            if let Some((reg, was, is)) = now.changed {
                self.fail(format!(
                    "region '{}': read-only bits of register {reg} changed from {was:#x} to {is:#x}",
                    d.name
                ));
            }
            if now.bar2_flags != 0xc {
                self.fail(format!(
                    "region '{}': BAR2 type bits are {:#x}, not 64-bit prefetchable",
                    d.name, now.bar2_flags
                ));
            }
            if now.bar2 % d.size != 0 || u64::from(now.bar0) % BAR0_SIZE != 0 {
                self.fail(format!("region '{}': a BAR is not aligned to its size", d.name));
            }
        }
        nows
    }

    /// Everything, after a step that may have moved a memslot.
    fn check(&mut self) -> Result<(), Stopped> {
        let nows = self.check_config();
        for (d, now) in self.devices.iter().zip(&nows) {
            if now.counted != now.mapped {
                self.fail(format!(
                    "region '{}': the counters say BAR2 is {}, the device says {}",
                    d.name,
                    describe(now.counted),
                    describe(now.mapped)
                ));
            }
            let expected = d.maps + u64::from(now.mapped.is_some() && now.mapped != d.mapped);
            if now.maps != expected {
                self.fail(format!("region '{}': {} memslot maps counted, {expected} made", d.name, now.maps));
            }
        }
        if let Some(reason) = self.stop.reason() {
            self.check_stop(&nows, &reason);
            return Err(Stopped);
        }
        for (d, now) in self.devices.iter().zip(&nows) {
            if now.mapped != now.want {
                self.fail(format!(
                    "region '{}': the guest programmed BAR2 {} but the device has it {}",
                    d.name,
                    now.want
                        .map_or("not decoding (memory decode off, or a size probe)".into(), |a| format!("at {a:#x}")),
                    describe(now.mapped)
                ));
            }
        }
        self.check_placement(&nows);
        self.check_kvm(&nows);
        for (d, now) in self.devices.iter_mut().zip(&nows) {
            d.mapped = now.mapped;
            d.maps = now.maps;
        }
        Ok(())
    }

    /// No mapped BAR2 over RAM, over the other's, or past what KVM accepts.
    fn check_placement(&self, nows: &[Now]) {
        for (i, (d, now)) in self.devices.iter().zip(nows).enumerate() {
            let Some(addr) = now.mapped else { continue };
            if overlaps(addr, d.size, 0, RAM_SIZE) {
                self.fail(format!("region '{}': BAR2 is mapped at {addr:#x}, over RAM", d.name));
            }
            if u128::from(addr) + u128::from(d.size) > u128::from(self.harness.gpa_end) {
                self.fail(format!("region '{}': BAR2 is mapped at {addr:#x}, past KVM's address space", d.name));
            }
            for (other, other_now) in self.devices.iter().zip(nows).skip(i + 1) {
                if other_now.mapped.is_some_and(|b| overlaps(addr, d.size, b, other.size)) {
                    self.fail(format!("regions '{}' and '{}' have overlapping BAR2 memslots", d.name, other.name));
                }
            }
        }
    }

    /// KVM agrees: a mapped BAR2's range is taken, an unmapped device's memslot does not
    /// exist, and a range a BAR2 left is free unless something else is mapped there.
    fn check_kvm(&self, nows: &[Now]) {
        for (d, now) in self.devices.iter().zip(nows) {
            match now.mapped {
                Some(addr) => self.expect_taken(d, addr),
                None => self.expect_no_slot(d, "BAR2 is not mapped"),
            }
            let Some(old) = d.mapped.filter(|old| now.mapped != Some(*old)) else { continue };
            let still_used = overlaps(old, d.size, 0, RAM_SIZE)
                || self
                    .devices
                    .iter()
                    .zip(nows)
                    .any(|(e, n)| n.mapped.is_some_and(|b| overlaps(old, d.size, b, e.size)));
            if !still_used {
                self.expect_free(d, old);
            }
        }
    }

    /// The VM stopped: a device could not map BAR2 where the guest put it, and the place
    /// really was taken (RAM, the other's slot) or beyond KVM's address space.
    fn check_stop(&self, nows: &[Now], reason: &StopReason) {
        let StopReason::VmmFailure(message) = reason else {
            self.fail(format!("the VM stopped for something no device reports: {reason}"));
        };
        let refused: Vec<usize> =
            (0..nows.len()).filter(|&i| nows[i].want.is_some() && nows[i].mapped.is_none()).collect();
        let [culprit] = refused[..] else {
            self.fail(format!(
                "the VM stopped, yet {} devices (not one) have BAR2 decoding but unmapped: {message}",
                refused.len()
            ));
        };
        let (d, addr) = (&self.devices[culprit], nows[culprit].want.unwrap_or_default());
        if !message.contains(&format!("region '{}'", d.name)) {
            self.fail(format!("the stop reason does not name region '{}': {message}", d.name));
        }
        let over_ram = overlaps(addr, d.size, 0, RAM_SIZE);
        let over_other = self
            .devices
            .iter()
            .zip(nows)
            .any(|(e, n)| e.memslot != d.memslot && n.mapped.is_some_and(|b| overlaps(addr, d.size, b, e.size)));
        let beyond = u128::from(addr) + u128::from(d.size) > u128::from(self.harness.gpa_end);
        if !(over_ram || over_other || beyond) {
            self.fail(format!(
                "KVM refused region '{}' at {addr:#x}, a free range below {:#x}: {message}",
                d.name, self.harness.gpa_end
            ));
        }
        for (i, (e, n)) in self.devices.iter().zip(nows).enumerate() {
            if i != culprit && n.mapped != n.want {
                self.fail(format!("region '{}' lost track of its BAR2 when the VM stopped", e.name));
            }
        }
        self.expect_no_slot(d, "its move was refused");
    }

    fn expect_taken(&self, d: &Device, addr: u64) {
        match self.harness.set_slot(PROBE_SLOT, addr, d.size, 0) {
            Err(e) if e.errno() == libc::EEXIST => {}
            Ok(()) => {
                let _ = self.harness.set_slot(PROBE_SLOT, addr, 0, 0);
                self.fail(format!(
                    "region '{}': the device says BAR2 is mapped at {addr:#x}, but KVM has no memslot there",
                    d.name
                ));
            }
            Err(e) => self.fail(format!("region '{}': probing KVM at {addr:#x}: {e}", d.name)),
        }
    }

    fn expect_free(&self, d: &Device, addr: u64) {
        match self.harness.set_slot(PROBE_SLOT, addr, d.size, 0) {
            Ok(()) => {
                if let Err(e) = self.harness.set_slot(PROBE_SLOT, addr, 0, 0) {
                    self.fail(format!("deleting the probe memslot at {addr:#x}: {e}"));
                }
            }
            Err(e) if e.errno() == libc::EEXIST => self.fail(format!(
                "region '{}': BAR2 left {addr:#x}, yet KVM still has a memslot there (a removed slot not removed)",
                d.name
            )),
            Err(e) => self.fail(format!("region '{}': probing KVM at {addr:#x}, which BAR2 left: {e}", d.name)),
        }
    }

    /// Deleting the device's memslot must find nothing (KVM says EINVAL for a slot that
    /// does not exist); if it found one, that slot leaked, and is gone now.
    fn expect_no_slot(&self, d: &Device, why: &str) {
        match self.harness.set_slot(d.memslot, 0, 0, 0) {
            Err(e) if e.errno() == libc::EINVAL => {}
            Ok(()) => self.fail(format!(
                "region '{}': {why}, yet KVM still had its memslot {} (a removed slot not removed)",
                d.name, d.memslot
            )),
            Err(e) => self.fail(format!("region '{}': deleting memslot {}: {e}", d.name, d.memslot)),
        }
    }

    /// Drops the devices (as the VMM does when the VM ends): their memslots must go too.
    fn finish(self) {
        let Run { harness, devices, bus, io, op, step, .. } = self;
        drop(io);
        drop(bus);
        let mut gone = Vec::new();
        for d in devices {
            let Device { ivshmem, name, memslot, .. } = d;
            let device = Arc::into_inner(ivshmem).expect("the harness holds the last reference to the device");
            drop(device);
            gone.push((name, memslot));
        }
        let ops = op.map_or(0, |i| i + 1);
        for (name, memslot) in gone {
            match harness.set_slot(memslot, 0, 0, 0) {
                Err(e) if e.errno() == libc::EINVAL => {}
                Ok(()) => panic!(
                    "region '{name}': memslot {memslot} outlived its device (dropped after {ops} operations, \
                     the last step {step}): KVM still had it"
                ),
                Err(e) => panic!("region '{name}': deleting memslot {memslot} after dropping its device: {e}"),
            }
        }
    }
}
