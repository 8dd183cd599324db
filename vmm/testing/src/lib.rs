//! Test support for mshare-vmm, kept out of the VMM's library: [`tiny`] builds the
//! hand-assembled guests the VMM's own tests and benchmarks boot, and [`ivshmem_harness`]
//! drives the real ivshmem devices in a KVM VM for the seeded randomized tests
//! (`vmm/tests/input_fuzz.rs`) and the cargo-fuzz targets (`vmm/fuzz`) alike.

pub mod ivshmem_harness;
pub mod tiny;

pub use ivshmem_harness::{IvshmemHarness, OP_LEN};
