// SPDX-License-Identifier: GPL-2.0

//! A region's protection: whether processes may write, the same for every process.
//! `MSHAREFS_SET_PROT` changes it for all of them at once: the shared tables are rewritten
//! and every process's mappings removed, flushing their TLBs. Windows with mappings of
//! their own (mode C) are mapped read-only until a write asks `page_mkwrite` (or
//! `pfn_mkwrite`), which answers from the protection; a device the VMM attached read-only
//! can never be made writable. A window asking for write access to a
//! region that does not allow it is refused, and only windows asking for all of the
//! region's protection share its tables: a read-only window of a writable region keeps
//! mappings of its own, with its own protection.

use super::{Contents, Kind, Region};
use crate::stats;
use crate::window::Window;
use kernel::prelude::*;

impl Region {
    /// Sets the region's protection for every process sharing its tables: EINVAL before a
    /// size, EACCES for write access to a device attached read-only. The tables are
    /// rewritten, then every process's links removed whatever the outcome (the rewrite may
    /// fail half-way), all under the memory lock as for [`Region::unmap`].
    pub(crate) fn set_prot(&self, writable: bool) -> Result {
        let mut contents = self.contents.write();
        if contents.size == 0 {
            return Err(EINVAL);
        }
        if writable && self.read_only() {
            return Err(EACCES);
        }
        contents.writable = writable;
        // Every granule with memory under a PMD table got its PTE table, if it needs one,
        // when the PMD table was made: this allocates nothing.
        let rewritten = (0..contents.memory.len()).try_for_each(|i| contents.sync(i));
        // Windows with mappings of their own (mode C, read-only windows) let the core make
        // an entry writable after `page_mkwrite` checked the protection, holding the page's
        // folio lock: wait for those, so that the zap finds what they map.
        contents.memory.iter_mut().for_each(crate::granule::Memory::settle);
        let zapped = self.zap(0, contents.size);
        rewritten.and(zapped)
    }

    /// Whether processes may never write (the VMM attached it read-only).
    pub(crate) fn read_only(&self) -> bool {
        matches!(self.kind, Kind::Device { read_only: true, .. })
    }

    /// Whether processes may write now.
    pub(crate) fn writable(&self) -> bool {
        self.contents.read().writable
    }

    /// Whether the kernel may write to the region for a process (write(2)): EPERM on a
    /// device attached read-only, EACCES while the region is read-only (`SET_PROT`).
    pub(super) fn check_write(&self, contents: &Contents) -> Result {
        if self.read_only() {
            return Err(EPERM);
        }
        if !contents.writable {
            return Err(EACCES);
        }
        Ok(())
    }

    /// How a new window that asks for write access (`write`) or not maps the region, or
    /// why it may not: EACCES for write access to a region that does not allow it, ENODEV
    /// once its device went away. A shared window also shares PMD tables when
    /// `pmd_tables` (it spans whole, aligned GiBs: [`crate::window::spans_pmd_tables`]).
    pub(crate) fn window(&self, write: bool, pmd_tables: bool) -> Result<Window> {
        let contents = self.contents.read();
        contents.check_present()?;
        if write && !contents.writable {
            return Err(EACCES);
        }
        // A shared table carries the region's protection, so only windows asking for all
        // of it share: read-only windows of a writable region keep their own mappings.
        if stats::shared_tables() && write != self.read_only() {
            Ok(if pmd_tables { Window::SharedPmd } else { Window::Shared })
        } else {
            Ok(Window::Private)
        }
    }
}

#[kunit_tests(mshare_protection)]
mod tests {
    use super::*;
    use crate::GRANULE_SIZE;
    use kernel::bindings;

    /// A device attached read-only is never writable, whoever asks: SET_PROT, a window,
    /// write(2). The page frames are made up: nothing here touches them.
    #[test]
    fn a_read_only_device_region_refuses_every_write() {
        let init = Region::device(2 * GRANULE_SIZE, 0x40000, true, 0).expect("device region");
        let region = KBox::pin_init(init, GFP_KERNEL).expect("region");
        assert!(region.read_only() && !region.writable());
        assert_eq!(region.set_prot(true), Err(EACCES));
        assert_eq!(region.set_prot(false), Ok(()));
        assert_eq!(region.window(true, false).err(), Some(EACCES));
        assert!(region.window(false, false).is_ok());
        assert_eq!(region.write_at(0, &[1, 2, 3]), Err(EPERM));
    }

    /// SET_PROT takes write access away from new windows and write(2), and gives it back.
    #[test]
    fn set_prot_reaches_windows_and_writes() {
        let region = KBox::pin_init(Region::new(None), GFP_KERNEL).expect("region");
        assert_eq!(region.set_prot(false), Err(EINVAL));
        assert_eq!(region.set_size(2 * GRANULE_SIZE, None, 1 << 47), Ok(2 * GRANULE_SIZE));
        assert_eq!(region.create_mapping(0, GRANULE_SIZE), Ok(()));
        assert_eq!(region.set_prot(false), Ok(()));
        assert_eq!(region.window(true, false).err(), Some(EACCES));
        assert_eq!(region.write_at(0, &[1, 2, 3]), Err(EACCES));
        assert_eq!(region.set_prot(true), Ok(()));
        assert!(region.window(true, false).is_ok());
        assert_eq!(region.write_at(0, &[1, 2, 3]), Ok(()));
        let mut back = [0u8; 3];
        assert_eq!(region.read_at(0, &mut back), Ok(()));
        assert_eq!(back, [1, 2, 3]);
        assert_eq!(region.write_at(GRANULE_SIZE, &[1]), Err(EIO));
    }

    /// A write through a mapping of a process's own (mode C) asks `page_mkwrite`: refused
    /// while the region is read-only, retried when the page is no longer the region's
    /// there, else allowed with the page's folio locked, so that SET_PROT's settle waits
    /// for the core to finish mapping it.
    #[test]
    fn page_mkwrite_answers_from_the_protection() {
        use crate::region::Page;
        let (sigsegv, nopage, locked) = (
            bindings::vm_fault_reason_VM_FAULT_SIGSEGV,
            bindings::vm_fault_reason_VM_FAULT_NOPAGE,
            bindings::vm_fault_reason_VM_FAULT_LOCKED,
        );
        let region = KBox::pin_init(Region::new(None), GFP_KERNEL).expect("region");
        assert_eq!(region.set_size(2 * GRANULE_SIZE, None, 1 << 47), Ok(2 * GRANULE_SIZE));
        assert_eq!(region.create_mapping(0, GRANULE_SIZE), Ok(()));
        let Page::Frame(pfn) = region.page(3) else { panic!("no memory at page 3") };
        // Another page than the region's there, then a hole.
        assert_eq!(region.page_mkwrite(3, pfn + 1), nopage);
        assert_eq!(region.page_mkwrite(crate::GRANULE_PAGES + 3, pfn), nopage);
        assert_eq!(region.set_prot(false), Ok(()));
        assert_eq!(region.page_mkwrite(3, pfn), sigsegv);
        assert_eq!(region.set_prot(true), Ok(()));
        assert_eq!(region.page_mkwrite(3, pfn), locked);
        // SAFETY: the folio `page_mkwrite` locked, which the region's memory holds.
        unsafe { crate::granule::unlock_page(pfn) };
    }
}
