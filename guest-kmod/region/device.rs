// SPDX-License-Identifier: GPL-2.0

//! A device region: the BAR2 of an ivshmem device (`ivshmem.rs` binds it), its size and
//! memory the device's, fixed, never freed here, read-only when the VMM attached it so.
//!
//! It lives as long as its last user: the driver and each msharefs inode made for it hold
//! a reference ([`kernel::sync::Arc`]), and the region lists those inodes, one per
//! msharefs instance that shows it, so that taking access away reaches every process
//! ([`Region::zap`]). When the device unbinds, the region is *unplugged*: it keeps no
//! memory (faults are SIGBUS, calls ENODEV, as on a DRM device that went away) and every
//! process's mapping of the device's memory is removed first.

use super::{Contents, Kind, Region};
use crate::granule::Memory;
use crate::inode::Inode;
use crate::shared_table::SharedTables;
use crate::{GRANULE_PAGES, GRANULE_SIZE};
use kernel::prelude::*;

impl Region {
    /// A region over a device's memory: `size` bytes (whole granules) of page frames from
    /// `first_pfn` on, mapped for the kernel at `base` (0: not mapped).
    pub(crate) fn device(
        size: u64,
        first_pfn: usize,
        read_only: bool,
        base: usize,
    ) -> Result<impl PinInit<Self>> {
        if size == 0 || size % GRANULE_SIZE != 0 {
            return Err(EINVAL);
        }
        let granules = usize::try_from(size / GRANULE_SIZE).map_err(|_| EINVAL)?;
        let mut memory = KVVec::with_capacity(granules, GFP_KERNEL)?;
        for i in 0..granules {
            memory.push(Memory::device(first_pfn + i * GRANULE_PAGES), GFP_KERNEL)?;
        }
        let contents = Contents {
            size,
            start: 0,
            memory,
            // A device's memory has no struct pages: special entries, which GUP refuses.
            tables: SharedTables::new(granules, true)?,
            writable: !read_only,
            unplugged: false,
        };
        Ok(Self::with(Kind::Device { read_only, base }, contents))
    }

    /// An msharefs inode now shows this device region.
    pub(crate) fn inode_attached(&self, inode: Inode) -> Result {
        self.inodes.lock().push(inode, GFP_KERNEL)?;
        Ok(())
    }

    /// An inode of this device region was evicted.
    pub(crate) fn inode_evicted(&self, inode: Inode) {
        self.inodes.lock().retain(|x| *x != inode);
    }

    /// The device went away: the region keeps no memory, its shared tables are emptied,
    /// and every process's mapping of it is removed. Faults then find nothing (SIGBUS),
    /// calls are ENODEV.
    pub(crate) fn unplug(&self) {
        let mut contents = self.contents.write();
        contents.unplugged = true;
        // A device's memory is not freed by being dropped: what takes it from the
        // processes is the zap below, which no fault can undo while this holds the memory
        // lock.
        for i in 0..contents.memory.len() {
            drop(contents.empty_granule(i));
        }
        if let Err(e) = self.zap(0, contents.size) {
            pr_err!("mshare: unplugging a device region of {} bytes: {:?}\n", contents.size, e);
        }
    }

    /// ENODEV once the device behind the region went away.
    pub(crate) fn check_present(&self) -> Result {
        self.contents.read().check_present()
    }
}

#[kunit_tests(mshare_device_region)]
mod tests {
    use super::*;
    use crate::region::Page;

    /// An unplugged device region maps nothing: faults find nothing (SIGBUS), new windows
    /// and tables are ENODEV. The page frames are made up: nothing here touches them.
    #[test]
    fn an_unplugged_device_region_maps_nothing() {
        let g = GRANULE_SIZE;
        let init = Region::device(2 * g, 0x40000, false, 0).expect("device region");
        let region = KBox::pin_init(init, GFP_KERNEL).expect("region");
        assert_eq!(region.page(GRANULE_PAGES + 3), Page::Frame(0x40000 + GRANULE_PAGES + 3));
        assert_eq!(region.check_present(), Ok(()));
        region.unplug();
        assert_eq!(region.page(GRANULE_PAGES + 3), Page::Outside);
        assert_eq!(region.page(0), Page::Outside);
        assert_eq!(region.table(0).err(), Some(ENODEV));
        assert_eq!(region.window(false, false).err(), Some(ENODEV));
        assert_eq!(region.pmd_table(0).err(), Some(ENODEV));
        assert_eq!(region.check_present(), Err(ENODEV));
        assert_eq!(region.stats().backed, 0);
    }

}
