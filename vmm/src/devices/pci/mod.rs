//! PCI without ACPI: configuration mechanism #1 on ports 0xcf8/0xcfc, a host bridge at
//! 00:00.0 (so Linux's conf1 sanity check finds one), and a bus of up to 32 devices on
//! bus 0, function 0 each. Devices keep a type-0 configuration space ([`ConfigSpace`])
//! with per-register write masks, which is all BAR sizing needs: the guest writes all ones
//! and reads back the size mask.
//!
//! One concept per file, as Cloud Hypervisor's and Firecracker's PCI code is cut, so each
//! can be read and tested alone: [`config_space`] (registers, write masks, BARs),
//! [`capability`] (the capability list inside that space), [`device`] (what the bus asks
//! of a device), [`bus`] (slots and MMIO dispatch), [`config_io`] (the guest's port
//! window onto the bus). Callers use the re-exports below, so the cut is not part of the
//! API.

pub mod bus;
pub mod capability;
pub mod config_io;
pub mod config_space;
pub mod device;

pub use bus::{host_bridge, PciBus, SLOTS};
pub use capability::CapabilityError;
pub use config_io::{PciConfigIo, CONFIG_PORT, CONFIG_PORTS_LEN};
pub use config_space::{Bar, ConfigSpace, COMMAND_MEMORY, REG_BAR0, REG_COMMAND};
pub use device::{ConfigOnly, PciDevice};
