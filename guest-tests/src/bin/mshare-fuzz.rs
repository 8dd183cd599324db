//! mshare-fuzz: random and structured calls against msharefs and /dev/mshare.
//!
//! ```text
//! mshare-fuzz CALLS [SEED]
//! ```
//! Three threads share a handful of regions (named, unnamed, an ivshmem one if there is
//! one), a memfd (which CREATE_MAPPING and MSHARE_MAP may put into a region) and a
//! reserved address range for their windows:
//! - the caller makes ioctls on region files and /dev/mshare with arguments drawn from
//!   sizes, offsets, descriptors and pointers that sit on every edge (0, a granule +/- 1,
//!   past the end, overflowing, kernel and unmapped addresses, closed and foreign
//!   descriptors), maps, unmaps, mprotects and mremaps windows, truncates and unlinks;
//! - the racer unlinks, replaces windows, UNMAPs, changes the protection and closes
//!   descriptors under the caller's feet;
//! - the toucher faults pages of the windows in through the kernel (`read(2)` from
//!   /dev/zero into them, `write(2)` from them into a pipe) and takes them with GUP
//!   (futex wait and wake, `vmsplice`, reads of its own `/proc/self/mem`), which links and uses
//!   the shared tables; a hole or a gone window is EFAULT, never a signal.
//!
//! Every result must be success or an errno the call may give; anything else (EIO,
//! ENOSYS, a signal) fails the run, and so does an oops on the console (the harness).
//! The seed is printed for replay (threads interleave differently on each run).

use guest_tests::msharefs::{ioctl_value, MshareCreate, MOUNT};
use guest_tests::rng::Rng;
use mshare_uapi::device::{
    MshareAttach, MshareMap, MshareProtect, MshareRange, DEVICE, MSHARE_ATTACH, MSHARE_CREATE, MSHARE_DETACH,
    MSHARE_MAP, MSHARE_PROTECT, MSHARE_UNMAP,
};
use mshare_uapi::msharefs::{
    MSHAREFS_CREATE_MAPPING, MSHAREFS_GET_SIZE, MSHAREFS_GET_STATS, MSHAREFS_SET_PROT, MSHAREFS_SET_SIZE,
    MSHAREFS_UNMAP,
};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;

