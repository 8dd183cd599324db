//! The Intel MultiProcessor table, how an SMP guest without ACPI finds its CPUs, its IOAPIC
//! and the routing of the ISA interrupts (Intel MP specification 1.4).
//!
//! It goes at the start of the EBDA, where Linux's `smp_scan_config` looks for it.

use crate::memory::{APIC_START, EBDA_START, IOAPIC_START};
use vm_memory::{Bytes, GuestMemoryMmap};

/// The most vCPUs the table (and this VMM) supports.
pub const MAX_CPUS: u8 = 32;
/// IOAPIC pins routed one to one from ISA IRQs.
const IOAPIC_PINS: u8 = 24;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const SPEC_REVISION: u8 = 4;

const ENTRY_CPU: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_INTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;
const IRQ_INT: u8 = 0;
const IRQ_NMI: u8 = 1;
const IRQ_EXTINT: u8 = 3;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
/// CPUID.1 signature and feature flags reported for each CPU (FPU and APIC present).
const CPU_SIGNATURE: u32 = (6 << 8) | (1 << 4) | 1;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

/// Errors writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    #[error("{0} vCPUs: the MP table supports 1 to {MAX_CPUS}")]
    TooManyCpus(u8),
    #[error("writing it to guest memory: {0}")]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)).wrapping_neg()
}

/// The IOAPIC's id: the first one after the CPUs' local APIC ids.
pub fn ioapic_id(cpus: u8) -> u8 {
    cpus
}

/// The configuration table (header and entries) for `cpus` vCPUs.
fn config_table(cpus: u8) -> Vec<u8> {
    let mut entries = Vec::new();
    for cpu in 0..cpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 };
        entries.extend([ENTRY_CPU, cpu, APIC_VERSION, flags]);
        entries.extend(CPU_SIGNATURE.to_le_bytes());
        entries.extend(CPU_FEATURES.to_le_bytes());
        entries.extend([0u8; 8]);
    }
    entries.extend([ENTRY_BUS, 0]);
    entries.extend(*b"ISA   ");
    entries.extend([ENTRY_IOAPIC, ioapic_id(cpus), IOAPIC_VERSION, 1]);
    entries.extend((IOAPIC_START as u32).to_le_bytes());
    for irq in 0..IOAPIC_PINS {
        // Conforming polarity and trigger: edge, active high for ISA.
        entries.extend([ENTRY_INTSRC, IRQ_INT, 0, 0, 0, irq, ioapic_id(cpus), irq]);
    }
    // LINT0 of every local APIC is the 8259's ExtINT, LINT1 is NMI.
    entries.extend([ENTRY_LINTSRC, IRQ_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend([ENTRY_LINTSRC, IRQ_NMI, 0, 0, 0, 0, 0xff, 1]);

    let count = u16::from(cpus) + 2 + u16::from(IOAPIC_PINS) + 2;
    let length = (44 + entries.len()) as u16;
    let mut table = Vec::with_capacity(usize::from(length));
    table.extend(*b"PCMP");
    table.extend(length.to_le_bytes());
    table.extend([SPEC_REVISION, 0]);
    table.extend(*b"MSHARE  ");
    table.extend(*b"MSHARE-VMM  ");
    table.extend([0u8; 4 + 2]); // no OEM table
    table.extend(count.to_le_bytes());
    table.extend((APIC_START as u32).to_le_bytes());
    table.extend([0u8; 4]);
    table.extend(entries);
    table[7] = checksum(&table);
    table
}

/// The floating pointer structure that points at the configuration table.
fn floating_pointer(table_addr: u32) -> [u8; 16] {
    let mut mpf = [0u8; 16];
    mpf[..4].copy_from_slice(b"_MP_");
    mpf[4..8].copy_from_slice(&table_addr.to_le_bytes());
    mpf[8] = 1; // length in 16-byte units
    mpf[9] = SPEC_REVISION;
    mpf[10] = checksum(&mpf);
    mpf
}

/// Writes the MP table for `cpus` vCPUs at the start of the EBDA.
pub fn write(mem: &GuestMemoryMmap, cpus: u8) -> Result<(), MpTableError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(MpTableError::TooManyCpus(cpus));
    }
    let table_addr = EBDA_START.0 + 16;
    mem.write_slice(&floating_pointer(table_addr as u32), EBDA_START)?;
    mem.write_slice(&config_table(cpus), vm_memory::GuestAddress(table_addr))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;
    use vm_memory::GuestAddress;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    #[test]
    fn table_checksums_to_zero_and_counts_its_entries() {
        let table = config_table(4);
        assert_eq!(&table[..4], b"PCMP");
        assert_eq!(sum(&table), 0);
        assert_eq!(u16::from_le_bytes([table[4], table[5]]) as usize, table.len());
        assert_eq!(u16::from_le_bytes([table[34], table[35]]), 4 + 2 + 24 + 2);
        assert_eq!(table.len(), 44 + 4 * 20 + 8 + 8 + 24 * 8 + 2 * 8);
    }

    #[test]
    fn only_the_first_cpu_is_the_boot_processor() {
        let table = config_table(2);
        let cpu0 = &table[44..64];
        let cpu1 = &table[64..84];
        assert_eq!((cpu0[0], cpu0[1], cpu0[3]), (ENTRY_CPU, 0, CPU_ENABLED | CPU_BOOTPROCESSOR));
        assert_eq!((cpu1[0], cpu1[1], cpu1[3]), (ENTRY_CPU, 1, CPU_ENABLED));
    }

    #[test]
    fn written_table_is_found_through_the_floating_pointer() {
        let mem = create_guest_memory(64 << 20).unwrap();
        write(&mem, 8).unwrap();
        let mut mpf = [0u8; 16];
        mem.read_slice(&mut mpf, EBDA_START).unwrap();
        assert_eq!(&mpf[..4], b"_MP_");
        assert_eq!(sum(&mpf), 0);
        let addr = u32::from_le_bytes([mpf[4], mpf[5], mpf[6], mpf[7]]);
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(u64::from(addr))).unwrap();
        assert_eq!(&sig, b"PCMP");
        // The whole table stays inside the EBDA page below 640 KiB.
        assert!(u64::from(addr) + config_table(MAX_CPUS).len() as u64 <= 0xa0000);
    }

    #[test]
    fn cpu_count_is_bounded() {
        let mem = create_guest_memory(64 << 20).unwrap();
        assert!(matches!(write(&mem, 0), Err(MpTableError::TooManyCpus(0))));
        assert_eq!(write(&mem, 33).unwrap_err().to_string(), "33 vCPUs: the MP table supports 1 to 32");
    }
}
