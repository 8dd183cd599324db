//! What a vCPU needs to enter a kernel in 64-bit mode: a GDT with the boot code and data
//! segments Linux expects (`__BOOT_CS` = 0x10, `__BOOT_DS` = 0x18), an empty IDT, and
//! identity page tables for the first 4 GiB (2 MiB pages: RAM below the MMIO gap, the gap,
//! and region BARs placed just above small guests' RAM), then the special registers that
//! point at them. Linux replaces these tables at once; they matter for its first
//! instructions and for tiny test guests.

use crate::memory::{GDT_START, IDT_START, PML4_START};
use kvm_bindings::{kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Code segment selector of the Linux 64-bit boot protocol.
pub const BOOT_CS: u16 = 0x10;
/// Data segment selector of the Linux 64-bit boot protocol.
pub const BOOT_DS: u16 = 0x18;
/// Task state segment selector (KVM wants a usable TR).
pub const BOOT_TSS: u16 = 0x20;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Page-table entry flags: present, writable; PS for a 2 MiB leaf.
const PTE_PRESENT_RW: u64 = 0x3;
const PDE_LARGE: u64 = 0x80;

/// GDT entries: null, null, code (0x10), data (0x18), TSS (0x20).
const GDT: [u64; 5] = [
    0,
    0,
    gdt_entry(0xa09b, 0, 0xfffff), // 64-bit code, present, readable, 4 KiB granules
    gdt_entry(0xc093, 0, 0xfffff), // data, present, writable, 4 KiB granules
    gdt_entry(0x808b, 0, 0xfffff), // busy 64-bit TSS
];

/// Packs a segment descriptor from its flag word (type, S, DPL, P in bits 0..8; AVL, L, D/B,
/// G in bits 12..16), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let flags = flags as u64;
    let base = base as u64;
    let limit = limit as u64;
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The `kvm_segment` a descriptor loads as, for `selector`.
pub fn segment_from_entry(entry: u64, selector: u16) -> kvm_segment {
    let granular = (entry >> 55) & 1 == 1;
    let raw_limit = ((entry >> 32) & 0x000f_0000) | (entry & 0xffff);
    kvm_segment {
        base: ((entry >> 32) & 0xff00_0000) | ((entry >> 16) & 0x00ff_ffff),
        limit: if granular { ((raw_limit << 12) | 0xfff) as u32 } else { raw_limit as u32 },
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granular as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// GiB identity-mapped at entry: one page directory each, after the PML4 and the PDPT.
const IDENTITY_MAPPED_GIB: u64 = 4;

/// Writes the GDT, an empty IDT and the identity page tables into guest memory.
pub fn write_tables(mem: &GuestMemoryMmap) -> Result<(), vm_memory::GuestMemoryError> {
    for (i, entry) in GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_START.0 + (i * 8) as u64))?;
    }
    mem.write_obj(0u64, IDT_START)?;
    let pdpt = PML4_START.0 + 0x1000;
    mem.write_obj(pdpt | PTE_PRESENT_RW, PML4_START)?;
    for gib in 0..IDENTITY_MAPPED_GIB {
        let pd = PML4_START.0 + 0x2000 + gib * 0x1000;
        mem.write_obj(pd | PTE_PRESENT_RW, GuestAddress(pdpt + gib * 8))?;
        for i in 0..512u64 {
            let addr = (gib << 30) | (i << 21);
            mem.write_obj(addr | PDE_LARGE | PTE_PRESENT_RW, GuestAddress(pd + i * 8))?;
        }
    }
    Ok(())
}

/// Sets `sregs` for 64-bit entry: segments from the GDT, paging on with the identity tables.
pub fn configure_sregs(sregs: &mut kvm_sregs) {
    let code = segment_from_entry(GDT[2], BOOT_CS);
    let data = segment_from_entry(GDT[3], BOOT_DS);
    let tss = segment_from_entry(GDT[4], BOOT_TSS);
    sregs.gdt.base = GDT_START.0;
    sregs.gdt.limit = (std::mem::size_of_val(&GDT) - 1) as u16;
    sregs.idt.base = IDT_START.0;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr3 = PML4_START.0;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;

    #[test]
    fn descriptors_decode_to_the_intended_segments() {
        let code = segment_from_entry(GDT[2], BOOT_CS);
        assert_eq!((code.type_, code.present, code.l, code.db, code.g, code.s), (0xb, 1, 1, 0, 1, 1));
        assert_eq!((code.base, code.limit), (0, 0xffff_ffff));
        let data = segment_from_entry(GDT[3], BOOT_DS);
        assert_eq!((data.type_, data.l, data.db, data.s), (0x3, 0, 1, 1));
        let tss = segment_from_entry(GDT[4], BOOT_TSS);
        assert_eq!((tss.type_, tss.s), (0xb, 0));
    }

    #[test]
    fn gdt_entry_packs_base_and_limit() {
        let e = gdt_entry(0x0093, 0x1234_5678, 0x000a_bcde);
        let seg = segment_from_entry(e, 0x8);
        assert_eq!((seg.base, seg.limit, seg.g), (0x1234_5678, 0xa_bcde, 0));
    }

    #[test]
    fn identity_tables_map_4gib_with_2mib_pages() {
        let mem = create_guest_memory(64 << 20).unwrap();
        write_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(PML4_START).unwrap();
        assert_eq!(pml4, 0xa003);
        let pde_last: u64 = mem.read_obj(GuestAddress(0xb000 + 511 * 8)).unwrap();
        assert_eq!(pde_last, (511 << 21) | 0x83);
        let pdpt3: u64 = mem.read_obj(GuestAddress(0xa000 + 3 * 8)).unwrap();
        assert_eq!(pdpt3, 0xe003);
        let top: u64 = mem.read_obj(GuestAddress(0xe000 + 511 * 8)).unwrap();
        assert_eq!(top, (3 << 30) | (511 << 21) | 0x83);
        let gdt2: u64 = mem.read_obj(GuestAddress(0x510)).unwrap();
        assert_eq!(gdt2, GDT[2]);
    }

    #[test]
    fn sregs_enter_long_mode() {
        let mut sregs = kvm_sregs::default();
        configure_sregs(&mut sregs);
        assert_eq!(sregs.cs.selector, 0x10);
        assert_eq!(sregs.ss.selector, 0x18);
        assert_eq!(sregs.cr3, 0x9000);
        assert_eq!(sregs.cr0 & (1 << 31 | 1), 1 << 31 | 1);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(sregs.gdt.limit, 39);
    }
}
