// SPDX-License-Identifier: GPL-2.0

//! An msharefs instance and its limits. There is one instance per API (every mount of one
//! API shows the same regions), the key of its superblock and its `s_fs_info`: the two are
//! statics here, which the C glue (`fs_glue.c`, 7.3's Rust has no filesystem API) holds as
//! an opaque `struct msharefs_instance *` and only passes back.
//!
//! An instance's limits (`size=`, `nr_regions=`; 0: none) bound the regions made by name in
//! it and the memory given to them, as tmpfs's bound a mount: a memory cgroup bounds a user,
//! these bound a filesystem any user can write to. Unnamed regions (/dev/mshare) are not the
//! filesystem's, as memfds are not /dev/shm's: the glue charges only named regions. The
//! glue parses the options and prints the refusals; what is allowed is decided here.

use crate::msharefs_api::Api;
use core::ffi::{c_int, c_uint};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use kernel::prelude::*;

/// What the named regions of an instance hold, and the most they may hold.
///
/// The counts are the regions and bytes charged and not yet uncharged. Counters and limits
/// are independent atomics: a charge racing a remount may pass the new limit once. The
/// limits are a filesystem's quota, which nothing relies on; the memory cgroup is the hard
/// bound.
pub(crate) struct Limits {
    /// `size=`: bytes of memory; 0 for no limit.
    max_bytes: AtomicU64,
    /// `nr_regions=`: regions; 0 for no limit.
    max_regions: AtomicU32,
    bytes: AtomicU64,
    regions: AtomicU32,
}

/// A new limit refused, for it is below what is in use (as tmpfs refuses a remount): which
/// one, and what is in use, which the glue's message gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `size=` below the bytes the regions hold.
    Size { in_use: u64 },
    /// `nr_regions=` below the regions there are.
    NrRegions { in_use: u32 },
}

impl Limits {
    /// No limits, nothing in use.
    pub(crate) const fn new() -> Self {
        Self {
            max_bytes: AtomicU64::new(0),
            max_regions: AtomicU32::new(0),
            bytes: AtomicU64::new(0),
            regions: AtomicU32::new(0),
        }
    }

    /// Counts `bytes` more memory, unless that would pass `size=`: then counts nothing. A
    /// refused charge never shows in the count, not even for a moment (as one added and
    /// then taken back would), so it cannot make a concurrent charge or remount fail.
    pub(crate) fn charge_bytes(&self, bytes: u64) -> bool {
        let max = self.max_bytes.load(Relaxed);
        let within = |used: u64| used.checked_add(bytes).filter(|&new| max == 0 || new <= max);
        self.bytes.fetch_update(Relaxed, Relaxed, within).is_ok()
    }

    /// Gives back `bytes` that [`Self::charge_bytes`] counted.
    pub(crate) fn uncharge_bytes(&self, bytes: u64) {
        self.bytes.fetch_sub(bytes, Relaxed);
    }

    /// Counts one more region, unless that would pass `nr_regions=`: then counts nothing.
    pub(crate) fn charge_region(&self) -> bool {
        let max = self.max_regions.load(Relaxed);
        let within = |used: u32| used.checked_add(1).filter(|&new| max == 0 || new <= max);
        self.regions.fetch_update(Relaxed, Relaxed, within).is_ok()
    }

    /// Gives back a region that [`Self::charge_region`] counted.
    pub(crate) fn uncharge_region(&self) {
        self.regions.fetch_sub(1, Relaxed);
    }

    /// `size=`, 0 for none.
    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Relaxed)
    }

    /// `nr_regions=`, 0 for none.
    pub(crate) fn max_regions(&self) -> u32 {
        self.max_regions.load(Relaxed)
    }

    /// Sets the limits a mount or remount asks for (`None`: leaves that one as it is). A
    /// limit below what is in use already is refused, and then neither is set: a remount
    /// fails or succeeds as a whole.
    pub(crate) fn reconfigure(&self, size: Option<u64>, nr_regions: Option<u32>) -> Result<(), Refusal> {
        let bytes = self.bytes.load(Relaxed);
        if size.is_some_and(|max| max != 0 && max < bytes) {
            return Err(Refusal::Size { in_use: bytes });
        }
        let regions = self.regions.load(Relaxed);
        if nr_regions.is_some_and(|max| max != 0 && max < regions) {
            return Err(Refusal::NrRegions { in_use: regions });
        }
        if let Some(max) = size {
            self.max_bytes.store(max, Relaxed);
        }
        if let Some(max) = nr_regions {
            self.max_regions.store(max, Relaxed);
        }
        Ok(())
    }

    /// Drops both limits: a new superblock does not inherit those of an earlier one (whose
    /// mounts are all gone).
    pub(crate) fn clear(&self) {
        self.max_bytes.store(0, Relaxed);
        self.max_regions.store(0, Relaxed);
    }
}

/// An msharefs instance: the API its mounts speak, and its limits.
pub(crate) struct Instance {
    api: Api,
    limits: Limits,
}

