//! `stage2-hostile-vmm mirror|pins|slot-times`: a hostile VMM for KVM's shared stage-2 tables (the
//! host patch, docs/regions.md), checking what KVM guarantees whatever a VMM does. The
//! nested host runs it (vmm/tests/nested.rs); it needs a KVM with `KVM_CAP_SHARED_STAGE2`.
//!
//! `mirror`: stage-2 must mirror the VMM's mapping of a region and its permissions while
//! a guest runs, whatever the VMM does to that mapping: make it read-only (all of it or
//! one page of a granule), punch a hole in the file under it, or map another file over
//! part of it. Each case runs a 32-bit guest that reads and writes a 2 MiB
//! `KVM_MEM_SHARED_STAGE2` slot, one 4 KiB-leaf granule whose table other VMs could link
//! too, and checks every value the guest sees, and what lands in the file, against the
//! mapping at that moment.
//!
//! `pins`: a shared slot pins its memory for as long as it exists, so the VMM pays for
//! it: its `VmPin` grows by the slot's size per slot, within RLIMIT_MEMLOCK unless it has
//! CAP_IPC_LOCK, and shrinks back when the slots go.
//!
//! `slot-times PATH MIN [OFFSET VALUE]`: how long registering a shared slot over the file
//! at PATH takes while other VMs (e.g. a guest toggling its BAR's decoding) register and
//! delete theirs over the same pages: registers and deletes one at least MIN times, and
//! until the file's byte at OFFSET is VALUE; prints `SLOT-TIMES count=N min_us=..
//! median_us=.. max_us=.. vm_pin_during_kib=.. vm_pin_after_kib=..`.
//!
//! Prints `HOSTILE-VMM case=NAME ok links=N` per case (N: the VM's
//! `stage2_shared_links`, showing the granule really went through a shared table) or
//! `HOSTILE-VMM case=NAME FAIL: what happened`, and exits 1 if any case failed.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_userspace_memory_region, kvm_userspace_memory_region2};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use vmm::shared_stage2::{self, KVM_MEM_SHARED_STAGE2};

const RAM_SIZE: usize = 1 << 20;
const CODE_GPA: u64 = 0x1000;
const REGION_GPA: u64 = 0x20_0000;
const REGION_SIZE: usize = 2 << 20;
const PAGE: usize = 4096;
/// The guest reports each step's value (EAX) on this port.
const STEP_PORT: u16 = 0x10;

type Result<T> = std::result::Result<T, String>;
/// One case: the machine it ran, for its statistics, or what went wrong.
type Case = fn() -> Result<Machine>;

/// One guest access to the region, at an offset into it.
#[derive(Clone, Copy)]
enum Op {
    /// `mov eax, [region + off]`, then report EAX.
    Read(usize),
    /// `mov [region + off], value`, then report the value.
    Write(usize, u32),
}

/// What one `KVM_RUN` ended with.
#[derive(Debug, PartialEq)]
enum Exit {
    Step(u32),
    /// `KVM_RUN` failed with EFAULT: what KVM does for a guest write to memory the VMM
    /// maps read-only (with `KVM_EXIT_MEMORY_FAULT`'s address where KVM gives one).
    Fault(Option<u64>),
    Halt,
}

/// 32-bit flat-mode code for `ops`, a report on [`STEP_PORT`] after each, then `hlt`.
fn assemble(ops: &[Op]) -> Vec<u8> {
    let mut code = Vec::new();
    for op in ops {
        match *op {
            Op::Read(off) => {
                code.push(0xa1); // mov eax, [moffs32]
                code.extend(region_address(off).to_le_bytes());
            }
            Op::Write(off, value) => {
                code.push(0xb8); // mov eax, imm32
                code.extend(value.to_le_bytes());
                code.push(0xa3); // mov [moffs32], eax
                code.extend(region_address(off).to_le_bytes());
            }
        }
        code.extend([0xe7, STEP_PORT as u8]); // out imm8, eax
    }
    code.push(0xf4); // hlt
    code
}

fn region_address(off: usize) -> u32 {
    (REGION_GPA as usize + off) as u32
}

fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// An anonymous or file mapping owned by this process.
struct Mapping {
    addr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize, flags: libc::c_int, fd: libc::c_int) -> Result<Self> {
        // SAFETY: a fresh mapping at an address the kernel picks; the result is checked.
        let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, 0) };
        if addr == libc::MAP_FAILED {
            return Err(os_error("mmap"));
        }
        Ok(Self { addr: addr.cast(), len })
    }

    fn write(&self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= self.len);
        // SAFETY: in bounds of a live mapping (checked above); the one vCPU is stopped
        // (this thread runs it), so nothing accesses the memory meanwhile.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.addr.add(off), bytes.len()) };
    }

    fn protect(&self, off: usize, len: usize, prot: libc::c_int) -> Result<()> {
        assert!(off + len <= self.len);
        // SAFETY: a page-aligned range inside this mapping.
        if unsafe { libc::mprotect(self.addr.add(off).cast(), len, prot) } != 0 {
            return Err(os_error("mprotect"));
        }
        Ok(())
    }

    /// Maps the first `len` bytes of `file` over this mapping at `off`.
    fn map_over(&self, off: usize, len: usize, file: &File) -> Result<()> {
        assert!(off + len <= self.len);
        // SAFETY: MAP_FIXED over a page-aligned range of this process's own mapping, which
        // nothing in this process holds a reference into.
        let addr = unsafe {
            libc::mmap(
                self.addr.add(off).cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(os_error("mmap MAP_FIXED"));
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping this value owns; the VM using it is dropped first.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}

fn memfd(name: &str, size: usize) -> Result<File> {
    let cname = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: a valid C string; the fd is checked and then owned by the File.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(os_error("memfd_create"));
    }
    // SAFETY: a fresh fd that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size as u64).map_err(|e| format!("ftruncate: {e}"))?;
    Ok(file)
}

/// A VM of a KVM that shares stage-2 tables (`KVM_CAP_SHARED_STAGE2`).
fn shared_stage2_vm() -> Result<VmFd> {
    let kvm = Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    if !shared_stage2::supported(&vm) {
        return Err("this host's KVM has no KVM_CAP_SHARED_STAGE2 (run on the nested host)".to_owned());
    }
    Ok(vm)
}

/// Registers `vm`'s shared slot 1 at [`REGION_GPA`] over the first `size` bytes of
/// `region` (0: deletes it). The caller keeps `region` mapped until the VM is gone.
fn set_shared_slot(vm: &VmFd, region: &Mapping, size: usize) -> Result<()> {
    let slot = kvm_userspace_memory_region2 {
        slot: 1,
        flags: if size == 0 { 0 } else { KVM_MEM_SHARED_STAGE2 },
        guest_phys_addr: REGION_GPA,
        memory_size: size as u64,
        userspace_addr: region.addr as u64,
        ..Default::default()
    };
    // SAFETY: the mapping outlives the slot (the caller's contract).
    unsafe { vm.set_user_memory_region2(slot) }.map_err(|e| format!("shared stage-2 memslot: {e}"))
}

/// A VM with 1 MiB of RAM holding the code and the region's slot, and its one vCPU.
struct Machine {
    // Field order is drop order: the VM and its slots go before the memory they map.
    vcpu: VcpuFd,
    vm: VmFd,
    region: Mapping,
    file: File,
    _ram: Mapping,
}

impl Machine {
    /// A VM running `ops` over a region whose file holds `words` (offset, value).
    fn new(ops: &[Op], words: &[(usize, u32)]) -> Result<Self> {
        let file = memfd("stage2-hostile-vmm", REGION_SIZE)?;
        for &(off, value) in words {
            file.write_all_at(&value.to_le_bytes(), off as u64).map_err(|e| format!("pwrite: {e}"))?;
        }
        Self::over(ops, file)
    }

    /// A VM running `ops` over the region in `file` (which other VMs may map too).
    fn over(ops: &[Op], file: File) -> Result<Self> {
        let vm = shared_stage2_vm()?;
        let ram = Mapping::new(RAM_SIZE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1)?;
        ram.write(CODE_GPA as usize, &assemble(ops));
        let region = Mapping::new(REGION_SIZE, libc::MAP_SHARED, file.as_raw_fd())?;
        let ram_slot = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: RAM_SIZE as u64,
            userspace_addr: ram.addr as u64,
        };
        // SAFETY: the RAM mapping outlives the VM (field order of Machine).
        unsafe { vm.set_user_memory_region(ram_slot) }.map_err(|e| format!("RAM memslot: {e}"))?;
        set_shared_slot(&vm, &region, REGION_SIZE)?;
        let vcpu = vm.create_vcpu(0).map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
        enter_flat_protected_mode(&vcpu)?;
        Ok(Self { vcpu, vm, region, file, _ram: ram })
    }

    fn run(&mut self) -> Result<Exit> {
        match self.vcpu.run() {
            Ok(VcpuExit::IoOut(STEP_PORT, data)) if data.len() == 4 => {
                Ok(Exit::Step(u32::from_le_bytes([data[0], data[1], data[2], data[3]])))
            }
            Ok(VcpuExit::MemoryFault { gpa, .. }) => Ok(Exit::Fault(Some(gpa))),
            Ok(VcpuExit::Hlt) => Ok(Exit::Halt),
            Ok(other) => Err(format!("unexpected exit {other:?}")),
            Err(e) if e.errno() == libc::EFAULT => Ok(Exit::Fault(None)),
            Err(e) => Err(format!("KVM_RUN: {e}")),
        }
    }

    /// Runs to the next step, which must report `value`.
    fn expect_step(&mut self, value: u32, what: &str) -> Result<()> {
        match self.run()? {
            Exit::Step(v) if v == value => Ok(()),
            exit => Err(format!("{what}: expected the guest to report {value:#x}, got {exit:x?}")),
        }
    }

    /// Runs to the next step, which must be refused: the guest's write to region offset
    /// `off` fails `KVM_RUN` with EFAULT, as plain KVM does for a write to memory the VMM
    /// maps read-only, and the file keeps `kept` there. The vCPU stays at the write.
    fn expect_write_refused(&mut self, off: usize, kept: u32, what: &str) -> Result<()> {
        let gpa = REGION_GPA + off as u64;
        let exit = self.run()?;
        let word = self.file_word(off)?;
        let refused = matches!(exit, Exit::Fault(None)) || exit == Exit::Fault(Some(gpa));
        if !refused || word != kept {
            return Err(format!(
                "{what}: expected KVM_RUN to fail with EFAULT (at {gpa:#x}) and the file to keep {kept:#x}; \
                 got {exit:x?} and the file holds {word:#x}"
            ));
        }
        Ok(())
    }

    fn expect_halt(&mut self) -> Result<()> {
        match self.run()? {
            Exit::Halt => Ok(()),
            exit => Err(format!("expected the guest to halt, got {exit:x?}")),
        }
    }

    /// What the region's file holds at `off` (read from the file, not through a mapping).
    fn file_word(&self, off: usize) -> Result<u32> {
        let mut word = [0u8; 4];
        self.file.read_exact_at(&mut word, off as u64).map_err(|e| format!("pread: {e}"))?;
        Ok(u32::from_le_bytes(word))
    }

    fn expect_file_word(&self, off: usize, value: u32, what: &str) -> Result<()> {
        match self.file_word(off)? {
            v if v == value => Ok(()),
            v => Err(format!("{what}: the file holds {v:#x} at {off:#x}, expected {value:#x}")),
        }
    }

    /// The VM's `stage2_shared_links`: granules linked to a shared table so far.
    fn links(&self) -> Result<u64> {
        vmm::stats::kvm_binary_stats(&self.vm)
            .and_then(|s| s.get("stage2_shared_links").copied())
            .ok_or_else(|| "KVM has no stage2_shared_links statistic".to_owned())
    }

    /// Fails unless the granule went through a shared table: otherwise nothing was tested.
    fn expect_linked(&self) -> Result<()> {
        match self.links()? {
            0 => Err("the granule was never linked to a shared table: the case tested nothing".to_owned()),
            _ => Ok(()),
        }
    }

    fn punch_hole(&self, off: usize, len: usize) -> Result<()> {
        // SAFETY: fallocate on an fd this process owns.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off as libc::off_t,
                len as libc::off_t,
            )
        };
        if r != 0 {
            return Err(os_error("fallocate PUNCH_HOLE"));
        }
        Ok(())
    }
}

