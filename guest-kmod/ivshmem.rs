// SPDX-License-Identifier: GPL-2.0

//! The ivshmem devices a VMM gives this guest: mshare-vmm's (named through a vendor
//! capability) and QEMU's `ivshmem-plain` (unnamed: named by PCI address). Each is bound,
//! described in the log, published as the msharefs region `ivshmem/<name>` over its BAR2
//! (mapped write-back), and can check that data crosses VMs through it (`selftest_*`).

use crate::region::Region;
use crate::GRANULE_SIZE;
use core::ffi::c_void;
use kernel::{
    bindings,
    device::Core,
    io::Io,
    pci,
    prelude::*,
    str::{BStr, CString},
    sync::Arc,
    time::delay::fsleep,
    time::Delta,
};

/// The PCI capability list pointer and the vendor-specific capability ID.
const CAPABILITY_LIST: usize = 0x34;
const CAP_VENDOR: u8 = 0x09;
/// mshare-vmm's capability: `[0x09, next, len, 'M', 'S', version, flags, name.., 0]`.
const CAP_SIGNATURE: [u8; 2] = *b"MS";
const CAP_FLAG_READ_ONLY: u8 = 1;
const NAME_MAX: usize = 32;
/// How long the cross-VM check waits for the other VM's pattern.
const SELFTEST_TIMEOUT_MS: i64 = 300_000;
const SELFTEST_POLL_MS: i64 = 100;
/// Where the selftest tries to write a read-only region (offset 0 carries the pattern).
const RO_PROBE_OFFSET: usize = 8;

/// The region name and access the VMM put in the device's vendor capability.
pub(crate) struct RegionName {
    bytes: [u8; NAME_MAX],
    len: usize,
    /// The VMM attached the region read-only.
    pub(crate) read_only: bool,
}

impl RegionName {
    /// The name as text ("" for a device without the capability).
    pub(crate) fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("?")
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Whether `name`, from the VMM, can name a file under `/sys/fs/mshare/ivshmem`: 1 to 32
/// letters, digits, '-', '_' and '.', other than "." and "..", the rule mshare-vmm keeps.
/// The host is not trusted (confidential guests assume a hostile one): a name that is a
/// path, or no name at all, must not reach the dentry cache.
fn is_file_name(name: &[u8]) -> bool {
    (1..=NAME_MAX).contains(&name.len())
        && name != b"."
        && name != b".."
        && name.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
}

/// Walks the capability list for mshare-vmm's vendor capability.
fn region_name(pdev: &pci::Device<Core<'_>>) -> Option<RegionName> {
    let config = pdev.config_space();
    let mut at = usize::from(config.try_read8(CAPABILITY_LIST).ok()? & !3);
    // A list longer than the config space has room for is corrupt.
    for _ in 0..48 {
        if at < 0x40 {
            return None;
        }
        let id = config.try_read8(at).ok()?;
        let next = config.try_read8(at + 1).ok()?;
        let len = usize::from(config.try_read8(at + 2).ok()?);
        let signature = [config.try_read8(at + 3).ok()?, config.try_read8(at + 4).ok()?];
        if id == CAP_VENDOR && len >= 8 && signature == CAP_SIGNATURE {
            let flags = config.try_read8(at + 6).ok()?;
            let mut name = RegionName { bytes: [0; NAME_MAX], len: 0, read_only: flags & CAP_FLAG_READ_ONLY != 0 };
            for i in 0..(len - 7).min(NAME_MAX) {
                match config.try_read8(at + 7 + i).ok()? {
                    0 => break,
                    b => {
                        name.bytes[i] = b;
                        name.len = i + 1;
                    }
                }
            }
            return Some(name);
        }
        at = usize::from(next & !3);
    }
    None
}

/// One bound ivshmem device and the msharefs region over its BAR2, if it has one.
pub(crate) struct IvshmemDevice {
    /// Kept for its drop: unpublishes and frees the region with the device.
    _region: Option<Published>,
}

/// A device region published in msharefs, with the write-back mapping that makes the BAR
/// cacheable for every process that maps it.
///
/// # Invariants
///
/// `region` is in msharefs' device table from `publish` until `drop`, which takes it out
/// before it removes every process's mapping of the BAR and then the write-back mapping;
/// msharefs inodes made from it hold their own references and find it unplugged.
struct Published {
    region: Arc<Region>,
    wb: *mut c_void,
}

// SAFETY: `wb` is a kernel mapping, only unmapped (from any thread) in drop; `Region` is
// `Send` and `Sync`.
unsafe impl Send for Published {}

impl Drop for Published {
    fn drop(&mut self) {
        // From here on no new inode can take the region.
        crate::devices::remove(&self.region);
        // Open files and mappings may outlive the device (an unbind while in use): they
        // lose the memory, never reach freed memory (see `Region::unplug`).
        self.region.unplug();
        // SAFETY: mapped in `publish`; no process maps the BAR any more.
        unsafe { bindings::memunmap(self.wb) };
    }
}

/// Publishes BAR2 as the msharefs region `ivshmem/<name>`: whole granules only.
fn publish(pdev: &pci::Device<Core<'_>>, name: &str, read_only: bool) -> Result<Option<Published>> {
    let start = pdev.resource_start(2)?;
    let size = pdev.resource_len(2)?;
    if size < GRANULE_SIZE || size % GRANULE_SIZE != 0 || start % GRANULE_SIZE != 0 {
        dev_info!(pdev, "region '{}': not whole 2 MiB granules, not published in msharefs\n", name);
        return Ok(None);
    }
    // Reserves the range as write-back, so that the PFN mappings of it are cached, as the
    // host's memory behind it is; file reads and writes go through this mapping.
    // SAFETY: maps the device's own BAR, which nothing else maps.
    let wb = unsafe { bindings::memremap(start, size as usize, bindings::MEMREMAP_WB as _) };
    if wb.is_null() {
        return Err(ENOMEM);
    }
    let first_pfn = (start >> kernel::page::PAGE_SHIFT) as usize;
    let region = match Region::device(size, first_pfn, read_only, wb as usize)
        .and_then(|init| Arc::pin_init(init, GFP_KERNEL))
    {
        Ok(region) => region,
        Err(e) => {
            // SAFETY: mapped just above; nothing uses it yet.
            unsafe { bindings::memunmap(wb) };
            return Err(e);
        }
    };
    // From here on, dropping `published` undoes whatever of the steps below was done.
    let published = Published { region, wb };
    let cname = CString::try_from_fmt(fmt!("{}", name))?;
    // The table's reference goes before `published` lets go of the device (its drop).
    crate::devices::add(&cname, published.region.clone(), read_only)
    .inspect_err(|e| {
        if *e == EEXIST {
            dev_err!(pdev, "region '{}': another device already has this name: not published\n", name);
        }
    })?;
    Ok(Some(published))
}

/// The PCI driver for ivshmem devices.
pub(crate) struct IvshmemDriver;

kernel::pci_device_table!(
    PCI_TABLE,
    <IvshmemDriver as pci::Driver>::IdInfo,
    [(pci::DeviceId::from_id(pci::Vendor::REDHAT_QUMRANET, 0x1110), ())]
);

/// Writes `write` (if non-zero) at offset 0 of BAR2, then waits until offset 0 holds
/// `expect` (if non-zero): a check that data crosses VMs through the region. On a region
/// the VMM attached read-only, the write goes to offset 8 from the kernel, past every
/// guest-side check, and must not land.
fn selftest(pdev: &pci::Device<Core<'_>>, name: &str, read_only: bool, write: u64, expect: u64) -> Result {
    let bar = pdev.iomap_region(2, c"mshare-ivshmem")?;
    if write != 0 {
        if read_only {
            let before = (&bar).try_read64(RO_PROBE_OFFSET)?;
            (&bar).try_write64(write, RO_PROBE_OFFSET)?;
            let after = (&bar).try_read64(RO_PROBE_OFFSET)?;
            if after != before {
                dev_err!(pdev, "region '{}': selftest FAILED: a write to the read-only region landed ({:#x})\n", name, after);
                return Err(EPERM);
            }
            dev_info!(pdev, "region '{}': selftest write to the read-only region was dropped\n", name);
        } else {
            (&bar).try_write64(write, 0)?;
            dev_info!(pdev, "region '{}': selftest wrote {:#x} at offset 0\n", name, write);
        }
    }
    if expect != 0 {
        let mut waited = 0;
        loop {
            let value = (&bar).try_read64(0)?;
            if value == expect {
                dev_info!(pdev, "region '{}': selftest read {:#x} at offset 0 after {} ms\n", name, value, waited);
                break;
            }
            if waited >= SELFTEST_TIMEOUT_MS {
                dev_err!(pdev, "region '{}': selftest FAILED: offset 0 holds {:#x}, not {:#x}, after {} ms\n", name, value, expect, waited);
                return Err(ETIMEDOUT);
            }
            fsleep(Delta::from_millis(SELFTEST_POLL_MS));
            waited += SELFTEST_POLL_MS;
        }
    }
    Ok(())
}

impl pci::Driver for IvshmemDriver {
    type IdInfo = ();
    type Data<'bound> = IvshmemDevice;