const GRANULE: u64 = 2 << 20;
/// Windows go into this much reserved address space, and only there.
const ARENA: usize = 32 << 20;
/// Now and then a window of a whole GiB goes over the arena, which starts at a GiB
/// boundary of a reserved GiB: in mode B it shares its region's PMD table (2 MiB leaves),
/// and the calls on the arena run into it (a partial replacement of it is EINVAL).
const GIB: usize = 1 << 30;
const NAMES: [&str; 3] = ["fuzz-a", "fuzz-b", "fuzz-c"];
/// The errnos each kind of call may give for bad input, races and limits (docs/module.md);
/// any other fails the run, so a call that answers with another call's errno is caught.
mod errnos {
    use libc::*;
    /// An ioctl of any command on any descriptor: a bad descriptor, an unknown command, a
    /// bad argument or pointer, and what the known commands refuse (read-only opens, exec,
    /// read-only device regions, sizes, names, counts).
    pub const IOCTL: &[i32] = &[
        EBADF, ENOTTY, EINVAL, EFAULT, ENOMEM, EPERM, EACCES, EOPNOTSUPP, EEXIST, ENOENT, ENOSPC, EOVERFLOW, EFBIG,
        ENODEV, EAGAIN,
    ];
    /// The region ioctls the racer issues (UNMAP, CREATE_MAPPING, SET_PROT) on a region, on
    /// /dev/mshare or on a closed descriptor.
    pub const REGION_IOCTL: &[i32] = &[EBADF, ENOTTY, EINVAL, ENOMEM, EACCES, EOPNOTSUPP];
    /// mmap of a region (or another descriptor) into the arena.
    pub const MMAP: &[i32] = &[EBADF, EINVAL, EACCES, EPERM, ENOMEM, ENODEV, EAGAIN, EOVERFLOW];
    /// mprotect, madvise and mlock over the arena (madvise and mlock are ENOSYS on a kernel
    /// built without them; EFAULT is `MADV_POPULATE_READ` over a hole, where an access
    /// would be SIGSEGV, as madvise(2) says).
    pub const ARENA_MEMORY: &[i32] = &[EINVAL, ENOMEM, EACCES, EAGAIN, EPERM, ENOSYS, EFAULT];
    /// mremap within the arena.
    pub const MREMAP: &[i32] = &[EINVAL, EFAULT, ENOMEM, EAGAIN];
    /// ftruncate of any descriptor: a region's size is set once, in whole granules.
    pub const FTRUNCATE: &[i32] = &[EBADF, EINVAL, EFBIG, EPERM, EACCES, ENOMEM];
    /// The kernel copying to or from arena pages, or taking them (GUP): a hole or a gone
    /// window (EFAULT), a full pipe (EAGAIN), a futex word with another value (EAGAIN) or
    /// a wait that timed out at once (ETIMEDOUT).
    pub const TOUCH: &[i32] = &[EFAULT, EAGAIN, ETIMEDOUT];
    /// A read of `/proc/self/mem` (the kernel takes the page with GUP): a hole or a gone
    /// window is EIO there.
    pub const PROC_MEM: &[i32] = &[EIO];
    /// pread, pwrite and lseek of any descriptor, to and from the arena: a bad descriptor
    /// or one not open for it, bad offsets, a buffer the kernel cannot copy (EFAULT), a
    /// write into a hole (EIO) or at the end (ENOSPC), a read-only region (EACCES) or
    /// device (EPERM), an unplugged device (ENODEV), a descriptor with no such call.
    pub const FILE_IO: &[i32] = &[EBADF, EINVAL, EFAULT, EIO, ENOSPC, EACCES, EPERM, ENODEV, ESPIPE, EOVERFLOW];
}

/// A size or offset on an edge, or anywhere.
fn edge_size(rng: &mut Rng) -> u64 {
    let g = GRANULE;
    match rng.below(12) {
        0 => 0,
        1 => rng.below(4) * 4096 + 1,
        2 => g - 1,
        3 => g,
        4 => g + 1,
        5 => rng.below(8) * g,
        6 => rng.next_u64(),
        7 => u64::MAX,
        8 => u64::MAX - g + 1,
        9 => 1 << 63,
        10 => (1 + rng.below(16)) * g,
        _ => 4096 * rng.below(1024),
    }
}

/// Shared state: the descriptors the threads use (closed and replaced at random), the
/// arena, and the counts.
struct Shared {
    fds: Vec<AtomicI32>,
    dev: i32,
    arena: usize,
    calls: AtomicU64,
    limit: u64,
    unexpected: AtomicU64,
    succeeded: AtomicU64,
    touched: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn fd(&self, rng: &mut Rng) -> i32 {
        match rng.below(10) {
            0 => -1,
            1 => 9999,
            2 => self.dev,
            3 => 0,
            _ => self.fds[rng.below(self.fds.len() as u64) as usize].load(Ordering::Relaxed),
        }
    }

    /// A page-aligned address in the arena (sometimes a granule-aligned one, sometimes a
    /// kernel or unmapped one).
    fn addr(&self, rng: &mut Rng) -> u64 {
        match rng.below(10) {
            0 => 0xffff_8880_0000_0000,
            1 => 0,
            2..=5 => self.arena as u64 + rng.below((ARENA as u64) / GRANULE) * GRANULE,
            _ => self.arena as u64 + rng.below(ARENA as u64 / 4096) * 4096,
        }
    }

    /// Counts a call; false once the budget is spent.
    fn spend(&self) -> bool {
        self.calls.fetch_add(1, Ordering::Relaxed) < self.limit && !self.stop.load(Ordering::Relaxed)
    }

