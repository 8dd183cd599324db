//! Reading the guest the way its CPU does: a walk of its page tables, and the bytes of the
//! instruction a vCPU stopped at.

use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Translates a guest-virtual address by walking the guest's page tables (4- or 5-level).
pub fn translate(mem: &GuestMemoryMmap, cr0: u64, cr3: u64, cr4: u64, vaddr: u64) -> Option<u64> {
    const PG: u64 = 1 << 31;
    const LA57: u64 = 1 << 12;
    if cr0 & PG == 0 {
        return Some(vaddr);
    }
    let levels: u32 = if cr4 & LA57 != 0 { 5 } else { 4 };
    let mut table = cr3 & 0x000f_ffff_ffff_f000;
    for level in (0..levels).rev() {
        let shift = 12 + 9 * level;
        let index = (vaddr >> shift) & 0x1ff;
        let entry: u64 = mem.read_obj(GuestAddress(table + index * 8)).ok()?;
        if entry & 1 == 0 {
            return None;
        }
        let frame = entry & 0x000f_ffff_ffff_f000;
        if level == 0 || (level <= 2 && entry & 0x80 != 0) {
            let page_mask = (1u64 << shift) - 1;
            return Some((frame & !page_mask) | (vaddr & page_mask));
        }
        table = frame;
    }
    None
}

/// The instruction bytes at the vCPU's RIP, if they can be read.
pub fn instruction_bytes(vcpu: &VcpuFd, mem: &GuestMemoryMmap) -> Option<(u64, Vec<u8>)> {
    let regs = vcpu.get_regs().ok()?;
    let sregs = vcpu.get_sregs().ok()?;
    let phys = translate(mem, sregs.cr0, sregs.cr3, sregs.cr4, regs.rip)?;
    let mut bytes = vec![0u8; 15];
    // The instruction may end at a page boundary followed by an unmapped page: keep what reads.
    let readable = (0..bytes.len())
        .take_while(|i| mem.read_slice(&mut bytes[*i..*i + 1], GuestAddress(phys + *i as u64)).is_ok())
        .count();
    bytes.truncate(readable);
    Some((regs.rip, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::long_mode;

    #[test]
    fn translate_walks_4_level_tables_with_large_pages() {
        let mem = crate::memory::create_guest_memory(64 << 20).unwrap();
        long_mode::write_tables(&mem).unwrap();
        let cr0 = 1 << 31;
        assert_eq!(translate(&mem, cr0, 0x9000, 0, 0x0123_4567), Some(0x0123_4567));
        assert_eq!(translate(&mem, cr0, 0x9000, 0, 0x1_0000_0000), None, "only the first 4 GiB are mapped");
        assert_eq!(translate(&mem, 0, 0, 0, 0xdead), Some(0xdead), "paging off");
        // A 4 KiB mapping: PD entry 1 -> a page table mapping page 3 to 0x30_0000.
        mem.write_obj(0xc000u64 | 3, GuestAddress(0xb000 + 8)).unwrap();
        mem.write_obj(0x30_0000u64 | 3, GuestAddress(0xc000 + 3 * 8)).unwrap();
        assert_eq!(translate(&mem, cr0, 0x9000, 0, (1 << 21) + 3 * 4096 + 0x10), Some(0x30_0010));
    }
}