impl Instance {
    const fn new(api: Api) -> Self {
        Self { api, limits: Limits::new() }
    }

    /// The instance behind a pointer of the glue's.
    ///
    /// # Safety
    ///
    /// `instance` was returned by [`mshare_instance`].
    unsafe fn from_raw(instance: *const Instance) -> &'static Instance {
        // SAFETY: per the function's contract, it points to one of the statics.
        unsafe { &*instance }
    }
}

// Statics, so that an instance outlives every superblock, inode and chunk that points to it
// (a chunk's folio names the instance to give its bytes back to, and may be freed after
// its region's inode is gone).
static V1: Instance = Instance::new(Api::V1);
static V3: Instance = Instance::new(Api::V3);

/// The instance of API v`api` (1 or 3, the mount's `api=`; any other is v1's).
#[no_mangle]
extern "C" fn mshare_instance(api: c_int) -> *const Instance {
    match Api::from_glue(api) {
        Api::V1 => &V1,
        Api::V3 => &V3,
    }
}

/// The API of `instance`, as a number (1 or 3) for the glue's `msharefs_api()`.
///
/// # Safety
///
/// `instance` was returned by [`mshare_instance`].
#[no_mangle]
unsafe extern "C" fn mshare_instance_api(instance: *const Instance) -> c_int {
    // SAFETY: per the function's contract.
    unsafe { Instance::from_raw(instance) }.api.to_glue()
}

/// [`Limits::charge_bytes`] of `instance`.
///
/// # Safety
///
/// `instance` was returned by [`mshare_instance`].
#[no_mangle]
unsafe extern "C" fn mshare_instance_charge_bytes(instance: *const Instance, bytes: u64) -> bool {
    // SAFETY: per the function's contract.
    unsafe { Instance::from_raw(instance) }.limits.charge_bytes(bytes)
}

/// [`Limits::uncharge_bytes`] of `instance`.
///
/// # Safety
///
/// `instance` was returned by [`mshare_instance`], and `bytes` were charged to it.
#[no_mangle]
unsafe extern "C" fn mshare_instance_uncharge_bytes(instance: *const Instance, bytes: u64) {
    // SAFETY: per the function's contract.
    unsafe { Instance::from_raw(instance) }.limits.uncharge_bytes(bytes)
}

/// [`Limits::charge_region`] of `instance`.
///
/// # Safety
///
/// `instance` was returned by [`mshare_instance`].
#[no_mangle]
unsafe extern "C" fn mshare_instance_charge_region(instance: *const Instance) -> bool {
    // SAFETY: per the function's contract.
    unsafe { Instance::from_raw(instance) }.limits.charge_region()
}

/// [`Limits::uncharge_region`] of `instance`.
///
/// # Safety
///
/// `instance` was returned by [`mshare_instance`], and a region was charged to it.
#[no_mangle]
unsafe extern "C" fn mshare_instance_uncharge_region(instance: *const Instance) {
    // SAFETY: per the function's contract.
    unsafe { Instance::from_raw(instance) }.limits.uncharge_region()
}

/// `size=` of `instance` (0: none), for `/proc/mounts`.
///
/// # Safety
///
/// `instance` was returned by [`mshare_instance`].
#[no_mangle]
unsafe extern "C" fn mshare_instance_max_bytes(instance: *const Instance) -> u64 {
    // SAFETY: per the function's contract.
    unsafe { Instance::from_raw(instance) }.limits.max_bytes()
}

/// `nr_regions=` of `instance` (0: none), for `/proc/mounts`.
///
/// # Safety
///
/// `instance` was returned by [`mshare_instance`].
#[no_mangle]
unsafe extern "C" fn mshare_instance_max_regions(instance: *const Instance) -> c_uint {
    // SAFETY: per the function's contract.
    unsafe { Instance::from_raw(instance) }.limits.max_regions()
}

/// What [`mshare_instance_set_limits`] did: msharefs.h's `enum mshare_limits`, whose
/// values these are.
#[repr(C)]
enum SetLimits {
    Set = 0,
    RefusedSize = 1,
    RefusedNrRegions = 2,
}

/// [`Limits::reconfigure`] of `instance` with the limits asked for (null: not asked); on a
/// refusal, what is in use in `*in_use`.
///
/// # Safety
///
/// `instance` was returned by [`mshare_instance`]; `size` and `nr_regions` are null or
/// valid for reads, `in_use` valid for writes.
#[no_mangle]
unsafe extern "C" fn mshare_instance_set_limits(
    instance: *const Instance,
    size: *const u64,
    nr_regions: *const c_uint,
    in_use: *mut u64,
) -> SetLimits {
    // SAFETY: per the function's contract.
    let (instance, size, nr_regions) = unsafe { (Instance::from_raw(instance), size.as_ref(), nr_regions.as_ref()) };
    let (refused, used) = match instance.limits.reconfigure(size.copied(), nr_regions.copied()) {
        Ok(()) => return SetLimits::Set,
        Err(Refusal::Size { in_use }) => (SetLimits::RefusedSize, in_use),
        Err(Refusal::NrRegions { in_use }) => (SetLimits::RefusedNrRegions, u64::from(in_use)),
    };
    // SAFETY: per the function's contract.
    unsafe { in_use.write(used) };
    refused
}

