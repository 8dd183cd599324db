// SPDX-License-Identifier: GPL-2.0

//! The device table: the ivshmem devices' regions the PCI driver (`ivshmem.rs`) published,
//! which every msharefs mount shows as `/sys/fs/mshare/ivshmem/<name>`, backed by the
//! device, with no creator. A name is one device's (two of one name would be two dentries
//! of one name), and a device the VMM attached read-only shows as a file only its owner may
//! read (0400), any other as one its owner may read and write (0600).
//!
//! The table holds a reference to each region until the driver takes it out, which the
//! driver does before the device goes: a mount made after that no longer shows it, and
//! each inode a mount made holds its own reference (see `region/device.rs`).

use crate::region::Region;
use core::ffi::c_int;
use kernel::bindings;
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::Arc;

// Typed pointers to C structs (bindgen's layouts, which improper_ctypes flags for a
// zero-length array deep inside) and to `Region` (which C never reads, only passes back):
// only the pointers cross.
#[allow(improper_ctypes)]
extern "C" {
    fn msharefs_show_device(
        dir: *mut bindings::dentry,
        name: *const u8,
        region: *const Region,
        size: bindings::loff_t,
        mode: bindings::umode_t,
    ) -> c_int;
}

/// At most this many devices are shown: a VMM gives a VM a few regions, and a table this
/// size keeps a hostile or broken host from making msharefs mounts arbitrarily slow.
const MAX_DEVICES: usize = 32;

/// One published device.
struct Device {
    name: CString,
    region: Arc<Region>,
    read_only: bool,
}

kernel::sync::global_lock! {
    // SAFETY: `init` runs in the module's init, before the driver and msharefs that use
    // the table are registered.
    unsafe(uninit) static DEVICES: Mutex<KVVec<Device>> = KVVec::new();
}

/// Readies the table; once, before anything else here.
pub(crate) fn init() {
    // SAFETY: called once, from the module's init, before any other use (see `DEVICES`).
    unsafe { DEVICES.init() };
}

/// Publishes `region` under `name`: EEXIST if a device has that name, ENOSPC past
/// [`MAX_DEVICES`].
pub(crate) fn add(name: &CStr, region: Arc<Region>, read_only: bool) -> Result {
    let mut devices = DEVICES.lock();
    if devices.iter().any(|device| device.name.to_bytes() == name.to_bytes()) {
        return Err(EEXIST);
    }
    if devices.len() >= MAX_DEVICES {
        return Err(ENOSPC);
    }
    let name = CString::try_from(name)?;
    devices.push(Device { name, region, read_only }, GFP_KERNEL)?;
    Ok(())
}

/// Takes `region` out of the table: mounts made from now on do not show it.
pub(crate) fn remove(region: &Arc<Region>) {
    DEVICES.lock().retain(|device| !Arc::ptr_eq(&device.region, region));
}

/// Makes an entry under `dir` (a mount's `ivshmem` directory) for each device: 0 or a
/// negative errno.
///
/// # Safety
///
/// `dir` is the directory being filled, of a superblock being set up.
#[no_mangle]
unsafe extern "C" fn mshare_devices_show(dir: *mut bindings::dentry) -> c_int {
    // Held across the calls: a region stays in the table, and so alive, until its inode
    // holds a reference of its own.
    let devices = DEVICES.lock();
    for device in devices.iter() {
        let mode = if device.read_only { 0o400 } else { 0o600 };
        // SAFETY: `dir` per the function's contract; the name is a C string and the region
        // alive while the lock is held.
        let shown = unsafe {
            msharefs_show_device(
                dir,
                device.name.as_char_ptr(),
                Arc::as_ptr(&device.region),
                device.region.size() as bindings::loff_t,
                mode,
            )
        };
        if shown != 0 {
            return shown;
        }
    }
    0
}
