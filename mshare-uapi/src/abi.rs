//! mshare.h as Rust, generated from it at build time (build.rs runs
//! guest-kmod/gen_abi_rs.c): its request numbers, flags, magic and paths with their C names,
//! and compile-time assertions that this crate's `#[repr(C)]` structures have the header's
//! sizes, field offsets and field types. The header is the one definition: the test below
//! only pins the numbers that programs already built carry.

use crate::device::{MshareAdvise, MshareAttach, MshareDetach, MshareMap, MshareProtect, MshareRange};
use crate::msharefs::{MshareCreate, MshareInfo, MshareStats, MshareUnmap};

include!(concat!(env!("OUT_DIR"), "/uapi_generated.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    /// Programs built against the header carry these numbers: a change to mshare.h that
    /// moved one would still build everywhere, and break every such program.
    #[test]
    fn request_numbers_do_not_move() {
        assert_eq!(MSHAREFS_V1_GET_SIZE, 0x8010_7800);
        assert_eq!(MSHAREFS_V1_SET_SIZE, 0x4010_7801);
        assert_eq!(MSHAREFS_V1_CREATE_MAPPING, 0x4028_7802);
        assert_eq!(MSHAREFS_V1_UNMAP, 0x4010_7803);
        assert_eq!(MSHAREFS_V3_CREATE_MAPPING, 0x4028_7800);
        assert_eq!(MSHAREFS_V3_UNMAP, MSHAREFS_V1_SET_SIZE, "the collision the mount resolves");
        assert_eq!(MSHAREFS_GET_STATS, 0x8050_7810);
        assert_eq!(MSHAREFS_GET_STATS_72, 0x8048_7810, "GET_STATS before links_now, still answered");
        assert_eq!(MSHAREFS_SET_PROT, 0x4008_7811);
        assert_eq!(MSHARE_CREATE, 0x7820);
        assert_eq!(MSHARE_ATTACH, 0xc020_7821);
        assert_eq!(MSHARE_DETACH, 0x4010_7822);
        assert_eq!(MSHARE_MAP, 0x4020_7823);
        assert_eq!(MSHARE_UNMAP, 0x4018_7824);
        assert_eq!(MSHARE_PROTECT, 0x4008_7825);
        assert_eq!(MSHARE_ADVISE, 0x4018_7826);
        assert_eq!([SYS_MSHARE_CREATE, SYS_MSHARE_ATTACH, SYS_MSHARE_DETACH, SYS_MSHARE_MAP], [473, 474, 475, 476]);
        assert_eq!([SYS_MSHARE_UNMAP, SYS_MSHARE_PROTECT, SYS_MSHARE_ADVISE], [477, 478, 479]);
    }
}