    /// Judges a raw syscall result: success, or one of the errnos `expected` for its kind.
    fn judge(&self, what: &str, ret: i64, expected: &[i32]) {
        if ret >= 0 {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if !expected.contains(&errno) {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            println!("mshare-fuzz: UNEXPECTED {what}: errno {errno} ({})", std::io::Error::from_raw_os_error(errno));
        }
    }
}

/// A random argument buffer for an ioctl: a structure built from edge values, or raw
/// bytes, or a bad pointer.
fn argument(rng: &mut Rng, shared: &Shared, buf: &mut [u64; 8]) -> usize {
    for slot in buf.iter_mut() {
        *slot = edge_size(rng);
    }
    match rng.below(12) {
        0 => 0,
        1 => 0xffff_8880_0000_0000,
        2 => 16,
        3 => {
            // struct mshare_create with plausible fields.
            let create = MshareCreate {
                addr: edge_size(rng),
                size: edge_size(rng),
                offset: {
                    let any = edge_size(rng);
                    rng.pick(&[0, 4096, any])
                },
                prot: rng.pick(&[3, 1, 7, 0]),
                flags: rng.pick(&[0x21, 0x01, 0x22, 0x31, 0]),
                fd: {
                    let fd = shared.fd(rng) as u32;
                    rng.pick(&[u32::MAX, fd])
                },
            };
            // SAFETY: `buf` is 64 bytes, the structure 40.
            unsafe { std::ptr::write_unaligned(buf.as_mut_ptr().cast(), create) };
            buf.as_mut_ptr() as usize
        }
        4 => {
            let map = MshareMap {
                fd: shared.fd(rng),
                prot: rng.pick(&[3, 1, 0]),
                offset: edge_size(rng),
                size: edge_size(rng),
                object_fd: {
                    let fd = shared.fd(rng);
                    rng.pick(&[-1, 0, fd])
                },
                flags: rng.pick(&[0, 0x21, 0x7]),
            };
            // SAFETY: as above (32 bytes).
            unsafe { std::ptr::write_unaligned(buf.as_mut_ptr().cast(), map) };
            buf.as_mut_ptr() as usize
        }
        5 => {
            let attach = MshareAttach {
                fd: shared.fd(rng),
                flags: rng.pick(&[0, 1, 2, 3, 4]),
                offset: edge_size(rng),
                size: edge_size(rng),
                addr: shared.addr(rng),
            };
            // SAFETY: as above (32 bytes).
            unsafe { std::ptr::write_unaligned(buf.as_mut_ptr().cast(), attach) };
            buf.as_mut_ptr() as usize
        }
        6 => {
            let range = MshareRange {
                fd: shared.fd(rng),
                pad: rng.pick(&[0, 1]),
                offset: edge_size(rng),
                size: edge_size(rng),
            };
            // SAFETY: as above (24 bytes).
            unsafe { std::ptr::write_unaligned(buf.as_mut_ptr().cast(), range) };
            buf.as_mut_ptr() as usize
        }
        7 => {
            let protect = MshareProtect { fd: shared.fd(rng), prot: rng.pick(&[1, 3, 2, 0, 7]) };
            // SAFETY: as above (8 bytes).
            unsafe { std::ptr::write_unaligned(buf.as_mut_ptr().cast(), protect) };
            buf.as_mut_ptr() as usize
        }
        8 => {
            buf[0] = shared.addr(rng);
            let any = edge_size(rng);
            buf[1] = rng.pick(&[GRANULE, 2 * GRANULE, any]);
            buf.as_mut_ptr() as usize
        }
        _ => buf.as_mut_ptr() as usize,
    }
}

const MSHAREFS_CMDS: [u64; 6] = [
    MSHAREFS_GET_SIZE,
    MSHAREFS_SET_SIZE,
    MSHAREFS_CREATE_MAPPING,
    MSHAREFS_UNMAP,
    MSHAREFS_GET_STATS,
    MSHAREFS_SET_PROT,
];
const DEVICE_CMDS: [u64; 6] = [MSHARE_CREATE, MSHARE_ATTACH, MSHARE_DETACH, MSHARE_MAP, MSHARE_UNMAP, MSHARE_PROTECT];

/// The caller: ioctls, mmap and friends, truncation.
fn caller(shared: &Shared, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut buf = [0u64; 8];
    while shared.spend() {
        let fd = shared.fd(&mut rng);
        match rng.below(10) {
            0..=2 => {
                let cmd = match rng.below(5) {
                    0 => ((rng.below(4)) << 30) | (rng.below(64) << 16) | (u64::from(b'x') << 8) | rng.below(0x30),
                    1 => rng.next_u64() & 0xffff_ffff,
                    _ => rng.pick(&MSHAREFS_CMDS),
                };
                let arg = argument(&mut rng, shared, &mut buf);
                // SAFETY: the kernel validates `arg`; a bad one is EFAULT.
                let ret = unsafe { libc::ioctl(fd, cmd as libc::Ioctl, arg) };
                shared.judge(&format!("ioctl(region fd {fd}, {cmd:#x})"), ret.into(), errnos::IOCTL);
                // A descriptor /dev/mshare made for us: keep it as a region to fuzz.
                if ret > 2 && fd == shared.dev {
                    replace_fd(shared, &mut rng, ret);
                }
            }
            3..=4 => {
                let cmd = if rng.below(4) == 0 { rng.next_u64() & 0xffff_ffff } else { rng.pick(&DEVICE_CMDS) };
                let arg = if cmd == MSHARE_CREATE && rng.below(2) == 0 {
                    rng.pick(&[0, libc::O_CLOEXEC as usize, 1, usize::MAX])
                } else {
                    argument(&mut rng, shared, &mut buf)
                };
                // SAFETY: as above.
                let ret = unsafe { libc::ioctl(shared.dev, cmd as libc::Ioctl, arg) };
                shared.judge(&format!("ioctl(/dev/mshare, {cmd:#x})"), ret.into(), errnos::IOCTL);
                if ret > 2 && cmd == MSHARE_CREATE {
                    replace_fd(shared, &mut rng, ret);
                }
                if ret == 0 && cmd == MSHARE_ATTACH && arg == buf.as_ptr() as usize {
                    // A window outside the arena would escape the fuzzer's bookkeeping.
                    let (addr, size) = (buf[3], buf[2]);
                    let inside = addr >= shared.arena as u64 && addr + size <= (shared.arena + ARENA) as u64;
                    if !inside {
                        let mut detach = [addr, size];
                        // SAFETY: detaching the window just made.
                        unsafe { libc::ioctl(shared.dev, MSHARE_DETACH as libc::Ioctl, detach.as_mut_ptr()) };
                    }
                }
            }
            5..=6 => {
                // A window in the arena, replacing whatever was there: mostly well formed
                // (a region, granules, shared) so that the toucher has windows to fault.
                let well_formed = rng.below(10) < 7;
                let giant = well_formed && rng.below(8) == 0;
                let addr = if giant {
                    shared.arena as u64
                } else if well_formed {
                    shared.arena as u64 + rng.below(ARENA as u64 / GRANULE) * GRANULE
                } else {
                    shared.addr(&mut rng).max(shared.arena as u64)
                };
                let room = (shared.arena + ARENA) as u64 - addr;
                let len = if giant {
                    GIB as u64
                } else {
                    rng.pick(&[GRANULE, 2 * GRANULE, 4096, 3 * GRANULE, 8 * GRANULE]).min(room)
                };
                let (prot, flags, offset, fd) = if well_formed {
                    let fd = shared.fds[rng.below(shared.fds.len() as u64) as usize].load(Ordering::Relaxed);
                    let prot = rng.pick(&[libc::PROT_READ | libc::PROT_WRITE, libc::PROT_READ]);
                    let offset = if giant { 0 } else { (rng.below(4) * GRANULE) as i64 };
                    (prot, libc::MAP_FIXED | libc::MAP_SHARED, offset, fd)
                } else {
                    let prot = rng.pick(&[
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::PROT_READ,
                        libc::PROT_EXEC,
                        libc::PROT_NONE,
                    ]);
                    let flags = libc::MAP_FIXED
                        | rng.pick(&[libc::MAP_SHARED, libc::MAP_PRIVATE, libc::MAP_SHARED | libc::MAP_POPULATE]);
                    let any = edge_size(&mut rng) as i64 & !4095;
                    (prot, flags, rng.pick(&[0, GRANULE as i64, 4096, any]), fd)
                };
                // SAFETY: MAP_FIXED inside the arena, which this program reserved for it.
                let ret = unsafe { libc::mmap(addr as *mut _, len as usize, prot, flags, fd, offset) };
                if ret == libc::MAP_FAILED {
                    let errno = std::io::Error::last_os_error();
                    reserve(addr as usize, len as usize);
                    // SAFETY: restoring errno for `judge`.
                    unsafe { *libc::__errno_location() = errno.raw_os_error().unwrap_or(0) };
                }
                shared.judge(
                    &format!("mmap(fd {fd}, len {len:#x}, prot {prot}, flags {flags:#x}, offset {offset:#x})"),
                    if ret == libc::MAP_FAILED { -1 } else { 0 },
                    errnos::MMAP,
                );
            }
            7 => {
                let addr = shared.addr(&mut rng) as usize;
                if addr < shared.arena {
                    continue;
                }
                let len = (rng.pick(&[GRANULE, 4096, 2 * GRANULE]) as usize).min(shared.arena + ARENA - addr);
                let ret = match rng.below(3) {
                    // SAFETY: inside the arena, which this program reserved for such calls.
                    0 => unsafe {
                        libc::mprotect(addr as *mut _, len, rng.pick(&[libc::PROT_READ, libc::PROT_NONE, 3, 7]))
                    },
                    // SAFETY: as above.
                    1 => unsafe {
                        libc::madvise(
                            addr as *mut _,
                            len,
                            rng.pick(&[
                                libc::MADV_DONTNEED,
                                libc::MADV_FREE,
                                libc::MADV_HUGEPAGE,
                                libc::MADV_POPULATE_READ,
                                libc::MADV_COLD,
                                libc::MADV_PAGEOUT,
                            ]),
                        )
                    },
                    // SAFETY: as above.
                    _ => unsafe { libc::mlock(addr as *const _, len) },
                };
                shared.judge("mprotect/madvise/mlock in the arena", ret.into(), errnos::ARENA_MEMORY);
            }
            8 => {
                let addr = shared.addr(&mut rng) as usize;
                if addr < shared.arena {
                    continue;
                }
                let len = (GRANULE as usize).min(shared.arena + ARENA - addr);
                let target = (shared.addr(&mut rng) as usize).max(shared.arena).min(shared.arena + ARENA - len);
                // SAFETY: moves (or fails to) an arena mapping within the arena.
                let ret = unsafe {
                    libc::mremap(
                        addr as *mut _,
                        len,
                        len,
                        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                        target as *mut libc::c_void,
                    )
                };
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if ret == libc::MAP_FAILED {
                    reserve(target, len);
                } else {
                    reserve(addr, len);
                }
                // SAFETY: restoring errno for `judge`.
                unsafe { *libc::__errno_location() = errno };
                shared.judge("mremap in the arena", if ret == libc::MAP_FAILED { -1 } else { 0 }, errnos::MREMAP);
            }
            _ if rng.below(2) == 0 => {
                // SAFETY: plain syscall on a descriptor that may be anything.
                let ret = unsafe { libc::ftruncate(fd, edge_size(&mut rng) as i64) };
                shared.judge(&format!("ftruncate(fd {fd})"), ret.into(), errnos::FTRUNCATE);
            }
            _ => file_io(shared, &mut rng, fd),
        }
    }
}

/// pread, pwrite or lseek of `fd`, the buffer somewhere in the arena (often a window of a
/// region, maybe of the very region read: the kernel must not deadlock on its own fault)
/// or a bad address.
fn file_io(shared: &Shared, rng: &mut Rng, fd: i32) {
    let in_arena = (shared.addr(rng) as usize).max(shared.arena);
    let buf = if rng.below(8) == 0 { rng.pick(&[0usize, 16, usize::MAX - 4095]) } else { in_arena };
    let room = (shared.arena + ARENA).saturating_sub(buf).min(4 * GRANULE as usize);
    let len = (edge_size(rng) as usize).min(room);
    let offset = match rng.below(4) {
        0 => edge_size(rng) as i64,
        1 => rng.below(8) as i64 * GRANULE as i64 - 3,
        _ => (rng.below(4 * GRANULE) & !7) as i64,
    };
    let (what, ret) = match rng.below(3) {
        // SAFETY: the buffer is in the arena this program reserved for the kernel to copy
        // into (or a bad address, which the kernel refuses with EFAULT).
        0 => ("pread", unsafe { libc::pread(fd, buf as *mut _, len, offset) } as i64),
        // SAFETY: as above; pwrite only reads the buffer.
        1 => ("pwrite", unsafe { libc::pwrite(fd, buf as *const _, len, offset) } as i64),
        // SAFETY: plain syscall.
        _ => ("lseek", unsafe {
            libc::lseek(fd, offset, rng.pick(&[libc::SEEK_SET, libc::SEEK_END, libc::SEEK_CUR, 9]))
        }),
    };
    shared.judge(&format!("{what}(fd {fd}, len {len:#x}, offset {offset:#x})"), ret, errnos::FILE_IO);
}

/// Makes `[addr, addr + len)` of the arena inaccessible reserved memory again: a failed
/// MAP_FIXED or a moved window leaves a hole the C library could otherwise allocate into.
fn reserve(addr: usize, len: usize) {
    // SAFETY: MAP_FIXED inside the arena this program reserved.
    unsafe {
        libc::mmap(
            addr as *mut _,
            len,
            libc::PROT_NONE,
            libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
}

/// Puts a fresh region descriptor in a random slot, closing the one it replaces.
fn replace_fd(shared: &Shared, rng: &mut Rng, fd: i32) {
    let old = shared.fds[rng.below(shared.fds.len() as u64) as usize].swap(fd, Ordering::Relaxed);
    if old > 2 && old != shared.dev {
        // SAFETY: closing a descriptor this program opened; another thread may be using
        // the number, which is the race being tested (it gets EBADF or the new file).
        unsafe { libc::close(old) };
    }
}

/// The racer: unlink, reopen, replace windows, UNMAP and SET_PROT under the caller.
fn racer(shared: &Shared, seed: u64) {
    let mut rng = Rng::new(seed ^ 0x5a5a);
    while shared.spend() {
        match rng.below(5) {
            0 => {
                let name = format!("{MOUNT}/{}", rng.pick(&NAMES));
                let _ = std::fs::remove_file(&name);
                let reopened =
                    OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&name);
                if let Ok(file) = reopened {
                    let _ = file.set_len(8 * GRANULE);
                    replace_fd(shared, &mut rng, file.into_raw_fd());
                }
            }
            1 => {
                // Replace a window with inaccessible memory: the window's unmap path (the
                // whole GiB now and then, which takes a GiB window away too).
                let (addr, len) = if rng.below(8) == 0 {
                    (shared.arena, GIB)
                } else {
                    (shared.arena + (rng.below(ARENA as u64 / GRANULE) * GRANULE) as usize, GRANULE as usize)
                };
                // SAFETY: MAP_FIXED inside the reserved arena.
                unsafe {
                    libc::mmap(
                        addr as *mut _,
                        len,
                        libc::PROT_NONE,
                        libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                        -1,
                        0,
                    )
                };
            }
            2 => {
                let fd = shared.fd(&mut rng);
                let mut range = [rng.below(8) * GRANULE, GRANULE];
                // SAFETY: the kernel validates the argument.
                let ret = unsafe { libc::ioctl(fd, MSHAREFS_UNMAP as libc::Ioctl, range.as_mut_ptr()) };
                shared.judge("racing UNMAP", ret.into(), errnos::REGION_IOCTL);
                let mut create = MshareCreate::anonymous(range[0], GRANULE);
                // SAFETY: as above.
                let ret = unsafe { libc::ioctl(fd, MSHAREFS_CREATE_MAPPING as libc::Ioctl, &mut create) };
                shared.judge("racing CREATE_MAPPING", ret.into(), errnos::REGION_IOCTL);
            }
            3 => {
                let fd = shared.fd(&mut rng);
                let mut prot = rng.pick(&[1u64, 3]);
                // SAFETY: as above.
                let ret = unsafe { libc::ioctl(fd, MSHAREFS_SET_PROT as libc::Ioctl, &mut prot) };
                shared.judge("racing SET_PROT", ret.into(), errnos::REGION_IOCTL);
            }
            _ => std::thread::yield_now(),
        }
    }
}

/// The toucher: faults arena pages in through the kernel, so that a hole or a gone window
/// is EFAULT rather than a signal.
fn toucher(shared: &Shared, seed: u64) {
    let mut rng = Rng::new(seed ^ 0xa5a5);
    let zero = File::open("/dev/zero").ok();
    let mem = File::open("/proc/self/mem").ok();
    let mut pipe = [0; 2];
    // SAFETY: a fresh pipe.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_NONBLOCK) } != 0 || zero.is_none() || mem.is_none() {
        return;
    }
    let mut sink = [0u8; 64];
    while shared.spend() {
        let addr = shared.arena + rng.below(ARENA as u64 / 4096) as usize * 4096;
        let no_wait = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let iov = libc::iovec { iov_base: addr as *mut _, iov_len: 8 };
        // SAFETY: the kernel copies to or from `addr`, or takes its page (GUP), failing with
        // EFAULT where it cannot; `sink` is this thread's own buffer.
        let ret = unsafe {
            match rng.below(6) {
                0 => libc::read(zero.as_ref().map_or(-1, |z| z.as_raw_fd()), addr as *mut _, 8),
                1 | 2 => {
                    let ret = if rng.below(2) == 0 {
                        libc::write(pipe[1], addr as *const _, 8)
                    } else {
                        libc::vmsplice(pipe[1], &iov, 1, 0)
                    };
                    libc::read(pipe[0], sink.as_mut_ptr().cast(), sink.len());
                    ret
                }
                3 => libc::syscall(libc::SYS_futex, addr, libc::FUTEX_WAKE, 1, 0usize, 0usize, 0) as isize,
                4 => libc::syscall(libc::SYS_futex, addr, libc::FUTEX_WAIT, 0, &no_wait, 0usize, 0) as isize,
                _ => {
                    let fd = mem.as_ref().map_or(-1, |m| m.as_raw_fd());
                    let ret = libc::pread(fd, sink.as_mut_ptr().cast(), 8, addr as libc::off_t);
                    shared.judge("reading /proc/self/mem", ret as i64, errnos::PROC_MEM);
                    continue;
                }
            }
        };
        if ret > 0 {
            shared.touched.fetch_add(1, Ordering::Relaxed);
        }
        shared.judge("touching the arena", ret as i64, errnos::TOUCH);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(limit) = args.first().and_then(|c| c.parse::<u64>().ok()) else {
        eprintln!("usage: mshare-fuzz CALLS [SEED]");
        return ExitCode::from(2);
    };
    let seed = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0x66757a7a);
    println!("mshare-fuzz: {limit} calls, seed {seed} (replay: mshare-fuzz {limit} {seed})");
    // SAFETY: an inaccessible reservation that only this program maps into.
    let arena = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * GIB,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if arena == libc::MAP_FAILED {
        eprintln!("mshare-fuzz: reserving the arena: {}", std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }
    let arena = (arena as usize).next_multiple_of(GIB);
    let Ok(dev) = OpenOptions::new().read(true).write(true).open(DEVICE) else {
        eprintln!("mshare-fuzz: cannot open {DEVICE}");
        return ExitCode::FAILURE;
    };
    let mut fds = Vec::new();
    for name in NAMES {
        let path = format!("{MOUNT}/{name}");
        let _ = std::fs::remove_file(&path);
        let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path);
        let Ok(file) = file else {
            eprintln!("mshare-fuzz: cannot create {path}");
            return ExitCode::FAILURE;
        };
        let _ = file.set_len(8 * GRANULE);
        let _ = ioctl_value(
            &file,
            MSHAREFS_CREATE_MAPPING,
            &mut MshareCreate::anonymous(0, 4 * GRANULE) as *mut _ as usize,
        );
        fds.push(AtomicI32::new(file.into_raw_fd()));
    }
    if let Some(device) =
        std::fs::read_dir(format!("{MOUNT}/ivshmem")).ok().and_then(|mut d| d.next()).and_then(Result::ok)
    {
        if let Ok(file) = OpenOptions::new().read(true).write(true).open(device.path()) {
            fds.push(AtomicI32::new(file.into_raw_fd()));
        }
    }
    if let Ok(ro) = File::open(format!("{MOUNT}/{}", NAMES[0])) {
        fds.push(AtomicI32::new(ro.into_raw_fd()));
    }
    // A memfd, for CREATE_MAPPING and MSHARE_MAP with a file (and everything else).
    // SAFETY: plain call with a NUL-terminated name.
    let memfd = unsafe { libc::memfd_create(c"fuzz-memfd".as_ptr(), 0) };
    // SAFETY: plain call on the descriptor just made.
    if memfd < 0 || unsafe { libc::ftruncate(memfd, 8 * GRANULE as i64) } != 0 {
        eprintln!("mshare-fuzz: cannot make a memfd: {}", std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }
    fds.push(AtomicI32::new(memfd));
    let shared = Arc::new(Shared {
        fds,
        dev: dev.into_raw_fd(),
        arena,
        calls: AtomicU64::new(0),
        limit,
        unexpected: AtomicU64::new(0),
        succeeded: AtomicU64::new(0),
        touched: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let threads: Vec<_> = [racer as fn(&Shared, u64), toucher]
        .into_iter()
        .map(|f| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || f(&shared, seed))
        })
        .collect();
    caller(&shared, seed);
    shared.stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    for name in NAMES {
        let _ = std::fs::remove_file(format!("{MOUNT}/{name}"));
    }
    for fd in &shared.fds {
        // SAFETY: closing what is left of this program's descriptors.
        unsafe { libc::close(fd.load(Ordering::Relaxed)) };
    }
    let unexpected = shared.unexpected.load(Ordering::Relaxed);
    // How far the calls got: shared tables linked by the toucher's faults, pages mapped.
    let reached = guest_tests::msharefs::SystemStats::read()
        .map(|s| (s.mode, s.table_links, s.pfn_faults, s.pmd_table_links))
        .unwrap_or_default();
    println!(
        "FUZZ calls={} succeeded={} touched={} seed={seed} unexpected={unexpected} mode={} table_links={} pfn_faults={} \
         pmd_table_links={}",
        shared.calls.load(Ordering::Relaxed).min(limit),
        shared.succeeded.load(Ordering::Relaxed),
        shared.touched.load(Ordering::Relaxed),
        reached.0,
        reached.1,
        reached.2,
        reached.3
    );
    if unexpected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
