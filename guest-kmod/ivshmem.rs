// SPDX-License-Identifier: GPL-2.0

//! The ivshmem devices a VMM gives this guest: mshare-vmm's (named through a vendor
//! capability) and QEMU's `ivshmem-plain` (unnamed). Each is bound, described in the log,
//! and can check that data crosses VMs through it (the `selftest_*` parameters).

use kernel::{device::Core, io::Io, pci, prelude::*, time::delay::fsleep, time::Delta};

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

/// One bound ivshmem device (msharefs will keep its region here).
pub(crate) struct IvshmemDevice;

/// The PCI driver for ivshmem devices.
pub(crate) struct IvshmemDriver;

kernel::pci_device_table!(
    PCI_TABLE,
    <IvshmemDriver as pci::Driver>::IdInfo,
    [(pci::DeviceId::from_id(pci::Vendor::REDHAT_QUMRANET, 0x1110), ())]
);

/// Writes `write` (if non-zero) at offset 0 of BAR2, then waits until offset 0 holds
/// `expect` (if non-zero): a check that data crosses VMs through the region.
fn selftest(pdev: &pci::Device<Core<'_>>, name: &str, read_only: bool, write: u64, expect: u64) -> Result {
    let bar = pdev.iomap_region(2, c"mshare-ivshmem")?;
    if write != 0 {
        if read_only {
            dev_info!(pdev, "region '{}': read-only, selftest write skipped\n", name);
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
        let (text, read_only) = name.as_ref().map_or(("", false), |n| (n.as_str(), n.read_only));
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
        Ok(IvshmemDevice)
    }
}
