// SPDX-License-Identifier: GPL-2.0

//! mshare: memory regions whose page tables are shared by every process that maps them.
//!
//! This is the module's skeleton: it loads, reports its version and the region granule,
//! and unloads. msharefs, /dev/mshare and the shared page tables build on it.

use kernel::prelude::*;

module! {
    type: Mshare,
    name: "mshare",
    authors: ["mshare-vmm developers"],
    description: "Memory regions with page tables shared between processes",
    license: "GPL",
}

/// Version reported at load time and, later, in `mshare_info`.
const VERSION: &str = "0.1.0";

/// Regions are sized and aligned in units of one PTE table's reach (512 x 4 KiB = 2 MiB
/// on x86-64), so that each granule of a region maps through exactly one shared table.
const GRANULE_SHIFT: u32 = 21;

/// Size of the region granule in bytes.
const GRANULE_SIZE: u64 = 1 << GRANULE_SHIFT;

/// Rounds a requested region size up to whole granules.
///
/// Fails with `EINVAL` for an empty region and for sizes whose rounding would overflow,
/// as the size ioctls of the upstream series do.
fn granule_align(size: u64) -> Result<u64> {
    if size == 0 {
        return Err(EINVAL);
    }
    size.checked_add(GRANULE_SIZE - 1)
        .map(|end| end & !(GRANULE_SIZE - 1))
        .ok_or(EINVAL)
}

struct Mshare;

impl kernel::Module for Mshare {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!(
            "mshare {} loaded (granule {} KiB, {})\n",
            VERSION,
            GRANULE_SIZE >> 10,
            if cfg!(MODULE) { "module" } else { "built-in" }
        );
        Ok(Mshare)
    }
}

impl Drop for Mshare {
    fn drop(&mut self) {
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