/// Flat 32-bit protected mode, no paging, at [`CODE_GPA`].
fn enter_flat_protected_mode(vcpu: &VcpuFd) -> Result<()> {
    let mut sregs = vcpu.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x8,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_segment { selector: 0x10, type_: 0x3, ..code };
    sregs.cs = code;
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.cr0 |= 1;
    vcpu.set_sregs(&sregs).map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let regs = kvm_regs { rip: CODE_GPA, rflags: 2, ..Default::default() };
    vcpu.set_regs(&regs).map_err(|e| format!("KVM_SET_REGS: {e}"))
}

const RW: libc::c_int = libc::PROT_READ | libc::PROT_WRITE;

/// The VMM makes its whole mapping read-only: the guest still reads, its write exits and
/// changes nothing; when the VMM makes it writable again, the write goes through.
fn read_only_mapping() -> Result<Machine> {
    let ops = [Op::Write(0, 0x1111_1111), Op::Read(0), Op::Write(0, 0x2222_2222)];
    let mut m = Machine::new(&ops, &[])?;
    m.expect_step(0x1111_1111, "the first write")?;
    m.expect_linked()?;
    m.region.protect(0, REGION_SIZE, libc::PROT_READ)?;
    m.expect_step(0x1111_1111, "a read through the read-only mapping")?;
    m.expect_write_refused(0, 0x1111_1111, "a write through the VMM's read-only mapping")?;
    m.region.protect(0, REGION_SIZE, RW)?;
    m.expect_step(0x2222_2222, "the write once the mapping is writable again")?;
    m.expect_file_word(0, 0x2222_2222, "the write once the mapping is writable again")?;
    m.expect_halt()?;
    Ok(m)
}

