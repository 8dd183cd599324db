//! An ivshmem-plain compatible PCI device (QEMU's `ivshmem-plain`, vendor 0x1af4, device
//! 0x1110, revision 1, class 0x0500): BAR0 holds the 256-byte register block (no doorbell:
//! reads are zero), BAR2 is the shared region, 64-bit prefetchable, backed by a KVM memslot
//! that points at the VMM's one mapping of the region, so guest accesses never exit.
//!
//! The region's name reaches the guest in a vendor-specific capability (ID 0x09):
//! `[0x09, next, length, 'M', 'S', version 1, flags, name bytes..., 0]`, flags bit 0 set
//! when the VM attached the region read-only (`mshare_uapi::formats::ivshmem_capability`,
//! the layout the guest programs read). QEMU's devices have no such capability, and guest
//! drivers treat its absence as "unnamed".
//!
//! The memslot follows the BAR: when the guest turns memory decoding off, sizes the BAR or
//! moves it, the slot is removed or re-registered at the new address.

use crate::devices::pci::{CapabilityError, ConfigSpace, PciDevice};
use crate::regions::{SharedRegion, Stage2};
use crate::shared_stage2;
use crate::stop::{StopReason, StopSignal};
use kvm_bindings::{kvm_userspace_memory_region, kvm_userspace_memory_region2, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use mshare_uapi::formats::ivshmem_capability as capability;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Size of the BAR0 register block.
pub const REGISTERS_SIZE: u32 = 0x100;

/// Counters of one device, shared with the VMM's stats.
#[derive(Debug)]
pub struct IvshmemCounters {
    /// Guest writes to a read-only region (dropped).
    pub read_only_writes: AtomicU64,
    /// Times the memslot was (re)registered.
    pub memslot_maps: AtomicU64,
    /// Where BAR2's memslot is now ([`NOT_MAPPED`] while decoding is off).
    pub guest_address: AtomicU64,
}

/// [`IvshmemCounters::guest_address`] when BAR2 is not mapped.
pub const NOT_MAPPED: u64 = u64::MAX;

impl Default for IvshmemCounters {
    fn default() -> Self {
        Self {
            read_only_writes: AtomicU64::new(0),
            memslot_maps: AtomicU64::new(0),
            guest_address: AtomicU64::new(NOT_MAPPED),
        }
    }
}

impl IvshmemCounters {
    /// BAR2's current guest-physical address, if mapped.
    pub fn mapped_at(&self) -> Option<u64> {
        Some(self.guest_address.load(Ordering::Relaxed)).filter(|a| *a != NOT_MAPPED)
    }
}

/// Errors making an ivshmem device.
#[derive(Debug, thiserror::Error)]
pub enum IvshmemError {
    #[error(transparent)]
    Memslot(#[from] MemslotError),
    #[error("region '{region}': its capability: {source}")]
    Capability { region: String, source: CapabilityError },
}

/// Errors registering BAR2's memslot.
#[derive(Debug, thiserror::Error)]
#[error("region '{region}': registering memslot {slot} at {addr:#x}: {source}{}", hint.unwrap_or_default())]
pub struct MemslotError {
    region: String,
    slot: u32,
    addr: u64,
    source: kvm_ioctls::Error,
    /// What to do about it, where the cause is known.
    hint: Option<&'static str>,
}

const NO_SHARED_STAGE2: &str = "; stage2=shared needs a host kernel whose KVM shares stage-2 tables \
    (KVM_CAP_SHARED_STAGE2: this project's host kernel patch, docs/regions.md); use stage2=private here";
const SHARED_STAGE2_REFUSED: &str = "; KVM refused the shared stage-2 slot: the region must be a multiple \
    of 2 MiB at a 2 MiB-aligned address, its memory pinnable (memfd, hugetlbfs, tmpfs), and the VM an \
    ordinary one on AMD NPT; the slot pins the region, which counts against RLIMIT_MEMLOCK (ENOMEM: raise \
    `ulimit -l` to the regions' size, or give the VMM CAP_IPC_LOCK) (docs/regions.md)";

/// The ivshmem device of one region in one VM.
pub struct Ivshmem {
    config: ConfigSpace,
    region: Arc<SharedRegion>,
    read_only: bool,
    vm: Arc<VmFd>,
    slot: u32,
    mapped_at: Option<u64>,
    /// Counters.
    pub counters: Arc<IvshmemCounters>,
    /// Stops the VM when the memslot cannot follow the guest's BAR.
    stop: Arc<StopSignal>,
}

/// An ivshmem-plain device's configuration space before firmware places it: its IDs,
/// BAR0 (registers) and a 64-bit prefetchable BAR2 of `region_size` bytes.
pub fn config_space(region_size: u64) -> ConfigSpace {
    let mut config = ConfigSpace::new(capability::VENDOR_ID, capability::DEVICE_ID, 0x05, 0x00, 1);
    config.add_bar32(0, REGISTERS_SIZE);
    config.add_bar64(2, region_size, true);
    config
}

impl Ivshmem {
    /// The device for `region`, with BAR0 at `registers_addr` and BAR2 at `region_addr`
    /// (as firmware would program them), its memslot `slot` registered in `vm`. A memslot
    /// that cannot follow the guest's BAR later stops the VM through `stop`.
    pub fn new(
        region: Arc<SharedRegion>,
        read_only: bool,
        vm: Arc<VmFd>,
        slot: u32,
        registers_addr: u32,
        region_addr: u64,
        stop: Arc<StopSignal>,
    ) -> Result<Self, IvshmemError> {
        if region.spec.stage2 == Stage2::Shared && !shared_stage2::supported(&vm) {
            return Err(MemslotError {
                region: region.spec.name.clone(),
                slot,
                addr: region_addr,
                source: kvm_ioctls::Error::new(libc::EOPNOTSUPP),
                hint: Some(NO_SHARED_STAGE2),
            }
            .into());
        }
        let mut config = config_space(region.size());
        config.set_bar_address(0, u64::from(registers_addr));
        config.set_bar_address(2, region_addr);
        config
            .add_capability(capability::CAP_ID, &capability::body(&region.spec.name, read_only))
            .map_err(|source| IvshmemError::Capability { region: region.spec.name.clone(), source })?;
        config.enable_memory();
        let mut device = Self {
            config,
            region,
            read_only,
            vm,
            slot,
            mapped_at: None,
            counters: Arc::new(IvshmemCounters::default()),
            stop,
        };
        device.sync_memslot()?;
        Ok(device)
    }

    /// Where BAR2's memslot is now, if decoding.
    pub fn mapped_at(&self) -> Option<u64> {
        self.mapped_at
    }

    fn set_memslot(&self, addr: u64, size: u64) -> Result<(), MemslotError> {
        let shared_stage2 = self.region.spec.stage2 == Stage2::Shared;
        let mut flags = if self.read_only && size != 0 { KVM_MEM_READONLY } else { 0 };
        if shared_stage2 && size != 0 {
            flags |= shared_stage2::KVM_MEM_SHARED_STAGE2;
        }
        let memslot = kvm_userspace_memory_region2 {
            slot: self.slot,
            flags,
            guest_phys_addr: addr,
            memory_size: size,
            userspace_addr: self.region.host_address() as u64,
            ..Default::default()
        };
        let result = if shared_stage2 {
            // SAFETY: the host range is the region's mapping, which the device holds (Arc)
            // for as long as the slot can exist: the slot is removed in Drop. A size of 0
            // deletes it.
            unsafe { self.vm.set_user_memory_region2(memslot) }
        } else {
            let v1 = kvm_userspace_memory_region {
                slot: memslot.slot,
                flags: memslot.flags,
                guest_phys_addr: memslot.guest_phys_addr,
                memory_size: memslot.memory_size,
                userspace_addr: memslot.userspace_addr,
            };
            // SAFETY: as above.
            unsafe { self.vm.set_user_memory_region(v1) }
        };
        result.map_err(|source| MemslotError {
            region: self.region.spec.name.clone(),
            slot: self.slot,
            addr,
            hint: (shared_stage2 && size != 0).then_some(SHARED_STAGE2_REFUSED),
            source,
        })
    }

    /// Registers, moves or removes BAR2's memslot to match what the guest programmed.
    pub fn sync_memslot(&mut self) -> Result<(), MemslotError> {
        let want = (self.config.memory_enabled() && !self.config.bar_probing(2)).then(|| self.config.bar_address(2));
        if want == self.mapped_at {
            return Ok(());
        }
        if let Some(old) = self.mapped_at {
            // Forgotten only once KVM has let go of it, so Drop still removes it otherwise.
            self.set_memslot(old, 0)?;
            self.mapped_at = None;
            self.counters.guest_address.store(NOT_MAPPED, Ordering::Relaxed);
        }
        if let Some(addr) = want {
            self.set_memslot(addr, self.region.size())?;
            self.counters.memslot_maps.fetch_add(1, Ordering::Relaxed);
            self.counters.guest_address.store(addr, Ordering::Relaxed);
            self.mapped_at = Some(addr);
        }
        Ok(())
    }

    fn in_bar(&self, index: usize, addr: u64) -> bool {
        let (Some(bar), true) = (self.config.bar(index), self.config.memory_enabled()) else { return false };
        let base = self.config.bar_address(index);
        addr >= base && addr - base < bar.size
    }
}

impl PciDevice for Ivshmem {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn config_written(&mut self, _reg: usize) {
        // Real hardware would decode the BAR wherever the guest put it; this VMM cannot
        // (KVM refused the memslot, e.g. over RAM or another slot). Running on with the
        // region silently unmapped would lose the guest's data: stop the VM, saying why.
        if let Err(e) = self.sync_memslot() {
            self.stop.stop(StopReason::VmmFailure(format!(
                "{e}: the guest moved the region's BAR where KVM cannot map it (over RAM or another region?)"
            )));
        }
    }

    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        if self.in_bar(0, addr) {
            // IntrMask, IntrStatus, IVPosition: zero for ivshmem-plain.
            data.fill(0);
            return true;
        }
        false
    }

    fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool {
        if self.in_bar(0, addr) {
            return true;
        }
        if self.read_only && self.in_bar(2, addr) {
            let n = self.counters.read_only_writes.fetch_add(1, Ordering::Relaxed);
            if n < 10 || n.is_power_of_two() {
                log::warn!(
                    "region '{}' is read-only in this VM: dropped a {}-byte guest write at offset {:#x} ({} so far)",
                    self.region.spec.name,
                    data.len(),
                    addr - self.config.bar_address(2),
                    n + 1
                );
            }
            return true;
        }
        false
    }
}

impl Drop for Ivshmem {
    fn drop(&mut self) {
        if let Some(addr) = self.mapped_at.take() {
            let _ = self.set_memslot(addr, 0);
        }
    }
}