    const ID_TABLE: pci::IdTable<Self::IdInfo> = &PCI_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        pdev.enable_device_mem()?;
        let size = pdev.resource_len(2)?;
        let name = region_name(pdev);
        if let Some(n) = name.as_ref().filter(|n| n.len > 0 && !is_file_name(n.as_bytes())) {
            dev_err!(
                pdev,
                "the VMM named the region '{}', which is not a file name (1 to 32 of letters, digits, '-', '_', '.'; not '.' or '..'): device not bound\n",
                BStr::from_bytes(n.as_bytes())
            );
            return Err(EINVAL);
        }
        let address = CString::try_from_fmt(fmt!("{}", pdev.as_ref().name()))?;
        let (text, read_only) = match &name {
            Some(n) if !n.as_str().is_empty() => (n.as_str(), n.read_only),
            Some(n) => (address.to_str().unwrap_or("?"), n.read_only),
            None => (address.to_str().unwrap_or("?"), false),
        };
        dev_info!(
            pdev,
            "ivshmem region '{}': {} KiB at {:#x}{}\n",
            text,
            size >> 10,
            pdev.resource_start(2)?,
            if read_only { ", read-only" } else { "" }
        );
        let write = crate::module_parameters::selftest_write.value();
        let expect = crate::module_parameters::selftest_expect.value();
        if write != 0 || expect != 0 {
            selftest(pdev, text, read_only, write, expect)?;
        }
        let region = publish(pdev, text, read_only)?;
        Ok(IvshmemDevice { _region: region })
    }
}

#[kunit_tests(mshare_ivshmem)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_names_mshare_vmm_gives() {
        for name in [&b"db"[..], b"a.b", b"...", b"sga-0_1", &[b'x'; NAME_MAX]] {
            assert!(is_file_name(name));
        }
    }

    #[test]
    fn refuses_names_that_are_not_file_names() {
        for name in [&b""[..], b".", b"..", b"a/b", b"/", b"../x", b"a b", b"a\nb", b"\xff", &[b'x'; NAME_MAX + 1]] {
            assert!(!is_file_name(name));
        }
    }
}
