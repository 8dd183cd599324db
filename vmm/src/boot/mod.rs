//! Putting a Linux kernel into guest memory: the kernel image (ELF vmlinux or bzImage, via
//! linux-loader), the initrd, the command line, the zero page with its e820 map, and the
//! MP table. The CPU state that goes with it is set in [`crate::vcpu`].

pub mod cmdline;
pub mod long_mode;
pub mod mptable;

use crate::memory::{self, E820Entry};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{bzimage::BzImage, elf::Elf, KernelLoader};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The zero page's magic values (Documentation/arch/x86/boot.rst).
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x100_0000;
/// Offset of the 64-bit entry point in a bzImage's protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// Errors loading a kernel and its boot data.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("kernel {}: {source}", path.display())]
    KernelFile {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    #[error("kernel {}: not an ELF vmlinux nor a bzImage (no ELF magic, no \"HdrS\" boot header); pass the vmlinux or arch/x86/boot/bzImage of a built kernel", .0.display())]
    NotAKernel(PathBuf),
    #[error("kernel {}: {source}", path.display())]
    KernelLoad {
        /// The path.
        path: PathBuf,
        /// The loader's error.
        source: linux_loader::loader::Error,
    },
    #[error("initrd {}: {source}", path.display())]
    InitrdFile {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    #[error("initrd {} ({size} bytes) does not fit in guest RAM above the kernel: give the VM more memory", path.display())]
    InitrdTooBig {
        /// The path.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    #[error("writing the command line: {0}")]
    Cmdline(linux_loader::loader::Error),
    #[error("writing boot_params: {0}")]
    BootParams(linux_loader::configurator::Error),
    #[error("writing guest memory at {addr:#x}: {source}")]
    GuestMemory {
        /// The address.
        addr: u64,
        /// The error.
        source: vm_memory::GuestMemoryError,
    },
    #[error("MP table: {0}")]
    MpTable(#[from] mptable::MpTableError),
}

/// The kind of kernel image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// An uncompressed ELF vmlinux, entered at its 64-bit entry (`startup_64`).
    Elf,
    /// A bzImage, entered at the 64-bit entry of its decompressor.
    BzImage,
}

/// A kernel loaded into guest memory.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// What was loaded.
    pub kind: KernelKind,
    /// Where the vCPU starts, in 64-bit mode.
    pub entry: GuestAddress,
    /// First byte past the kernel image.
    pub end: u64,
    /// The bzImage's setup header, to be completed in the zero page.
    pub setup_header: Option<setup_header>,
}

/// An initrd loaded into guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedInitrd {
    /// Its guest-physical address (page aligned).
    pub addr: GuestAddress,
    /// Its size in bytes.
    pub size: u64,
}

/// Identifies a kernel image by its first bytes.
pub fn kernel_kind(path: &Path) -> Result<KernelKind, BootError> {
    let mut head = [0u8; 0x206];
    let mut file = File::open(path).map_err(|source| BootError::KernelFile { path: path.into(), source })?;
    let n = read_up_to(&mut file, &mut head).map_err(|source| BootError::KernelFile { path: path.into(), source })?;
    if n >= 4 && head[..4] == *b"\x7fELF" {
        Ok(KernelKind::Elf)
    } else if n >= 0x206 && head[0x202..0x206] == *b"HdrS" {
        Ok(KernelKind::BzImage)
    } else {
        Err(BootError::NotAKernel(path.into()))
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Loads the kernel image at `path` into `mem`.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let kind = kernel_kind(path)?;
    let mut file = File::open(path).map_err(|source| BootError::KernelFile { path: path.into(), source })?;
    let load_error = |source| BootError::KernelLoad { path: path.into(), source };
    match kind {
        KernelKind::Elf => {
            let result = Elf::load(mem, None, &mut file, Some(memory::HIGH_RAM_START)).map_err(load_error)?;
            Ok(LoadedKernel { kind, entry: result.kernel_load, end: result.kernel_end, setup_header: None })
        }
        KernelKind::BzImage => {
            let result = BzImage::load(mem, None, &mut file, Some(memory::HIGH_RAM_START)).map_err(load_error)?;
            Ok(LoadedKernel {
                kind,
                entry: GuestAddress(result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET),
                end: result.kernel_end,
                setup_header: result.setup_header,
            })
        }
    }
}

/// Loads the initrd at the top of RAM below the MMIO gap, page aligned, above the kernel.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    mem_size: u64,
    kernel_end: u64,
) -> Result<LoadedInitrd, BootError> {
    let mut file = File::open(path).map_err(|source| BootError::InitrdFile { path: path.into(), source })?;
    let size = file.metadata().map_err(|source| BootError::InitrdFile { path: path.into(), source })?.len();
    let top = memory::low_ram_end(mem_size);
    let addr = top.checked_sub(size).map(|a| a & !0xfff).filter(|&a| a >= kernel_end);
    let Some(addr) = addr else {
        return Err(BootError::InitrdTooBig { path: path.into(), size });
    };
    let count = usize::try_from(size).map_err(|_| BootError::InitrdTooBig { path: path.into(), size })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, count)
        .map_err(|source| BootError::GuestMemory { addr, source })?;
    Ok(LoadedInitrd { addr: GuestAddress(addr), size })
}

