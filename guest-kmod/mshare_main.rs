// SPDX-License-Identifier: GPL-2.0

//! mshare: memory regions whose page tables are shared by every process that maps them.
//!
//! msharefs regions ([`msharefs`], with the C glue `*_glue.c`, speaking the ioctl API of the
//! series' v1 or v3 per mount, [`msharefs_api`], within the mount's [`limits`]; [`region`]),
//! mapped through PTE tables shared by every process (mode B, [`shared_table`], on a kernel
//! with the core-mm patch) or through huge mappings of each process's own (mode C, any
//! kernel), the system-wide [`stats`], and a PCI driver for the VMM's ivshmem devices
//! ([`ivshmem`]).

mod calls;
mod devices;
mod devmshare;
mod file_pages;
mod inode;
mod granule;
mod ivshmem;
mod limits;
mod msharefs;
mod msharefs_api;
mod region;
mod rwsem;
mod shared_table;
mod stats;
mod syscalls;
mod uapi;
mod window;

use kernel::{driver, pci, prelude::*};

module! {
    type: Mshare,
    name: "mshare",
    authors: ["mshare-vmm developers"],
    description: "Memory regions with page tables shared between processes",
    license: "GPL",
    params: {
        selftest_write: u64 {
            default: 0,
            description: "Write this non-zero pattern at offset 0 of each writable ivshmem region at probe",
        },
        selftest_expect: u64 {
            default: 0,
            description: "At probe, wait until offset 0 of each ivshmem region holds this non-zero pattern",
        },
        shared_tables: u32 {
            default: 1,
            description: "1: share page tables between processes when the kernel can (mode B); 0: per-process huge mappings (mode C)",
        },
    },
}

/// Version reported at load time and, later, in `mshare_info`.
const VERSION: &str = "0.1.0";

/// Regions are sized and aligned in units of one PTE table's reach (512 x 4 KiB = 2 MiB
/// on x86-64), so that each granule of a region maps through exactly one shared table.
pub(crate) const GRANULE_SHIFT: u32 = 21;

/// Size of the region granule in bytes.
pub(crate) const GRANULE_SIZE: u64 = 1 << GRANULE_SHIFT;

/// Pages per granule: the entries of one PTE table.
pub(crate) const GRANULE_PAGES: usize = 1 << (GRANULE_SHIFT - kernel::page::PAGE_SHIFT as u32);

/// The largest region: 1 TiB. A region's bookkeeping (16 bytes per granule, 8 MiB here)
/// is allocated when its size is set, before any memory; larger sizes are EFBIG.
pub(crate) const MAX_REGION_SIZE: u64 = 1 << 40;

/// Rounds a requested region size up to whole granules.
///
/// Fails with `EINVAL` for an empty region and for sizes whose rounding would overflow,
/// as the size ioctls of the upstream series do.
pub(crate) fn granule_align(size: u64) -> Result<u64> {
    if size == 0 {
        return Err(EINVAL);
    }
    size.checked_add(GRANULE_SIZE - 1)
        .map(|end| end & !(GRANULE_SIZE - 1))
        .ok_or(EINVAL)
}

extern "C" {
    fn mshare_kunit_mark_skipped(reason: *const kernel::ffi::c_char);
}

/// Marks the running KUnit case skipped with `reason` (KTAP then reports `# SKIP reason`);
/// the case should return right after. Rust's KUnit has no skip of its own in this kernel.
pub(crate) fn kunit_skip(reason: &CStr) {
    // SAFETY: `reason` is a NUL-terminated string that outlives the call, which copies it.
    unsafe { mshare_kunit_mark_skipped(reason.as_char_ptr()) };
}

#[pin_data(PinnedDrop)]
struct Mshare {
    // Dropped first: no call enters the module once the rest starts going.
    syscalls: syscalls::Registration,
    msharefs: msharefs::Registration,
    #[pin]
    devmshare: kernel::miscdevice::MiscDeviceRegistration<devmshare::DevMshare>,
    #[pin]
    ivshmem: driver::Registration<pci::Adapter<ivshmem::IvshmemDriver>>,
}

impl kernel::InPlaceModule for Mshare {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        let kernel_can = shared_table::kernel_shares_tables();
        stats::set_shared_tables(kernel_can && module_parameters::shared_tables.value() != 0);
        pr_info!(
            "mshare {} loaded (granule {} KiB, {}): mode {}{}\n",
            VERSION,
            GRANULE_SIZE >> 10,
            if cfg!(MODULE) { "module" } else { "built-in" },
            stats::mode_name(),
            match (stats::shared_tables(), kernel_can) {
                (true, _) => ", page tables shared between processes",
                (false, true) => ", shared_tables=0: huge mappings per process",
                (false, false) => ", this kernel cannot share page tables (no CONFIG_SHARED_PGTABLE)",
            }
        );
        pr_info!(
            "{}\n",
            if syscalls::Registration::kernel_has_syscalls() {
                "system calls mshare_create() ... mshare_advise() (473-479) and /dev/mshare"
            } else {
                "/dev/mshare (this kernel has no mshare system calls: no CONFIG_MSHARE_SYSCALLS)"
            }
        );
        devices::init();
        try_pin_init!(Self {
            msharefs: msharefs::Registration::new()?,
            syscalls: syscalls::Registration::new()?,
            devmshare <- devmshare::DevMshare::register(),
            ivshmem <- driver::Registration::new(c"mshare-ivshmem", module),
        })
    }
}

#[pinned_drop]
impl PinnedDrop for Mshare {
    fn drop(self: Pin<&mut Self>) {
        pr_info!("mshare {} unloaded\n", VERSION);
    }
}

#[kunit_tests(mshare_granule)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_to_whole_granules() {
        assert_eq!(granule_align(1), Ok(GRANULE_SIZE));
        assert_eq!(granule_align(GRANULE_SIZE), Ok(GRANULE_SIZE));
        assert_eq!(granule_align(GRANULE_SIZE + 1), Ok(2 * GRANULE_SIZE));
        assert_eq!(granule_align(1 << 30), Ok(1 << 30));
    }

    #[test]
    fn rejects_empty_and_overflowing_sizes() {
        assert_eq!(granule_align(0), Err(EINVAL));
        assert_eq!(granule_align(u64::MAX), Err(EINVAL));
        assert_eq!(granule_align(u64::MAX - GRANULE_SIZE + 2), Err(EINVAL));
    }
}
