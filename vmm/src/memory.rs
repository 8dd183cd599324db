//! Guest physical memory: the layout every VM gets, its RAM, and the e820 map of it.
//!
//! ```text
//! 0x0000_0000  real-mode IVT/BDA (RAM)
//! 0x0000_0500  GDT                        0x0000_7000  boot_params (zero page)
//! 0x0000_8ff0  boot stack (grows down)    0x0000_9000  identity page tables (PML4, PDPT, 4 PDs)
//! 0x0002_0000  kernel command line        0x0009_fc00  MP table (EBDA), reserved to 1 MiB
//! 0x0010_0000  RAM: kernel (bzImage at 1 MiB, vmlinux at its physical address), initrd at the top
//! 0xc000_0000  MMIO gap (1 GiB below 4 GiB): PCI BAR0s, IOAPIC, LAPIC
//! RAM top      region BARs (64-bit, prefetchable), each aligned to its size, skipping the gap
//! 0x1_0000_0000  RAM above the gap, if any
//! ```

use vm_allocator::{AddressAllocator, AllocPolicy};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Memslots of regions come after the (at most two) RAM slots.
pub const REGION_FIRST_SLOT: u32 = 2;
/// Where the GDT goes.
pub const GDT_START: GuestAddress = GuestAddress(0x500);
/// Where the IDT would go (an empty one is loaded: the kernel sets its own).
pub const IDT_START: GuestAddress = GuestAddress(0x520);
/// The Linux zero page.
pub const ZERO_PAGE_START: GuestAddress = GuestAddress(0x7000);
/// Initial stack pointer.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// First of the three identity-mapping page-table pages.
pub const PML4_START: GuestAddress = GuestAddress(0x9000);
/// Kernel command line.
pub const CMDLINE_START: GuestAddress = GuestAddress(0x20000);
/// Largest command line an x86-64 Linux accepts (COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the EBDA, where the MP table goes; reserved up to 1 MiB.
pub const EBDA_START: GuestAddress = GuestAddress(0x9fc00);
/// RAM above the legacy hole starts here.
pub const HIGH_RAM_START: GuestAddress = GuestAddress(0x10_0000);
/// Start of the MMIO gap below 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the MMIO gap.
pub const MMIO_GAP_END: u64 = 1 << 32;
/// IOAPIC base, inside the gap.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC base, inside the gap.
pub const APIC_START: u64 = 0xfee0_0000;
/// Smallest guest memory accepted: the boot structures plus a kernel that can run.
pub const MIN_MEMORY: u64 = 32 << 20;

/// e820 entry types.
pub const E820_RAM: u32 = 1;
/// e820 reserved.
pub const E820_RESERVED: u32 = 2;

/// Errors setting up guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory of {size} bytes is too small: at least {} MiB is needed", MIN_MEMORY >> 20)]
    TooSmall {
        /// Requested size.
        size: u64,
    },
    #[error("guest memory of {0} bytes is not a multiple of 4 KiB")]
    Unaligned(u64),
    #[error("mapping guest RAM: {0}")]
    Mmap(#[from] vm_memory::mmap::FromRangesError),
    #[error("placing the regions' BARs above guest RAM: {0} (fewer or smaller regions, or less RAM)")]
    Bars(#[source] vm_allocator::Error),
}

/// RAM ranges (start, size) for `size` bytes of guest memory, split around the MMIO gap.
pub fn ram_ranges(size: u64) -> Result<Vec<(GuestAddress, usize)>, MemoryError> {
    if size < MIN_MEMORY {
        return Err(MemoryError::TooSmall { size });
    }
    if !size.is_multiple_of(4096) {
        return Err(MemoryError::Unaligned(size));
    }
    // `usize` is 64 bits on every host this VMM builds for (x86-64 only).
    let mut ranges = vec![(GuestAddress(0), low_ram_end(size) as usize)];
    if size > MMIO_GAP_START {
        ranges.push((GuestAddress(MMIO_GAP_END), (size - MMIO_GAP_START) as usize));
    }
    Ok(ranges)
}

/// Maps anonymous guest RAM of `size` bytes.
pub fn create_guest_memory(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    Ok(GuestMemoryMmap::from_ranges(&ram_ranges(size)?)?)
}

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The e820 map of a guest with `size` bytes of RAM: low RAM up to the EBDA, the EBDA and
/// BIOS area reserved, RAM from 1 MiB to the gap, and RAM above 4 GiB.
pub fn e820_map(size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry { addr: 0, size: EBDA_START.0, kind: E820_RAM },
        E820Entry { addr: EBDA_START.0, size: HIGH_RAM_START.0 - EBDA_START.0, kind: E820_RESERVED },
    ];
    map.push(E820Entry { addr: HIGH_RAM_START.0, size: low_ram_end(size) - HIGH_RAM_START.0, kind: E820_RAM });
    if size > MMIO_GAP_START {
        map.push(E820Entry { addr: MMIO_GAP_END, size: size - MMIO_GAP_START, kind: E820_RAM });
    }
    map
}