/// Drops the limits of `instance`, whose new superblock is being filled.
///
/// # Safety
///
/// `instance` was returned by [`mshare_instance`].
#[no_mangle]
unsafe extern "C" fn mshare_instance_clear_limits(instance: *const Instance) {
    // SAFETY: per the function's contract.
    unsafe { Instance::from_raw(instance) }.limits.clear()
}

#[kunit_tests(mshare_limits)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn charges_up_to_the_limit_and_none_beyond() {
        let limits = Limits::new();
        assert_eq!(limits.reconfigure(Some(4 * MIB), Some(2)), Ok(()));
        assert!(limits.charge_bytes(2 * MIB));
        assert!(limits.charge_bytes(2 * MIB));
        assert!(!limits.charge_bytes(1));
        assert!(!limits.charge_bytes(2 * MIB));
        assert!(limits.charge_region());
        assert!(limits.charge_region());
        assert!(!limits.charge_region());
        // What is in use, as a limit below it reports: the refusals counted nothing.
        assert_eq!(limits.reconfigure(Some(1), None), Err(Refusal::Size { in_use: 4 * MIB }));
        assert_eq!(limits.reconfigure(None, Some(1)), Err(Refusal::NrRegions { in_use: 2 }));
        // What is given back may be charged again.
        limits.uncharge_bytes(2 * MIB);
        limits.uncharge_region();
        assert!(limits.charge_bytes(2 * MIB));
        assert!(!limits.charge_bytes(1));
        assert!(limits.charge_region());
        assert!(!limits.charge_region());
    }

    #[test]
    fn zero_is_no_limit() {
        let limits = Limits::new();
        assert!(limits.charge_bytes(1 << 40));
        assert!(limits.charge_bytes(1 << 40));
        for _ in 0..1000 {
            assert!(limits.charge_region());
        }
        assert_eq!(limits.reconfigure(Some(8 << 40), Some(2000)), Ok(()));
        assert_eq!(limits.reconfigure(Some(0), Some(0)), Ok(()));
        assert!(limits.charge_bytes(1 << 40));
        assert!(limits.charge_region());
        // A count that would overflow is refused, never wrapped.
        assert!(!limits.charge_bytes(u64::MAX));
        assert_eq!(limits.reconfigure(Some(1), None), Err(Refusal::Size { in_use: 3 << 40 }));
    }

    #[test]
    fn a_limit_below_what_is_in_use_is_refused() {
        let limits = Limits::new();
        assert!(limits.charge_bytes(4 * MIB));
        assert!(limits.charge_region());
        assert!(limits.charge_region());
        assert_eq!(limits.reconfigure(Some(2 * MIB), None), Err(Refusal::Size { in_use: 4 * MIB }));
        assert_eq!(limits.reconfigure(None, Some(1)), Err(Refusal::NrRegions { in_use: 2 }));
        // Neither is set when one is refused.
        assert_eq!(limits.reconfigure(Some(8 * MIB), Some(1)), Err(Refusal::NrRegions { in_use: 2 }));
        assert_eq!((limits.max_bytes(), limits.max_regions()), (0, 0));
        // Exactly what is in use is allowed.
        assert_eq!(limits.reconfigure(Some(4 * MIB), Some(2)), Ok(()));
        assert_eq!((limits.max_bytes(), limits.max_regions()), (4 * MIB, 2));
    }

    #[test]
    fn a_remount_sets_only_the_limits_it_names() {
        let limits = Limits::new();
        assert_eq!(limits.reconfigure(Some(4 * MIB), Some(3)), Ok(()));
        assert_eq!(limits.reconfigure(Some(8 * MIB), None), Ok(()));
        assert_eq!((limits.max_bytes(), limits.max_regions()), (8 * MIB, 3));
        assert_eq!(limits.reconfigure(None, Some(5)), Ok(()));
        assert_eq!((limits.max_bytes(), limits.max_regions()), (8 * MIB, 5));
        assert_eq!(limits.reconfigure(None, None), Ok(()));
        assert_eq!((limits.max_bytes(), limits.max_regions()), (8 * MIB, 5));
        limits.clear();
        assert_eq!((limits.max_bytes(), limits.max_regions()), (0, 0));
    }

    #[test]
    fn each_api_has_its_own_instance() {
        let (v1, v3) = (mshare_instance(1), mshare_instance(3));
        assert!(v1 != v3);
        assert!(mshare_instance(0) == v1);
        // SAFETY: both come from `mshare_instance`.
        let apis = unsafe { (mshare_instance_api(v1), mshare_instance_api(v3)) };
        assert_eq!(apis, (1, 3));
    }
}