/// The VMM makes one page of the granule read-only: the guest writes the other pages, and
/// its write to that page exits, even though one shared table maps the whole granule.
fn one_read_only_page() -> Result<Machine> {
    let ops = [Op::Write(0, 1), Op::Read(0), Op::Write(0, 2), Op::Write(PAGE, 3)];
    let mut m = Machine::new(&ops, &[])?;
    m.expect_step(1, "the first write")?;
    m.expect_linked()?;
    m.region.protect(PAGE, PAGE, libc::PROT_READ)?;
    m.expect_step(1, "a read of a writable page beside the read-only one")?;
    m.expect_step(2, "a write to a writable page beside the read-only one")?;
    m.expect_file_word(0, 2, "a write to a writable page beside the read-only one")?;
    m.expect_write_refused(PAGE, 0, "a write to the page the VMM made read-only")?;
    m.region.protect(PAGE, PAGE, RW)?;
    m.expect_step(3, "the write once the page is writable again")?;
    m.expect_file_word(PAGE, 3, "the write once the page is writable again")?;
    m.expect_halt()?;
    Ok(m)
}

/// The VMM punches a hole in the file under one page of the granule and writes new data
/// there (a new page): the guest must read the new page, not the one KVM pinned.
fn hole_punched_in_the_granule() -> Result<Machine> {
    let ops = [Op::Read(0), Op::Read(PAGE), Op::Read(0), Op::Read(PAGE), Op::Write(PAGE, 0xc0)];
    let mut m = Machine::new(&ops, &[(0, 0xa0), (PAGE, 0xb0)])?;
    m.expect_step(0xa0, "page 0 before the hole")?;
    m.expect_step(0xb0, "page 1 before the hole")?;
    m.expect_linked()?;
    m.punch_hole(PAGE, PAGE)?;
    m.region.write(PAGE, &0xb1u32.to_le_bytes());
    m.expect_step(0xa0, "page 0 after the hole")?;
    m.expect_step(0xb1, "page 1 after the VMM wrote a new page into the hole (0xb0 is the old, punched page)")?;
    m.expect_step(0xc0, "a write to the new page")?;
    m.expect_file_word(PAGE, 0xc0, "the guest's write to the new page")?;
    m.expect_halt()?;
    Ok(m)
}

/// The VMM maps another file over one page of the granule: the guest must see that file
/// there, and write into it rather than into the region's file.
fn other_file_mapped_over_the_granule() -> Result<Machine> {
    let ops = [Op::Read(0), Op::Read(PAGE), Op::Read(0), Op::Read(PAGE), Op::Write(PAGE, 0xe0)];
    let mut m = Machine::new(&ops, &[(0, 0xa0), (PAGE, 0xb0)])?;
    m.expect_step(0xa0, "page 0 before the remap")?;
    m.expect_step(0xb0, "page 1 before the remap")?;
    m.expect_linked()?;
    let other = memfd("stage2-hostile-vmm-other", PAGE)?;
    other.write_all_at(&0xd1u32.to_le_bytes(), 0).map_err(|e| format!("pwrite: {e}"))?;
    m.region.map_over(PAGE, PAGE, &other)?;
    m.expect_step(0xa0, "page 0 after the remap")?;
    m.expect_step(0xd1, "page 1 after the VMM mapped another file there (0xb0 is the region's page)")?;
    m.expect_step(0xe0, "a write to the other file's page")?;
    m.expect_file_word(PAGE, 0xb0, "the region's file under the other file's page")?;
    let mut word = [0u8; 4];
    other.read_exact_at(&mut word, 0).map_err(|e| format!("pread: {e}"))?;
    if u32::from_le_bytes(word) != 0xe0 {
        return Err(format!("the guest's write missed the other file: it holds {:#x}", u32::from_le_bytes(word)));
    }
    m.expect_halt()?;
    Ok(m)
}