/// Where the registers (BAR0) of PCI device `index` go: 4 KiB apart at the start of the gap.
pub fn pci_registers_address(index: usize) -> u32 {
    (MMIO_GAP_START as u32) + (index as u32) * 0x1000
}

/// The end of the guest-physical space 64-bit BARs are placed in (64 TiB: within what every
/// x86-64 host's KVM accepts).
pub const PCI_BAR64_END: u64 = 1 << 46;

/// Addresses for the 64-bit BARs of `sizes` (powers of two), one per size in the same
/// order: above guest RAM, each aligned to its size, never inside the MMIO gap below 4 GiB
/// (vm-allocator's first fit, the gap reserved: a later, smaller BAR may take an alignment
/// hole below an earlier one).
pub fn pci_bar64_addresses(memory: u64, sizes: &[u64]) -> Result<Vec<u64>, MemoryError> {
    let start = if memory <= MMIO_GAP_START { memory } else { MMIO_GAP_END + (memory - MMIO_GAP_START) };
    let mut window = AddressAllocator::new(start, PCI_BAR64_END - start).map_err(MemoryError::Bars)?;
    if start < MMIO_GAP_END {
        let gap = MMIO_GAP_END - start.max(MMIO_GAP_START);
        window.allocate(gap, 1, AllocPolicy::ExactMatch(start.max(MMIO_GAP_START))).map_err(MemoryError::Bars)?;
    }
    sizes
        .iter()
        .map(|&size| Ok(window.allocate(size, size, AllocPolicy::FirstMatch).map_err(MemoryError::Bars)?.start()))
        .collect()
}

/// End of the RAM below the MMIO gap (exclusive): the initrd goes just under it.
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO_GAP_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn small_memory_is_one_range() {
        assert_eq!(ram_ranges(256 << 20).unwrap(), vec![(GuestAddress(0), 256 << 20)]);
    }

    #[test]
    fn memory_past_the_gap_is_split_around_it() {
        let ranges = ram_ranges(4 << 30).unwrap();
        assert_eq!(ranges, vec![(GuestAddress(0), 0xc000_0000), (GuestAddress(1 << 32), 1 << 30)]);
    }

    #[test]
    fn too_small_or_unaligned_memory_is_refused() {
        assert_eq!(
            ram_ranges(16 << 20).unwrap_err().to_string(),
            "guest memory of 16777216 bytes is too small: at least 32 MiB is needed"
        );
        assert!(matches!(ram_ranges((64 << 20) + 1), Err(MemoryError::Unaligned(_))));
    }

    #[test]
    fn e820_reserves_the_ebda_and_bios_area() {
        let map = e820_map(512 << 20);
        assert_eq!(
            map,
            vec![
                E820Entry { addr: 0, size: 0x9fc00, kind: E820_RAM },
                E820Entry { addr: 0x9fc00, size: 0x100000 - 0x9fc00, kind: E820_RESERVED },
                E820Entry { addr: 0x100000, size: (512 << 20) - 0x100000, kind: E820_RAM },
            ]
        );
        let big = e820_map(5 << 30);
        assert_eq!(big[2], E820Entry { addr: 0x100000, size: 0xc000_0000 - 0x100000, kind: E820_RAM });
        assert_eq!(big[3], E820Entry { addr: 1 << 32, size: 2 << 30, kind: E820_RAM });
    }

    #[test]
    fn region_bars_go_above_ram_aligned_and_around_the_gap() {
        let place = |memory, sizes: &[u64]| pci_bar64_addresses(memory, sizes).unwrap();
        assert_eq!(place(64 << 20, &[64 << 20, 4 << 20]), vec![64 << 20, 128 << 20]);
        assert_eq!(place(512 << 20, &[1 << 30]), vec![1 << 30]);
        assert_eq!(place(2 << 30, &[1 << 30, 1 << 30]), vec![2 << 30, 1 << 32]);
        assert_eq!(place(4 << 30, &[1 << 30]), vec![5 << 30]);
        assert!(pci_bar64_addresses(1 << 30, &[PCI_BAR64_END]).is_err(), "a BAR that cannot fit is an error");
        assert_eq!(pci_registers_address(2), 0xc000_2000);
    }

    #[test]
    fn guest_memory_matches_the_ranges() {
        let mem = create_guest_memory(64 << 20).unwrap();
        let regions: Vec<_> = mem.iter().map(|r| (r.start_addr(), r.len())).collect();
        assert_eq!(regions, vec![(GuestAddress(0), 64 << 20)]);
    }
}
