//! Test plumbing for the mshare-vmm guest.
//!
//! - [`console`]: what a guest console says: the `/init` result line, kernel warnings,
//!   oopses and panics (any of which fails a run);
//! - [`ktap`]: KTAP (KUnit) results printed on the console;
//! - [`images`]: where `make images` put the kernels and the initramfs;
//! - [`qemu`]: boot a guest under QEMU TCG with a command and a timeout;
//! - [`nested`]: the nested KVM host (QEMU TCG emulating SVM, a Linux KVM host in it) on
//!   which `mshare-vmm` runs the guest image with its user space;
//! - [`cpio`]: initramfs archives, to add files to a built one;
//! - [`fuzz`]: bounded randomized runs (a seeded PRNG and text mutations);
//! - [`lmdb_tier`]: the LMDB database tier every host runs: ways, guest script, figures.
//!
//! The same console and KTAP checks serve boots under `mshare-vmm`.

pub mod console;
pub mod cpio;
pub mod fuzz;
pub mod images;
pub mod ktap;
pub mod lmdb_tier;
pub mod nested;
pub mod postgres_bench;
pub mod qemu;
pub mod spread;

/// How many checks the guest's `mshare-api` suite runs in mode B and in mode C, wherever
/// it runs (QEMU, `mshare-vmm`): a run that printed fewer stopped early, whatever its status.
pub const API_CHECKS_MODE_B: usize = 155;
/// See [`API_CHECKS_MODE_B`].
pub const API_CHECKS_MODE_C: usize = 121;