/// This process's `VmPin`, in KiB: the pages it pinned long-term.
fn vm_pin_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmPin:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmPin in /proc/self/status".to_owned())
}

fn expect_vm_pin(kib: u64, what: &str) -> Result<()> {
    match vm_pin_kib()? {
        v if v == kib => Ok(()),
        v => Err(format!("{what}: VmPin is {v} kB, expected {kib} kB")),
    }
}

/// Each shared slot charges its VMM for its pages (even where another VM pinned them
/// first), and gives them back when it goes.
fn pins_are_charged_to_the_vmm() -> Result<Machine> {
    const SLOT_KIB: u64 = (REGION_SIZE >> 10) as u64;
    let before = vm_pin_kib()?;
    let ops = [Op::Write(0, 1)];
    let mut a = Machine::new(&ops, &[])?;
    expect_vm_pin(before + SLOT_KIB, "one VM's shared slot")?;
    let file = a.file.try_clone().map_err(|e| format!("dup: {e}"))?;
    let mut b = Machine::over(&[Op::Read(0)], file)?;
    expect_vm_pin(before + 2 * SLOT_KIB, "a second VM's slot of the same pages")?;
    a.expect_step(1, "a's write")?;
    a.expect_linked()?;
    b.expect_step(1, "b's read of a's write")?;
    b.expect_linked()?;
    drop(a);
    expect_vm_pin(before + SLOT_KIB, "after the first VM went")?;
    Ok(b)
}

/// The effective capability set's CAP_IPC_LOCK, turned off or back on (it stays
/// permitted, so it can come back).
fn set_ipc_lock(on: bool) -> Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_IPC_LOCK: u32 = 14;
    let mut header = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: capget with a version-3 header and room for its two data elements.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(os_error("capget"));
    }
    if on {
        data[0].effective |= 1 << CAP_IPC_LOCK;
    } else {
        data[0].effective &= !(1 << CAP_IPC_LOCK);
    }
    // SAFETY: capset of this thread with the sets capget returned, one bit changed.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(os_error("capset"));
    }
    Ok(())
}

/// Runs `f` with RLIMIT_MEMLOCK's soft limit at `bytes`, then restores it.
fn with_memlock_limit<T>(bytes: u64, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit into a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut old) } != 0 {
        return Err(os_error("getrlimit"));
    }
    let low = libc::rlimit { rlim_cur: bytes, rlim_max: old.rlim_max };
    // SAFETY: setrlimit from a valid struct, the hard limit unchanged.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &low) } != 0 {
        return Err(os_error("setrlimit"));
    }
    let result = f();
    // SAFETY: as above, back to what it was.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &old) };
    result
}

/// A VMM without CAP_IPC_LOCK cannot pin more than RLIMIT_MEMLOCK through shared slots:
/// with 1 MiB, a 2 MiB slot is refused with ENOMEM and nothing stays charged.
fn pins_stay_within_rlimit_memlock() -> Result<Machine> {
    let before = vm_pin_kib()?;
    set_ipc_lock(false)?;
    let refused = with_memlock_limit(1 << 20, || Ok(Machine::new(&[Op::Read(0)], &[])));
    set_ipc_lock(true)?;
    match refused? {
        Ok(_) => return Err("a 2 MiB shared slot was accepted over a 1 MiB RLIMIT_MEMLOCK".to_owned()),
        Err(e) if e.contains("shared stage-2 memslot") && e.contains("os error 12") => {}
        Err(e) => return Err(format!("expected the shared slot to fail with ENOMEM, got: {e}")),
    }
    expect_vm_pin(before, "after the refused slot")?;
    // With the limit met, the same slot is accepted.
    with_memlock_limit(4 << 20, || {
        set_ipc_lock(false)?;
        let machine = Machine::new(&[Op::Read(0)], &[]);
        set_ipc_lock(true)?;
        let mut machine = machine?;
        machine.expect_step(0, "a read within the limit")?;
        machine.expect_linked()?;
        Ok(machine)
    })
}

