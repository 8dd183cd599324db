//! The mshare user API, as programs see it (see docs/module.md):
//!
//! - [`msharefs`]: region files under /sys/fs/mshare and their ioctls, the interface of the
//!   January 2025 series, plus this project's statistics and protection ioctls;
//! - [`Calls`]: the calls of the 2026 proposal, made through [`syscalls::Syscalls`] (the
//!   system calls) or [`device::Device`] (`/dev/mshare`'s ioctls);
//! - [`Window`]: a mapping of a region, unmapped when dropped;
//! - [`preload`]: the environment of the preload library and its launcher (`mshare run`);
//! - [`formats`]: what host tools and guest programs share (sizes, /proc's kB lines, the
//!   ivshmem capability that names a device's region);
//! - [`abi`]: `include/mshare.h`'s definitions under their C names.
//!
//! `include/mshare.h` is the same API for C, and the ABI's one definition (a link to the
//! module's `include/uapi/mshare.h`): the build takes every number from it and has the
//! compiler check this crate's structures against it ([`abi`]).

pub mod abi;
mod calls;
pub mod device;
pub mod formats;
pub mod msharefs;
pub mod preload;
pub mod syscalls;
mod window;

pub use calls::Calls;
pub use window::Window;
