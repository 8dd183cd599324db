//! Tiny guests: a few bytes of 64-bit machine code in a minimal ELF that `mshare-vmm`
//! boots like a kernel (64-bit entry at [`LOAD_ADDR`], identity-mapped low 4 GiB). They
//! exercise one VMM mechanism each at full speed even where KVM emulates guest kernel
//! code; the tests and benchmarks build them with these helpers.

/// Where the tiny guests' code is loaded and entered.
pub const LOAD_ADDR: u64 = 0x10_0000;

/// A minimal ELF64 executable with one PT_LOAD segment holding `code` at [`LOAD_ADDR`].
pub fn tiny_elf(code: &[u8]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let mut elf = Vec::new();
    elf.extend(b"\x7fELF\x02\x01\x01");
    elf.resize(16, 0);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(0x3eu16.to_le_bytes()); // x86-64
    elf.extend(1u32.to_le_bytes());
    elf.extend(LOAD_ADDR.to_le_bytes()); // entry
    elf.extend((EHDR as u64).to_le_bytes()); // phoff
    elf.extend(0u64.to_le_bytes()); // shoff
    elf.extend(0u32.to_le_bytes()); // flags
    elf.extend((EHDR as u16).to_le_bytes());
    elf.extend((PHDR as u16).to_le_bytes());
    elf.extend(1u16.to_le_bytes()); // phnum
    elf.extend([0u8; 6]); // shentsize, shnum, shstrndx
    elf.extend(1u32.to_le_bytes()); // PT_LOAD
    elf.extend(5u32.to_le_bytes()); // R+X
    elf.extend(((EHDR + PHDR) as u64).to_le_bytes()); // offset
    elf.extend(LOAD_ADDR.to_le_bytes()); // vaddr
    elf.extend(LOAD_ADDR.to_le_bytes()); // paddr
    elf.extend((code.len() as u64).to_le_bytes());
    elf.extend((code.len() as u64).to_le_bytes());
    elf.extend(0x1000u64.to_le_bytes());
    elf.extend(code);
    elf
}

/// `mov dx, port`
pub fn mov_dx(port: u16) -> Vec<u8> {
    let mut v = vec![0x66, 0xba];
    v.extend(port.to_le_bytes());
    v
}

/// Writes `status` to the exit device, then spins.
pub fn exit_with(status: u8) -> Vec<u8> {
    let mut v = mov_dx(0xf4);
    v.extend([0xb0, status, 0xee, 0xeb, 0xfe]); // mov al, status; out dx, al; jmp $
    v
}

/// `out dx, al` of `al` to the exit device (status from a register, not an immediate).
pub fn exit_with_al() -> Vec<u8> {
    let mut v = mov_dx(0xf4);
    v.extend([0xee, 0xeb, 0xfe]);
    v
}

/// `mov rax, addr`
pub fn mov_rax(addr: u64) -> Vec<u8> {
    let mut v = vec![0x48, 0xb8];
    v.extend(addr.to_le_bytes());
    v
}

/// `mov dx, 0xcf8; mov eax, addr; out dx, eax; mov dx, 0xcfc; in eax, dx` for 00:slot.0 `reg`.
pub fn config_read(slot: u32, reg: u32) -> Vec<u8> {
    let mut v = mov_dx(0xcf8);
    v.push(0xb8);
    v.extend((0x8000_0000u32 | slot << 11 | reg << 2).to_le_bytes());
    v.push(0xef);
    v.extend(mov_dx(0xcfc));
    v.push(0xed);
    v
}

/// Writes `value` to register `reg` of 00:slot.0.
pub fn config_write(slot: u32, reg: u32, value: u32) -> Vec<u8> {
    let mut v = mov_dx(0xcf8);
    v.push(0xb8);
    v.extend((0x8000_0000u32 | slot << 11 | reg << 2).to_le_bytes());
    v.push(0xef);
    v.extend(mov_dx(0xcfc));
    v.push(0xb8);
    v.extend(value.to_le_bytes());
    v.push(0xef);
    v
}

/// rbx = the address in BAR2 of 00:01.0, read from its configuration space.
pub fn bar2_address_into_rbx() -> Vec<u8> {
    let mut v = config_read(1, 6);
    v.extend([0x25, 0xf0, 0xff, 0xff, 0xff]); // and eax, 0xfffffff0
    v.extend([0x89, 0xc3]); // mov ebx, eax
    v.extend(config_read(1, 7));
    v.extend([0x48, 0xc1, 0xe0, 0x20]); // shl rax, 32
    v.extend([0x48, 0x09, 0xd8]); // or rax, rbx
    v.extend([0x48, 0x89, 0xc3]); // mov rbx, rax
    v
}

/// Touches one byte in each of `pages` 4 KiB pages from `[rbx]` upwards (rbx ends past them).
pub fn touch_pages_from_rbx(pages: u32) -> Vec<u8> {
    let mut v = vec![0x48, 0xc7, 0xc1];
    v.extend(pages.to_le_bytes()); // mov rcx, pages
    v.extend([0xc6, 0x03, 0x01]); // loop: mov byte [rbx], 1
    v.extend([0x48, 0x81, 0xc3, 0x00, 0x10, 0x00, 0x00]); // add rbx, 4096
    v.extend([0x48, 0xff, 0xc9]); // dec rcx
    v.extend([0x75, 0xf1]); // jnz loop
    v
}

/// Touches (writes 1 to) every 4 KiB page of BAR2 of 00:01.0, `pages` of them, leaving rbx
/// at BAR2 again.
pub fn touch_bar2(pages: u32) -> Vec<u8> {
    let mut v = bar2_address_into_rbx();
    v.extend(touch_pages_from_rbx(pages));
    v.extend(bar2_address_into_rbx());
    v
}

/// `mov byte [rbx + offset], value`
pub fn write_byte_at_rbx(offset: u32, value: u8) -> Vec<u8> {
    let mut v = vec![0xc6, 0x83];
    v.extend(offset.to_le_bytes());
    v.push(value);
    v
}

/// Spins until `byte [rbx + offset]` is `value`.
pub fn wait_for_byte_at_rbx(offset: u32, value: u8) -> Vec<u8> {
    let mut v = vec![0x80, 0xbb]; // loop: cmp byte [rbx + offset], value
    v.extend(offset.to_le_bytes());
    v.push(value);
    v.extend([0x75, 0xf7]); // jne loop
    v
}

/// `mov al, [rbx + offset]`
pub fn read_byte_at_rbx(offset: u32) -> Vec<u8> {
    let mut v = vec![0x8a, 0x83];
    v.extend(offset.to_le_bytes());
    v
}

/// Prints `marker` and a newline on the UART.
pub fn print_marker(marker: u8) -> Vec<u8> {
    let mut v = mov_dx(0x3f8);
    v.extend([0xb0, marker, 0xee, 0xb0, b'\n', 0xee]); // mov al, marker; out dx, al; '\n'
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_header_points_at_the_code() {
        let elf = tiny_elf(&[0xf4]);
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(u64::from_le_bytes(elf[24..32].try_into().unwrap()), LOAD_ADDR);
        assert_eq!(elf.len(), 64 + 56 + 1);
        assert_eq!(*elf.last().unwrap(), 0xf4);
    }

    #[test]
    fn config_read_encodes_the_address() {
        let code = config_read(1, 6);
        assert_eq!(&code[5..9], &(0x8000_0818u32).to_le_bytes());
    }
}