/// A bare VM over `file`'s pages, registering and deleting one shared slot over them.
struct SlotTimer {
    // Field order is drop order: the VM and its slot go before the mapping.
    vm: VmFd,
    region: Mapping,
}

impl SlotTimer {
    fn new(file: &File) -> Result<Self> {
        let len = file.metadata().map_err(|e| format!("fstat: {e}"))?.len() as usize;
        let vm = shared_stage2_vm()?;
        let region = Mapping::new(len, libc::MAP_SHARED, file.as_raw_fd())?;
        Ok(Self { vm, region })
    }

    fn set_slot(&self, size: usize) -> Result<()> {
        set_shared_slot(&self.vm, &self.region, size)
    }
}

/// `slot-times`: see the file's documentation.
fn slot_times(args: &[String]) -> Result<()> {
    let usage = || "usage: stage2-hostile-vmm slot-times PATH MIN [OFFSET VALUE]".to_owned();
    let path = args.first().ok_or_else(usage)?;
    let min: usize = args.get(1).and_then(|m| m.parse().ok()).filter(|&m| m > 0).ok_or_else(usage)?;
    let until = match (args.get(2), args.get(3)) {
        (Some(o), Some(v)) => Some((o.parse::<u64>().map_err(|_| usage())?, v.parse::<u8>().map_err(|_| usage())?)),
        _ => None,
    };
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(|e| format!("{path}: {e}"))?;
    let timer = SlotTimer::new(&file)?;
    let reached = || -> Result<bool> {
        let Some((offset, value)) = until else { return Ok(true) };
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, offset).map_err(|e| format!("pread {path}: {e}"))?;
        Ok(byte[0] == value)
    };
    let pinned_before = vm_pin_kib()?;
    let started = std::time::Instant::now();
    let mut times = Vec::new();
    let mut pinned_during = 0;
    while times.len() < min || !reached()? {
        if started.elapsed() > std::time::Duration::from_secs(900) {
            return Err(format!("{path}: the byte never came in 900 s ({} slots registered)", times.len()));
        }
        let t = std::time::Instant::now();
        timer.set_slot(timer.region.len)?;
        times.push(t.elapsed().as_micros() as u64);
        pinned_during = vm_pin_kib()? - pinned_before;
        timer.set_slot(0)?;
    }
    let pinned_after = vm_pin_kib()? - pinned_before;
    times.sort_unstable();
    println!(
        "SLOT-TIMES count={} min_us={} median_us={} max_us={} vm_pin_during_kib={pinned_during} vm_pin_after_kib={pinned_after}",
        times.len(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("slot-times") {
        if let Err(e) = slot_times(&args[2..]) {
            println!("SLOT-TIMES FAIL: {e}");
            std::process::exit(1);
        }
        return;
    }
    let mirror: [(&str, Case); 4] = [
        ("read-only-mapping", read_only_mapping),
        ("one-read-only-page", one_read_only_page),
        ("hole-punched-in-the-granule", hole_punched_in_the_granule),
        ("other-file-mapped-over-the-granule", other_file_mapped_over_the_granule),
    ];
    let pins: [(&str, Case); 2] = [
        ("pins-are-charged-to-the-vmm", pins_are_charged_to_the_vmm),
        ("pins-stay-within-rlimit-memlock", pins_stay_within_rlimit_memlock),
    ];
    let cases: &[(&str, Case)] = match std::env::args().nth(1).as_deref() {
        Some("mirror") => &mirror,
        Some("pins") => &pins,
        _ => {
            eprintln!("usage: stage2-hostile-vmm mirror|pins|slot-times PATH MIN [OFFSET VALUE]");
            std::process::exit(2);
        }
    };
    let mut failed = 0;
    for &(name, case) in cases {
        match case().and_then(|m| m.links()) {
            Ok(links) => println!("HOSTILE-VMM case={name} ok links={links}"),
            Err(e) => {
                failed += 1;
                println!("HOSTILE-VMM case={name} FAIL: {e}");
            }
        }
    }
    std::process::exit(i32::from(failed > 0));
}
