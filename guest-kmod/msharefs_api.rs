// SPDX-License-Identifier: GPL-2.0

//! The two ioctl ABIs of msharefs, one per mount (`mount -t msharefs -o api=v1|v3`).
//!
//! - **v1**, the January 2025 series (and its RFC v3): `MSHAREFS_GET_SIZE` / `SET_SIZE`
//!   with `struct mshare_info { start; size; }`, `CREATE_MAPPING` and `UNMAP` taking an
//!   address inside `[start, start + size)` (an offset into the region when `start` is 0,
//!   this project's reading, which its own programs use).
//! - **v3**, the April/August 2025 revisions: no size ioctls (`ftruncate`/`fallocate` and
//!   `fstat`), `CREATE_MAPPING` as `_IOW('x', 0, ...)` and `UNMAP` as `_IOW('x', 1, ...)`
//!   with a `region_offset`, and `MAP_FIXED` required.
//!
//! v3's `UNMAP` and v1's `SET_SIZE` encode to the same request number: only the mount can
//! say which it is. This project's extensions (`GET_STATS`, `SET_PROT`, from 0x10 on) are
//! the same under both.

use crate::uapi::abi;
use kernel::prelude::*;

/// v1 `MSHAREFS_GET_SIZE` (`struct mshare_info` out).
pub(crate) const V1_GET_SIZE: u32 = abi::MSHAREFS_V1_GET_SIZE;
/// v1 `MSHAREFS_SET_SIZE` (`struct mshare_info` in).
pub(crate) const V1_SET_SIZE: u32 = abi::MSHAREFS_V1_SET_SIZE;
/// v1 `MSHAREFS_CREATE_MAPPING` (`struct mshare_create`).
pub(crate) const V1_CREATE_MAPPING: u32 = abi::MSHAREFS_V1_CREATE_MAPPING;
/// v1 `MSHAREFS_UNMAP` (`struct mshare_unmap`).
pub(crate) const V1_UNMAP: u32 = abi::MSHAREFS_V1_UNMAP;
/// v3 `MSHAREFS_CREATE_MAPPING` (`struct mshare_create`).
pub(crate) const V3_CREATE_MAPPING: u32 = abi::MSHAREFS_V3_CREATE_MAPPING;
/// v3 `MSHAREFS_UNMAP` (`struct mshare_unmap`), the number of v1's SET_SIZE.
pub(crate) const V3_UNMAP: u32 = abi::MSHAREFS_V3_UNMAP;
/// `MSHAREFS_GET_STATS` (`struct mshare_stats` out), this project's extension.
pub(crate) const GET_STATS: u32 = abi::MSHAREFS_GET_STATS;
/// `MSHAREFS_GET_STATS` as programs built before `links_now` ask for it: 72 bytes out.
pub(crate) const GET_STATS_72: u32 = abi::MSHAREFS_GET_STATS_72;
/// `MSHAREFS_SET_PROT` (a `__u64`), this project's extension: the protection of the whole
/// region for every process sharing its tables, at once.
pub(crate) const SET_PROT: u32 = abi::MSHAREFS_SET_PROT;

/// The API a mount speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// The January 2025 series.
    V1,
    /// The v2/v3 series.
    V3,
}

impl Api {
    /// The API of the glue's `msharefs_api()` (the mount's `api=` as a number).
    pub(crate) fn from_glue(api: core::ffi::c_int) -> Self {
        if api == 3 {
            Api::V3
        } else {
            Api::V1
        }
    }

    /// The API as the glue numbers it (the inverse of [`Self::from_glue`]).
    pub(crate) fn to_glue(self) -> core::ffi::c_int {
        match self {
            Api::V1 => 1,
            Api::V3 => 3,
        }
    }
}

/// An msharefs ioctl, decoded for the API of the file's mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// v1: read `{ start, size }`.
    GetSize,
    /// v1: set `{ start, size }`.
    SetSize,
    /// Give memory to part of the region.
    CreateMapping,
    /// Take the memory of part of the region away.
    Unmap,
    /// Read the region's statistics: the first `len` bytes of `struct mshare_stats` (a
    /// program built against an older header asks for fewer).
    GetStats {
        /// Bytes to give.
        len: usize,
    },
    /// Set the region's protection for all sharers.
    SetProt,
}

impl Request {
    /// The request `cmd` means on a mount of `api`; ENOTTY for one it does not know.
    pub(crate) fn decode(api: Api, cmd: u32) -> Result<Self> {
        let request = match (api, cmd) {
            (Api::V1, V1_GET_SIZE) => Request::GetSize,
            (Api::V1, V1_SET_SIZE) => Request::SetSize,
            (Api::V1, V1_CREATE_MAPPING) | (Api::V3, V3_CREATE_MAPPING) => Request::CreateMapping,
            (Api::V1, V1_UNMAP) | (Api::V3, V3_UNMAP) => Request::Unmap,
            (_, GET_STATS) => Request::GetStats { len: core::mem::size_of::<crate::uapi::MshareStats>() },
            (_, GET_STATS_72) => Request::GetStats { len: 72 },
            (_, SET_PROT) => Request::SetProt,
            _ => return Err(ENOTTY),
        };
        Ok(request)
    }

    /// Whether a read-only open may make it (the others change the region, which takes
    /// a writable open, as ftruncate does).
    pub(crate) fn only_reads(self) -> bool {
        matches!(self, Request::GetSize | Request::GetStats { .. })
    }
}

#[kunit_tests(mshare_api)]
mod tests {
    use super::*;

    #[test]
    fn each_mount_gives_the_colliding_number_its_own_meaning() {
        assert_eq!(V3_UNMAP, V1_SET_SIZE);
        assert_eq!(Request::decode(Api::V1, V1_SET_SIZE), Ok(Request::SetSize));
        assert_eq!(Request::decode(Api::V3, V1_SET_SIZE), Ok(Request::Unmap));
    }

    #[test]
    fn requests_of_the_other_api_are_enotty() {
        assert_eq!(Request::decode(Api::V3, V1_GET_SIZE), Err(ENOTTY));
        assert_eq!(Request::decode(Api::V3, V1_CREATE_MAPPING), Err(ENOTTY));
        assert_eq!(Request::decode(Api::V3, V1_UNMAP), Err(ENOTTY));
        assert_eq!(Request::decode(Api::V1, V3_CREATE_MAPPING), Err(ENOTTY));
        let all = core::mem::size_of::<crate::uapi::MshareStats>();
        assert_eq!(Request::decode(Api::V3, GET_STATS), Ok(Request::GetStats { len: all }));
        assert_eq!(Request::decode(Api::V1, GET_STATS_72), Ok(Request::GetStats { len: 72 }));
        assert_eq!(Request::decode(Api::V1, SET_PROT), Ok(Request::SetProt));
    }
}