/// Fills the zero page: the setup header (the bzImage's, or a fabricated one for an ELF
/// kernel), the command line, the initrd and the e820 map.
pub fn boot_params_for(
    header: Option<setup_header>,
    cmdline_size: usize,
    initrd: Option<LoadedInitrd>,
    e820: &[E820Entry],
) -> boot_params {
    let mut params = boot_params::default();
    if let Some(header) = header {
        params.hdr = header;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    }
    params.hdr.cmd_line_ptr = memory::CMDLINE_START.0 as u32;
    params.hdr.cmdline_size = cmdline_size as u32;
    if let Some(initrd) = initrd {
        // Below 4 GiB by construction (the initrd sits under the MMIO gap).
        params.hdr.ramdisk_image = initrd.addr.0 as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry { addr: entry.addr, size: entry.size, r#type: entry.kind };
    }
    params.e820_entries = e820.len().min(params.e820_table.len()) as u8;
    params
}

/// Writes the command line, the zero page and the MP table.
pub fn configure_system(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline: &linux_loader::cmdline::Cmdline,
    initrd: Option<LoadedInitrd>,
    mem_size: u64,
    cpus: u8,
) -> Result<(), BootError> {
    linux_loader::loader::load_cmdline(mem, memory::CMDLINE_START, cmdline).map_err(BootError::Cmdline)?;
    let cmdline_size = cmdline.as_cstring().map(|c| c.as_bytes().len()).unwrap_or(0);
    let params = boot_params_for(kernel.setup_header, cmdline_size, initrd, &memory::e820_map(mem_size));
    LinuxBootConfigurator::write_bootparams(&BootParams::new(&params, memory::ZERO_PAGE_START), mem)
        .map_err(BootError::BootParams)?;
    mptable::write(mem, cpus)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(bytes: &[u8]) -> vmm_sys_util::tempfile::TempFile {
        let file = vmm_sys_util::tempfile::TempFile::new().unwrap();
        file.as_file().write_all(bytes).unwrap();
        file
    }

    #[test]
    fn recognises_elf_and_bzimage_and_refuses_garbage() {
        let elf = temp_file(b"\x7fELF\x02\x01\x01");
        assert_eq!(kernel_kind(elf.as_path()).unwrap(), KernelKind::Elf);
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let bz = temp_file(&bz);
        assert_eq!(kernel_kind(bz.as_path()).unwrap(), KernelKind::BzImage);
        let garbage = temp_file(b"this is not a kernel");
        let err = kernel_kind(garbage.as_path()).unwrap_err().to_string();
        assert!(err.contains("not an ELF vmlinux nor a bzImage"), "{err}");
        assert!(matches!(kernel_kind(Path::new("/nonexistent/vmlinux")), Err(BootError::KernelFile { .. })));
    }

    #[test]
    fn a_truncated_elf_is_a_load_error() {
        let mem = memory::create_guest_memory(64 << 20).unwrap();
        let elf = temp_file(b"\x7fELF\x02\x01\x01\x00");
        assert!(matches!(load_kernel(&mem, elf.as_path()), Err(BootError::KernelLoad { .. })));
    }

    #[test]
    fn zero_page_carries_cmdline_initrd_and_e820() {
        let e820 = memory::e820_map(128 << 20);
        let initrd = LoadedInitrd { addr: GuestAddress(0x700_0000), size: 0x1234 };
        let params = boot_params_for(None, 42, Some(initrd), &e820);
        assert_eq!({ params.hdr.boot_flag }, 0xaa55);
        assert_eq!({ params.hdr.header }, 0x5372_6448);
        assert_eq!({ params.hdr.type_of_loader }, 0xff);
        assert_eq!({ params.hdr.kernel_alignment }, 0x100_0000);
        assert_eq!({ params.hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ params.hdr.cmdline_size }, 42);
        assert_eq!((params.hdr.ramdisk_image, params.hdr.ramdisk_size), (0x700_0000, 0x1234));
        assert_eq!({ params.e820_entries }, 3);
        assert_eq!({ params.e820_table[2].addr }, 0x100000);
        assert_eq!({ params.e820_table[2].size }, (128 << 20) - 0x100000);
        assert_eq!({ params.e820_table[1].r#type }, memory::E820_RESERVED);
    }

    #[test]
    fn bzimage_header_is_kept_and_completed() {
        let header = setup_header { kernel_alignment: 0x20_0000, version: 0x020f, ..Default::default() };
        let params = boot_params_for(Some(header), 10, None, &memory::e820_map(64 << 20));
        assert_eq!({ params.hdr.kernel_alignment }, 0x20_0000);
        assert_eq!({ params.hdr.version }, 0x020f);
        assert_eq!({ params.hdr.ramdisk_image }, 0);
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_ram_page_aligned() {
        let mem = memory::create_guest_memory(64 << 20).unwrap();
        let initrd = temp_file(&[0xab; 5000]);
        let loaded = load_initrd(&mem, initrd.as_path(), 64 << 20, 0x200_0000).unwrap();
        assert_eq!(loaded, LoadedInitrd { addr: GuestAddress(((64 << 20) - 5000) & !0xfff), size: 5000 });
        let byte: u8 = mem.read_obj(GuestAddress(loaded.addr.0 + 4999)).unwrap();
        assert_eq!(byte, 0xab);
        let err = load_initrd(&mem, initrd.as_path(), 64 << 20, (64 << 20) - 4096).unwrap_err();
        assert!(matches!(err, BootError::InitrdTooBig { size: 5000, .. }));
    }
}
