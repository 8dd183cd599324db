// SPDX-License-Identifier: GPL-2.0

//! The ioctl argument structures of both interfaces, laid out as `include/uapi/mshare.h`,
//! the ABI's one definition, has them: Kbuild generates [`abi`] from the header, and its
//! assertions do not compile if a structure here differs from the header's. They are read
//! from and written to user memory whole, as plain data ([`FromBytes`], [`AsBytes`]).

use kernel::prelude::*;
use kernel::transmute::{AsBytes, FromBytes};
use kernel::uaccess::{UserPtr, UserSlice};

/// `struct mshare_info { __u64 start; __u64 size; }` (v1's GET_SIZE/SET_SIZE).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct MshareInfo {
    pub(crate) start: u64,
    pub(crate) size: u64,
}

/// `struct mshare_create { __u64 addr (v3: region_offset); __u64 size; __u64 offset;
/// __u32 prot; __u32 flags; __u32 fd; }`, 40 bytes with its tail padding.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct MshareCreate {
    pub(crate) addr: u64,
    pub(crate) size: u64,
    pub(crate) offset: u64,
    pub(crate) prot: u32,
    pub(crate) flags: u32,
    pub(crate) fd: u32,
    pub(crate) padding: u32,
}

/// `struct mshare_unmap { __u64 addr (v3: region_offset); __u64 size; }`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct MshareUnmap {
    pub(crate) addr: u64,
    pub(crate) size: u64,
}

/// `struct mshare_stats` (`MSHAREFS_GET_STATS`, this project's extension).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct MshareStats {
    pub(crate) windows: u64,
    pub(crate) faults: u64,
    pub(crate) backed: u64,
    pub(crate) tables: u64,
    pub(crate) links: u64,
    pub(crate) file_backed: u64,
    pub(crate) pmd_tables: u64,
    pub(crate) pmd_links: u64,
    pub(crate) huge_leaf_bytes: u64,
    pub(crate) links_now: u64,
}

/// `struct mshare_attach { __s32 fd; __u32 flags; __u64 offset; __u64 size; __u64 addr; }`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct MshareAttach {
    pub(crate) fd: i32,
    pub(crate) flags: u32,
    pub(crate) offset: u64,
    pub(crate) size: u64,
    pub(crate) addr: u64,
}

/// `struct mshare_detach { __u64 addr; __u64 size; }`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct MshareDetach {
    pub(crate) addr: u64,
    pub(crate) size: u64,
}

/// `struct mshare_map { __s32 fd; __u32 prot; __u64 offset; __u64 size; __s32 object_fd;
/// __u32 flags; }`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct MshareMap {
    pub(crate) fd: i32,
    pub(crate) prot: u32,
    pub(crate) offset: u64,
    pub(crate) size: u64,
    pub(crate) object_fd: i32,
    pub(crate) flags: u32,
}

/// `struct mshare_range { __s32 fd; __u32 pad; __u64 offset; __u64 size; }`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct MshareRange {
    pub(crate) fd: i32,
    pub(crate) pad: u32,
    pub(crate) offset: u64,
    pub(crate) size: u64,
}

/// `struct mshare_protect { __s32 fd; __u32 prot; }`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct MshareProtect {
    pub(crate) fd: i32,
    pub(crate) prot: u32,
}

/// `struct mshare_advise { __s32 fd; __s32 advice; __u64 offset; __u64 size; }`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct MshareAdvise {
    pub(crate) fd: i32,
    pub(crate) advice: i32,
    pub(crate) offset: u64,
    pub(crate) size: u64,
}

/// The header's request numbers, flags, magic and paths under their C names, generated
/// from it by `gen_abi_rs` (Kbuild), with the assertions that check each structure above
/// against the header's: its size, and each field's offset and integer type.
// The header's every definition, whether or not the module uses it.
#[allow(dead_code)]
pub(crate) mod abi {
    use super::{
        MshareAdvise, MshareAttach, MshareCreate, MshareDetach, MshareInfo, MshareMap, MshareProtect, MshareRange, MshareStats,
        MshareUnmap,
    };

    // Kbuild writes it beside this file: the module is built where its sources are (M=, or
    // drivers/mshare in a tree built without O=).
    include!("uapi_generated.rs");
}

macro_rules! plain_data {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: `#[repr(C)]` with integer fields only, and every byte in one of them: `abi`
        // pins each field of the header's structure at its offset with its integer type and
        // the size to the header's, `gen_abi_rs` refuses a header structure with a gap
        // between fields, and has a tail the header leaves as padding checked to be the
        // field `padding` here. So every bit pattern is a valid value, and every byte is
        // initialized.
        unsafe impl FromBytes for $t {}
        // SAFETY: as above.
        unsafe impl AsBytes for $t {}
    )*};
}

plain_data!(
    MshareInfo,
    MshareCreate,
    MshareUnmap,
    MshareStats,
    MshareAttach,
    MshareDetach,
    MshareMap,
    MshareRange,
    MshareProtect,
    MshareAdvise,
);

/// Reads an ioctl's argument: a `T` at user address `arg` (EFAULT if it cannot be read).
pub(crate) fn read_arg<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(UserPtr::from_addr(arg), core::mem::size_of::<T>()).reader().read::<T>()
}

/// Writes the first `len` bytes of an ioctl's result (all of it if `len` is larger): what a
/// program built against an older header, whose structure ended there, asks for.
pub(crate) fn write_arg_prefix<T: AsBytes>(arg: usize, value: &T, len: usize) -> Result {
    let bytes = value.as_bytes();
    let bytes = &bytes[..len.min(bytes.len())];
    UserSlice::new(UserPtr::from_addr(arg), bytes.len()).writer().write_slice(bytes)
}

/// Writes an ioctl's result: `value` to user address `arg` (EFAULT if it cannot be written).
pub(crate) fn write_arg<T: AsBytes>(arg: usize, value: &T) -> Result {
    UserSlice::new(UserPtr::from_addr(arg), core::mem::size_of::<T>()).writer().write(value)
}
