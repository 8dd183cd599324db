//! mshare-api: the msharefs API suite, run inside the guest with mshare.ko loaded and
//! msharefs mounted. Prints one `ok`/`not ok` line per check and exits 1 if any failed.
//! `mshare-api [B|C]` runs the suite for that mode; `mshare-api unplug` unbinds an ivshmem
//! device under a live mapping of its region (see `unplug_checks`).

use guest_tests::msharefs::{
    create_mapping, get_size, get_stats, ioctl, set_prot, set_size, unmap as unmap_range, MshareCreate, MshareInfo,
    SystemStats, MOUNT,
};
use guest_tests::process::{access_in_child, in_child, spawn_child, wait_child, Access};
use guest_tests::suite::{eq, Suite};
use guest_tests::{faults_of, memfd, meminfo_kib, status_kib};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const GRANULE: u64 = 2 << 20;
const GIB: usize = 1 << 30;
/// The region of the GiB-window checks: 64 MiB, with a hole at granule 5.
const GIB_REGION: usize = 32 * GRANULE as usize;
const GIB_HOLE: usize = 5 * GRANULE as usize;

fn expect_errno<T: std::fmt::Debug>(result: io::Result<T>, errno: i32) -> Result<(), String> {
    match result {
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        other => Err(format!("expected errno {errno}, got {other:?}")),
    }
}

fn create(name: &str, mode: u32) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create_new(true).mode(mode).open(format!("{MOUNT}/{name}"))
}

/// Opens `path` read-write as user and group 1000 in a child process; returns its errno.
fn open_as_other_user(path: &str) -> Result<i32, String> {
    // SAFETY: fork in a single-threaded program; the child only calls async-signal-safe
    // functions (setgid, setuid, open, _exit).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        let cpath = std::ffi::CString::new(path).unwrap_or_default();
        // SAFETY: see above; the child exits with the errno of its open (0 if it succeeded).
        unsafe {
            if libc::setgid(1000) != 0 || libc::setuid(1000) != 0 {
                libc::_exit(255);
            }
            let fd = libc::open(cpath.as_ptr(), libc::O_RDWR);
            libc::_exit(if fd >= 0 { 0 } else { *libc::__errno_location() });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Ok(libc::WEXITSTATUS(status))
}

/// `mmap(NULL, len, RW, flags, fd, offset)`.
fn map(file: &File, len: usize, flags: i32, offset: i64) -> io::Result<*mut u8> {
    // SAFETY: a fresh mapping chosen by the kernel; checked for MAP_FAILED.
    let ptr = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, file.as_raw_fd(), offset)
    };
    if ptr == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(ptr.cast())
    }
}

fn unmap(ptr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: unmapping (part of) a mapping this program made.
    if unsafe { libc::munmap(ptr.cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads a byte at `ptr` in a forked child: `None` if it could, else the signal it got.
fn read_in_child(ptr: *const u8) -> Option<i32> {
    access_in_child(ptr.cast_mut(), Access::Read)
}

/// Writes a byte at `ptr` in a forked child: `None` if it could, else the signal it got.
fn write_in_child(ptr: *mut u8) -> Option<i32> {
    access_in_child(ptr, Access::Write)
}

/// Reads, then writes, a byte at `ptr` in a forked child: `None` if it could, else the
/// signal it got (the write reaches a read-only entry the read made).
fn read_then_write_in_child(ptr: *mut u8) -> Option<i32> {
    access_in_child(ptr, Access::ReadThenWrite)
}

/// Writes one byte in every 4 KiB page of `len` bytes at `ptr`.
fn touch(ptr: *mut u8, len: usize) {
    for offset in (0..len).step_by(4096) {
        // SAFETY: inside a live read-write mapping of `len` bytes.
        unsafe { ptr.add(offset).write_volatile(1) };
    }
}

fn mapping_checks(t: &mut Suite, shares_tables: bool) {
    const MAPPED: usize = 32 * GRANULE as usize;
    let region = match create("api-map", 0o600) {
        Ok(r) => r,
        Err(e) => return t.check("create a region to map", Err(e.to_string())),
    };
    t.check(
        "mmap before the size is set is EINVAL",
        expect_errno(map(&region, GRANULE as usize, libc::MAP_SHARED, 0), libc::EINVAL),
    );
    t.check("set 64 MiB", set_size(&region, MAPPED as u64).map_err(|e| e.to_string()));
    t.check("MAP_PRIVATE is EINVAL", expect_errno(map(&region, MAPPED, libc::MAP_PRIVATE, 0), libc::EINVAL));
    t.check(
        "a window past the end is EINVAL",
        expect_errno(map(&region, MAPPED + GRANULE as usize, libc::MAP_SHARED, 0), libc::EINVAL),
    );
    t.check(
        "an unaligned offset is EINVAL",
        expect_errno(map(&region, GRANULE as usize, libc::MAP_SHARED, 4096), libc::EINVAL),
    );
    let first = match map(&region, MAPPED, libc::MAP_SHARED, 0) {
        Ok(p) => p,
        Err(e) => return t.check("mmap the whole region", Err(e.to_string())),
    };
    t.check("the window is granule aligned", eq(first as u64 % GRANULE, 0));
    t.check("touching a hole is SIGSEGV", eq(read_in_child(first), Some(libc::SIGSEGV)));
    let g = GRANULE;
    let bad = |f: fn(&mut MshareCreate)| {
        let mut c = MshareCreate::anonymous(0, MAPPED as u64);
        f(&mut c);
        create_mapping(&region, &c)
    };
    t.check(
        "CREATE_MAPPING read-only is EINVAL (for now)",
        expect_errno(bad(|c| c.prot = libc::PROT_READ as u32), libc::EINVAL),
    );
    t.check(
        "CREATE_MAPPING without MAP_SHARED is EINVAL",
        expect_errno(bad(|c| c.flags = libc::MAP_ANONYMOUS as u32), libc::EINVAL),
    );
    t.check(
        "CREATE_MAPPING of a file that is not shmem (the console) is EOPNOTSUPP",
        expect_errno(
            bad(|c| {
                c.flags = libc::MAP_SHARED as u32;
                c.fd = 0
            }),
            libc::EOPNOTSUPP,
        ),
    );
    t.check("CREATE_MAPPING at an unaligned offset is EINVAL", expect_errno(bad(|c| c.addr = 4096), libc::EINVAL));
    t.check("CREATE_MAPPING past the end is EINVAL", expect_errno(bad(|c| c.addr = GRANULE), libc::EINVAL));
    t.check(
        "CREATE_MAPPING of the region",
        create_mapping(&region, &MshareCreate::anonymous(0, MAPPED as u64)).map_err(|e| e.to_string()),
    );
    t.check(
        "CREATE_MAPPING over memory is EINVAL",
        expect_errno(create_mapping(&region, &MshareCreate::anonymous(g, g)), libc::EINVAL),
    );
    let before = status_kib("VmPTE:");
    touch(first, MAPPED);
    let mshare_pte = status_kib("VmPTE:").saturating_sub(before);
    if shares_tables {
        t.check(
            "statistics: one window, no fault, all of it backed, 32 tables linked once",
            get_stats(&region)
                .map_err(|e| e.to_string())
                .and_then(|s| eq((s.windows, s.faults, s.backed, s.tables, s.links), (1, 0, MAPPED as u64, 32, 32))),
        );
    } else {
        t.check(
            "statistics: one window, a fault per granule, all of it backed",
            get_stats(&region)
                .map_err(|e| e.to_string())
                .and_then(|s| eq((s.windows, s.faults, s.backed, s.tables), (1, 32, MAPPED as u64, 0))),
        );
    }
    // SAFETY: inside the mapping.
    unsafe { first.add(12345).write_volatile(0x5a) };
    let again = File::options()
        .read(true)
        .write(true)
        .open(format!("{MOUNT}/api-map"))
        .and_then(|f| map(&f, MAPPED, libc::MAP_SHARED, 0));
    t.check(
        "a second mapping sees the same memory",
        again.map_err(|e| e.to_string()).and_then(|p| {
            // SAFETY: inside the second mapping.
            let byte = unsafe { p.add(12345).read_volatile() };
            let _ = unmap(p, MAPPED);
            eq(byte, 0x5a)
        }),
    );
    t.check(
        "a granule-aligned part of the region maps at its offset",
        map(&region, GRANULE as usize, libc::MAP_SHARED, GRANULE as i64).map_err(|e| e.to_string()).and_then(|p| {
            // SAFETY: writing through the one-granule window, reading through the whole one.
            let seen = unsafe {
                p.add(7).write_volatile(0x77);
                first.add(GRANULE as usize + 7).read_volatile()
            };
            let _ = unmap(p, GRANULE as usize);
            eq(seen, 0x77)
        }),
    );
    // SAFETY: fork in a single-threaded program; the child touches its inherited mapping.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return t.check("fork", Err(io::Error::last_os_error().to_string()));
    }
    if pid == 0 {
        // SAFETY: the child writes through the mapping it inherited, then exits.
        unsafe {
            let seen = first.add(12345).read_volatile();
            first.add(54321).write_volatile(0xc4);
            libc::_exit(i32::from(seen != 0x5a));
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    // SAFETY: inside the mapping.
    let reply = unsafe { first.add(54321).read_volatile() };
    t.check("a forked child shares the window both ways", eq((libc::WEXITSTATUS(status), reply), (0, 0xc4)));
    // SAFETY: the second granule of the window: a partial unmap the module refuses.
    t.check(
        "a partial munmap is EINVAL",
        expect_errno(unmap(unsafe { first.add(GRANULE as usize) }, GRANULE as usize), libc::EINVAL),
    );
    // SAFETY: a partial mprotect of the window, which the module refuses.
    let partial = unsafe { libc::mprotect(first.cast(), GRANULE as usize, libc::PROT_READ) };
    t.check(
        "a partial mprotect is EINVAL",
        expect_errno(if partial == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }, libc::EINVAL),
    );
    // SAFETY: inside the window (granule 1, written above through the one-granule window).
    let granule1 = unsafe { first.add(GRANULE as usize + 7) };
    // A second window of granule 1, from another open, faulted in before the UNMAP.
    let other = File::options()
        .read(true)
        .write(true)
        .open(format!("{MOUNT}/api-map"))
        .and_then(|f| map(&f, GRANULE as usize, libc::MAP_SHARED, GRANULE as i64));
    // SAFETY: reading inside the second window.
    let other_seen = other.as_ref().map(|p| unsafe { p.add(7).read_volatile() });
    t.check("a second window sees granule 1", other_seen.map_err(|e| e.to_string()).and_then(|b| eq(b, 0x77)));
    let read_only = File::open(format!("{MOUNT}/api-map"));
    t.check(
        "UNMAP through a read-only open is EBADF",
        expect_errno(
            read_only
                .as_ref()
                .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(0)))
                .and_then(|f| unmap_range(f, g, g)),
            libc::EBADF,
        ),
    );
    t.check(
        "GET_STATS through a read-only open works",
        read_only.as_ref().map_err(|e| e.to_string()).and_then(|f| get_stats(f).map(|_| ()).map_err(|e| e.to_string())),
    );
    t.check(
        "GET_STATS as programs built before links_now ask (72 bytes): the fields they know",
        old_get_stats(&region),
    );
    t.check("UNMAP of an unaligned range is EINVAL", expect_errno(unmap_range(&region, 4096, g), libc::EINVAL));
    t.check("UNMAP of one granule", unmap_range(&region, g, g).map_err(|e| e.to_string()));
    t.check("the unmapped granule is a hole in the first window", eq(read_in_child(granule1), Some(libc::SIGSEGV)));
    t.check(
        "and in the second",
        other
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|p| eq(read_in_child(p.wrapping_add(7)), Some(libc::SIGSEGV))),
    );
    if let Ok(p) = other {
        let _ = unmap(p, GRANULE as usize);
    }
    // SAFETY: inside the mapping, granule 0.
    t.check("the other granules keep their data", eq(unsafe { first.add(12345).read_volatile() }, 0x5a));
    t.check(
        "CREATE_MAPPING fills the hole again",
        create_mapping(&region, &MshareCreate::anonymous(g, g)).map_err(|e| e.to_string()),
    );
    // SAFETY: granule 1 has memory again.
    t.check("with zeroed memory", eq(unsafe { granule1.read_volatile() }, 0));
    t.check("the whole window unmaps", unmap(first, MAPPED).map_err(|e| e.to_string()));
    t.check("statistics: no window left", get_stats(&region).map_err(|e| e.to_string()).and_then(|s| eq(s.windows, 0)));

    // Baseline in the same run: a shared memfd of the same size, each page touched.
    let memfd = match memfd(c"baseline", 0) {
        Ok(f) => f,
        Err(e) => return t.check("memfd_create for the baseline", Err(e.to_string())),
    };
    let before = status_kib("VmPTE:");
    let memfd_pte = memfd.set_len(MAPPED as u64).and_then(|()| map(&memfd, MAPPED, libc::MAP_SHARED, 0)).map(|p| {
        touch(p, MAPPED);
        let grown = status_kib("VmPTE:").saturating_sub(before);
        let _ = unmap(p, MAPPED);
        grown
    });
    let upper_kib = upper_tables_kib_at_most(first as usize, MAPPED);
    println!(
        "mshare-api: page tables for 64 MiB touched at {first:p}: mshare {mshare_pte} KiB (PMD and PUD tables \
         its range may need: {upper_kib} KiB), memfd {memfd_pte:?} KiB"
    );
    t.check(
        "touching a 64 MiB window costs no PTE table: VmPTE grows by at most the PMD and PUD tables of its range",
        if mshare_pte <= upper_kib {
            Ok(())
        } else {
            Err(format!("VmPTE grew {mshare_pte} KiB, more than the {upper_kib} KiB of upper tables at {first:p}"))
        },
    );
    t.check(
        "a memfd of the same size costs its PTE tables",
        memfd_pte
            .map_err(|e| e.to_string())
            .and_then(|kib| if kib >= 128 { Ok(()) } else { Err(format!("only {kib} KiB")) }),
    );
    let _ = fs::remove_file(format!("{MOUNT}/api-map"));
}

/// The most that a first touch of `[addr, addr + len)` may add to VmPTE when the process
/// has no PTE table of its own there: a PMD table for each GiB the range spans and a PUD
/// table for each 512 GiB, where nothing else of the process has needed them yet. A window
/// is placed below the process's other mappings with a GiB of room (window_address in the
/// module), so its GiB usually needs a PMD table; whether its 512 GiB range needs a PUD
/// table too is address-space randomization's draw. A bound of one table failed stop 40's
/// CI with 8 KiB, and passed 34 reruns.
fn upper_tables_kib_at_most(addr: usize, len: usize) -> u64 {
    let spanned = |unit: usize| ((addr + len - 1) / unit - addr / unit + 1) as u64;
    4 * (spanned(GIB) + spanned(512 * GIB))
}

/// Minor faults taken by `work`, measured with everything the measurement itself touches
/// already faulted in.
/// Writes 64 KiB of stack, so that a forked child's copy-on-write faults on its stack are
/// over before it counts faults.
fn warm_stack() {
    let mut buf = [0u8; 65536];
    buf.fill(1);
    std::hint::black_box(&mut buf);
}

/// Maps `file` shared read-write over `len` bytes at `at`, replacing what is there.
fn map_fixed(at: *mut u8, len: usize, file: &File) -> bool {
    // SAFETY: callers replace one of their own windows, at its own address and length.
    let mapped = unsafe {
        libc::mmap(
            at.cast(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            file.as_raw_fd(),
            0,
        )
    };
    mapped == at.cast()
}

fn open_rw(name: &str) -> io::Result<File> {
    File::options().read(true).write(true).open(format!("{MOUNT}/{name}"))
}

/// In a forked child: maps region `name` anew (`len` bytes) and, counting its minor
/// faults, reads the 0x42 another process wrote at `marker` and touches the window with
/// `touch_window`. The child's status: its faults (at most 199), 200 if it could not map
/// the region, 201 if `marker` held something else.
fn sharer_faults(name: &str, len: usize, marker: usize, touch_window: impl Fn(*mut u8)) -> i32 {
    in_child(|| {
        let Ok(q) = open_rw(name).and_then(|f| map(&f, len, libc::MAP_SHARED, 0)) else { return 200 };
        warm_stack();
        let mut seen = 0;
        let faults = faults_of(|| {
            // SAFETY: `marker` is inside the child's own window.
            seen = unsafe { q.add(marker).read_volatile() };
            touch_window(q);
        });
        if seen != 0x42 {
            return 201;
        }
        faults.min(199) as i32
    })
}

/// `MSHAREFS_GET_STATS_72`, the number programs built before `links_now` carry: `Ok` if
/// it gives the first 72 bytes of what `MSHAREFS_GET_STATS` gives, and no byte more.
fn old_get_stats(region: &File) -> Result<(), String> {
    const OLD: usize = 72;
    let mut old = [0xffu8; OLD + 8];
    ioctl(region, guest_tests::msharefs::MSHAREFS_GET_STATS_72, old.as_mut_ptr() as usize)
        .map_err(|e| e.to_string())?;
    let now = get_stats(region).map_err(|e| e.to_string())?;
    // SAFETY: MshareStats is plain data (repr(C), u64 fields); its bytes are read only.
    let now = unsafe {
        std::slice::from_raw_parts(
            (&now as *const guest_tests::msharefs::MshareStats).cast::<u8>(),
            std::mem::size_of_val(&now),
        )
    };
    eq((&old[..OLD], &old[OLD..]), (&now[..OLD], &[0xffu8; 8][..]))
}

/// munmap flushes every TLB entry below the tables it unlinks: with the TLB filled by
/// reading `warm` (offsets) through the window at `p` (`len` bytes), a window of another
/// region of `size` bytes mapped over it (`MAP_FIXED`, the same address) shows that
/// region's zeros at every offset of `check`. `region` is mapped back at `p` after.
fn replaced_window_shows_its_own_region(
    region: &File,
    p: *mut u8,
    len: usize,
    size: usize,
    warm: &[usize],
    check: &[usize],
) -> Result<(), String> {
    let name = "api-replacement";
    let other = create(name, 0o600)
        .and_then(|f| {
            set_size(&f, size as u64)?;
            create_mapping(&f, &MshareCreate::anonymous(0, size as u64))?;
            Ok(f)
        })
        .map_err(|e| e.to_string())?;
    let _ = fs::remove_file(format!("{MOUNT}/{name}"));
    // SAFETY: reads inside the first window, to fill the TLB.
    let sum: u64 = warm.iter().map(|&o| u64::from(unsafe { p.add(o).read_volatile() })).sum();
    std::hint::black_box(sum);
    if !map_fixed(p, len, &other) {
        return Err(format!("MAP_FIXED over the window: {}", io::Error::last_os_error()));
    }
    // SAFETY: reads the other region (zeroed) through the new window.
    let stale = check.iter().filter(|&&o| unsafe { p.add(o).read_volatile() } != 0).count();
    if !map_fixed(p, len, region) {
        return Err(format!("mapping the first region back: {}", io::Error::last_os_error()));
    }
    eq(stale, 0).map_err(|e| format!("pages still showing the old region: {e}"))
}

/// Writes every page of the GiB-window checks' region (`GIB_REGION` bytes at `q`) but its
/// hole.
fn touch_around_the_hole(q: *mut u8) {
    touch(q, GIB_HOLE);
    let past = GIB_HOLE + GRANULE as usize;
    // SAFETY: past the hole, inside the window.
    touch(unsafe { q.add(past) }, GIB_REGION - past);
}

/// Mode B: the region's PTE tables are shared: filled once, linked with one fault per
/// window, protected for every sharer at once, gone with the region.
/// Mode C: SET_PROT reaches windows with mappings of their own too. They are mapped
/// read-only until a write asks the module (`page_mkwrite`), which answers from the
/// region's protection: a read-only region stops writers, warm or not, in every process,
/// and reads go on; read-write again lets them write.
fn own_mapping_protection_checks(t: &mut Suite) {
    const SIZE: usize = 4 * GRANULE as usize;
    // Three granules of the region's own chunks (2 MiB leaves), then a file's pages (4 KiB
    // entries, whose writes after a read reach the module only through page_mkwrite).
    let region = match create("api-prot-c", 0o600).and_then(|f| {
        set_size(&f, SIZE as u64)?;
        create_mapping(&f, &MshareCreate::anonymous(0, 3 * GRANULE))?;
        let file = memfd(c"api-prot-c-file", 0)?;
        file.set_len(GRANULE)?;
        let mut create = MshareCreate::anonymous(3 * GRANULE, GRANULE);
        create.flags = libc::MAP_SHARED as u32;
        create.fd = file.as_raw_fd() as u32;
        create_mapping(&f, &create)?;
        Ok(f)
    }) {
        Ok(f) => f,
        Err(e) => return t.check("a region for SET_PROT in mode C", Err(e.to_string())),
    };
    let p = match map(&region, SIZE, libc::MAP_SHARED, 0) {
        Ok(p) => p,
        Err(e) => return t.check("map it", Err(e.to_string())),
    };
    // SAFETY: inside the window: a read maps the first granule read-only, a write the
    // second writable.
    unsafe {
        std::hint::black_box(p.read_volatile());
        p.add(GRANULE as usize).write_volatile(3);
    }
    t.check("SET_PROT read-only", set_prot(&region, libc::PROT_READ).map_err(|e| e.to_string()));
    t.check(
        "then a write is SIGSEGV in this process and a child, where it had been read or written, and reads work",
        eq(
            (write_in_child(p), write_in_child(p.wrapping_add(GRANULE as usize)), read_in_child(p)),
            (Some(libc::SIGSEGV), Some(libc::SIGSEGV), None),
        ),
    );
    let file_page = p.wrapping_add(3 * GRANULE as usize);
    t.check(
        "a write after a read of a file's page (a read-only 4 KiB entry: page_mkwrite) is SIGSEGV",
        eq(read_then_write_in_child(file_page), Some(libc::SIGSEGV)),
    );
    t.check("write(2) while read-only is EACCES", expect_errno(region.write_at(b"x", 0).map(drop), libc::EACCES));
    t.check("SET_PROT read-write", set_prot(&region, libc::PROT_READ | libc::PROT_WRITE).map_err(|e| e.to_string()));
    t.check(
        "then writes land after a read mapped the granule read-only, and after a read of a file's page",
        eq(
            (
                write_in_child(p),
                write_in_child(p.wrapping_add(2 * GRANULE as usize)),
                read_then_write_in_child(file_page),
            ),
            (None, None, None),
        ),
    );
    t.check(
        "a process writing in a loop (its TLB warm) is stopped by SET_PROT read-only",
        warm_writer_is_stopped(&region, p),
    );
    let _ = set_prot(&region, libc::PROT_READ | libc::PROT_WRITE);
    let _ = unmap(p, SIZE);
    let _ = fs::remove_file(format!("{MOUNT}/api-prot-c"));
}

fn shared_table_checks(t: &mut Suite) {
    const SIZE: usize = 8 * GRANULE as usize;
    const SHARERS: i32 = 16;
    let start = SystemStats::read().map(|s| (s.shared_tables, s.memory_bytes)).unwrap_or((u64::MAX, u64::MAX));
    let start_page_tables = meminfo_kib("PageTables:");
    let region = match create("api-shared", 0o600) {
        Ok(r) => r,
        Err(e) => return t.check("create a region to share", Err(e.to_string())),
    };
    let setup = set_size(&region, SIZE as u64)
        .and_then(|()| create_mapping(&region, &MshareCreate::anonymous(0, SIZE as u64)))
        .and_then(|()| map(&region, SIZE, libc::MAP_SHARED, 0));
    let p = match setup {
        Ok(p) => p,
        Err(e) => return t.check("size, fill and map a region to share", Err(e.to_string())),
    };
    let faults = faults_of(|| touch(p, SIZE));
    t.check("touching 16 MiB of a shared window takes one fault", eq(faults, 1));
    // SAFETY: inside the window.
    unsafe { p.add(SIZE - 1).write_volatile(0x42) };

    // Every sharer maps the region itself and reads what the first one wrote.
    let codes: Vec<i32> =
        (0..SHARERS).map(|_| sharer_faults("api-shared", SIZE, SIZE - 1, |q| touch(q, SIZE))).collect();
    t.check(
        "16 more processes each take one fault for the whole region and see the data",
        eq(codes.iter().all(|&c| c == 1), true).map_err(|e| format!("{e}: {codes:?}")),
    );
    t.check(
        "the region still has one table per granule, whatever the number of sharers",
        get_stats(&region).map_err(|e| e.to_string()).and_then(|s| eq((s.tables, s.windows), (8, 1))),
    );
    t.check(
        "mprotect of a shared window is EINVAL (SET_PROT changes the region)",
        expect_errno(
            // SAFETY: mprotect of the whole window, which the module refuses.
            if unsafe { libc::mprotect(p.cast(), SIZE, libc::PROT_READ) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            },
            libc::EINVAL,
        ),
    );
    // SAFETY: a fresh mapping request with PROT_EXEC, checked for failure.
    let exec = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_SHARED,
            region.as_raw_fd(),
            0,
        )
    };
    t.check(
        "PROT_EXEC is EPERM",
        eq(exec == libc::MAP_FAILED, true)
            .and_then(|()| eq(io::Error::last_os_error().raw_os_error(), Some(libc::EPERM))),
    );
    // SAFETY: a fresh read-only mapping, checked for failure.
    let ro =
        unsafe { libc::mmap(std::ptr::null_mut(), SIZE, libc::PROT_READ, libc::MAP_SHARED, region.as_raw_fd(), 0) };
    let ro = if ro == libc::MAP_FAILED { None } else { Some(ro.cast::<u8>()) };
    t.check(
        "a read-only window of a writable region is its own (not shared) and stays read-only",
        match ro {
            None => Err(io::Error::last_os_error().to_string()),
            Some(q) => {
                // SAFETY: inside the read-only window.
                let seen = unsafe { q.add(SIZE - 1).read_volatile() };
                // SAFETY: mprotect of the whole read-only window.
                let upgrade = unsafe { libc::mprotect(q.cast(), SIZE, libc::PROT_READ | libc::PROT_WRITE) };
                let errno = io::Error::last_os_error().raw_os_error();
                let shared = SystemStats::read().map(|s| (s.windows, s.shared_windows)).unwrap_or_default();
                eq((seen, upgrade, errno, write_in_child(q)), (0x42, -1, Some(libc::EACCES), Some(libc::SIGSEGV)))
                    .and_then(|()| if shared.0 > shared.1 { Ok(()) } else { Err(format!("windows/shared {shared:?}")) })
            }
        },
    );

    // munmap flushes the 4 KiB TLB entries of the unlinked tables: a window of another
    // region mapped at the same address right after shows that region's data on every page
    // (a flush of one entry per 2 MiB, as for a huge leaf, left the old ones visible).
    t.check("after munmap, a new window at the same address sees its own region on every page", {
        let pages: Vec<usize> = (0..SIZE).step_by(4096).collect();
        replaced_window_shows_its_own_region(&region, p, SIZE, SIZE, &pages, &pages)
    });

    // A sharer with a warm TLB entry loses write access when the region goes read-only.
    let (mut ready, mut go) = ([0; 2], [0; 2]);
    // SAFETY: two fresh pipes.
    let piped = unsafe { libc::pipe(ready.as_mut_ptr()) == 0 && libc::pipe(go.as_mut_ptr()) == 0 };
    if !piped {
        return t.check("pipes", Err(io::Error::last_os_error().to_string()));
    }
    let child = spawn_child(|| {
        // SAFETY: the child writes, reports, waits, writes again (SIGSEGV expected), exits.
        unsafe {
            p.add(100).write_volatile(1);
            let byte = 1u8;
            libc::write(ready[1], (&byte as *const u8).cast(), 1);
            let mut got = 0u8;
            libc::read(go[0], (&mut got as *mut u8).cast(), 1);
            p.add(100).write_volatile(2);
        }
        0
    });
    let Some(pid) = child else { return t.check("fork a sharer", Err(io::Error::last_os_error().to_string())) };
    let mut byte = 0u8;
    // SAFETY: reading one byte from our pipe.
    unsafe { libc::read(ready[0], (&mut byte as *mut u8).cast(), 1) };
    t.check(
        "SET_PROT with a bad protection is EINVAL",
        expect_errno(set_prot(&region, libc::PROT_WRITE), libc::EINVAL),
    );
    t.check(
        "SET_PROT through a read-only open is EBADF",
        expect_errno(
            File::open(format!("{MOUNT}/api-shared")).and_then(|f| set_prot(&f, libc::PROT_READ)),
            libc::EBADF,
        ),
    );
    t.check("SET_PROT read-only", set_prot(&region, libc::PROT_READ).map_err(|e| e.to_string()));
    // SAFETY: writing one byte to our pipe, which releases the child.
    unsafe { libc::write(go[1], (&byte as *const u8).cast(), 1) };
    let status = wait_child(pid);
    t.check("a sharer that was writing gets SIGSEGV on its next write", eq(status, 128 + libc::SIGSEGV));
    t.check("so does this process, in its window", eq(write_in_child(p), Some(libc::SIGSEGV)));
    // SAFETY: inside the window, reading.
    t.check("reads still work", eq(unsafe { p.add(100).read_volatile() }, 1));
    t.check(
        "a new read-write mapping of a read-only region is EACCES",
        expect_errno(map(&region, SIZE, libc::MAP_SHARED, 0), libc::EACCES),
    );
    t.check("SET_PROT read-write", set_prot(&region, libc::PROT_READ | libc::PROT_WRITE).map_err(|e| e.to_string()));
    t.check(
        "writes work again, in every sharer",
        eq(
            (
                write_in_child(p),
                in_child(|| {
                    // SAFETY: inside the inherited window.
                    unsafe { p.add(200).write_volatile(3) };
                    0
                }),
            ),
            (None, 0),
        ),
    );
    // SAFETY: reading what the child wrote.
    t.check("and land for all", eq(unsafe { p.add(200).read_volatile() }, 3));
    // SAFETY: closing our pipes.
    unsafe {
        for fd in [ready[0], ready[1], go[0], go[1]] {
            libc::close(fd);
        }
    }

    if let Some(q) = ro {
        let _ = unmap(q, SIZE);
    }
    let _ = unmap(p, SIZE);
    drop(region);
    let _ = fs::remove_file(format!("{MOUNT}/api-shared"));
    t.check(
        "the region's tables and memory are freed with it",
        SystemStats::read().map_err(|e| e.to_string()).and_then(|s| eq((s.shared_tables, s.memory_bytes), start)),
    );
    // Exited children's tables are freed after an RCU grace period, which the emulator
    // may stretch to seconds: wait up to 20 s (the loop ends as soon as they are).
    let mut grown = 0;
    for _ in 0..500 {
        grown = meminfo_kib("PageTables:").saturating_sub(start_page_tables);
        if grown <= 16 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(40));
    }
    t.check(
        "PageTables returns to where it started (within 16 KiB)",
        if grown <= 16 { Ok(()) } else { Err(format!("{grown} KiB more")) },
    );
}

/// A window of whole GiBs over a region smaller than a GiB: it goes at a GiB boundary and
/// the rest of the GiB is a hole, in both modes. In mode B the window shares the region's
/// PMD table, with 2 MiB leaves: one fault for the window, no page table of the process's
/// own, and every rule of the shared PTE tables kept (fork, futexes, SET_PROT, UNMAP of a
/// leaf, a file's pages, munmap, exit).
fn gib_window_checks(t: &mut Suite, shares_tables: bool) {
    const G: usize = GRANULE as usize;
    let start = SystemStats::read().map(|s| (s.shared_pmd_tables, s.shared_tables, s.memory_bytes)).unwrap_or_default();
    let region = match create("api-gib", 0o600) {
        Ok(r) => r,
        Err(e) => return t.check("create a region for a GiB window", Err(e.to_string())),
    };
    let setup = set_size(&region, GIB_REGION as u64)
        .and_then(|()| create_mapping(&region, &MshareCreate::anonymous(0, GIB_HOLE as u64)))
        .and_then(|()| {
            create_mapping(&region, &MshareCreate::anonymous((GIB_HOLE + G) as u64, (GIB_REGION - GIB_HOLE - G) as u64))
        });
    if let Err(e) = setup {
        return t.check("size and fill a 64 MiB region with a hole", Err(e.to_string()));
    }
    t.check(
        "a window of 2 GiB over a 64 MiB region is EINVAL (only the rest of its last GiB may be mapped)",
        expect_errno(map(&region, 2 * GIB, libc::MAP_SHARED, 0), libc::EINVAL),
    );
    t.check(
        "a window past the end that is not whole GiBs is EINVAL",
        expect_errno(map(&region, GIB_REGION + G, libc::MAP_SHARED, 0), libc::EINVAL),
    );
    let pte_before = status_kib("VmPTE:");
    let p = match map(&region, GIB, libc::MAP_SHARED, 0) {
        Ok(p) => p,
        Err(e) => return t.check("mmap a window of 1 GiB over the 64 MiB region", Err(e.to_string())),
    };
    t.check("the window is at a GiB boundary", eq(p as usize % GIB, 0));
    let faults = faults_of(|| touch_around_the_hole(p));
    let pte_grown = status_kib("VmPTE:").saturating_sub(pte_before);
    // SAFETY: inside the window (and the region).
    unsafe { p.add(GIB_REGION - 1).write_volatile(0x42) };
    if !shares_tables {
        t.check("mode C: a fault per granule touched", eq(faults, (GIB_REGION / G - 1) as u64));
    } else {
        t.check("touching every page of 62 MiB takes one fault", eq(faults, 1));
        t.check(
            "and the process pays no page table for it (VmPTE)",
            if pte_grown <= 4 { Ok(()) } else { Err(format!("VmPTE grew by {pte_grown} KiB")) },
        );
        t.check(
            "statistics: one PMD table, linked once, 2 MiB leaves over all the memory, no PTE table",
            get_stats(&region).map_err(|e| e.to_string()).and_then(|s| {
                eq((s.pmd_tables, s.pmd_links, s.huge_leaf_bytes, s.tables), (1, 1, (GIB_REGION - G) as u64, 0))
            }),
        );
    }
    // SAFETY: offsets inside the window.
    let (hole, past_end, last) = unsafe { (p.add(GIB_HOLE), p.add(GIB_REGION), p.add(GIB - 1)) };
    t.check(
        "the hole, the rest of the GiB and its last byte are SIGSEGV",
        eq(
            (read_in_child(hole), read_in_child(past_end), read_in_child(last)),
            (Some(libc::SIGSEGV), Some(libc::SIGSEGV), Some(libc::SIGSEGV)),
        ),
    );
    if shares_tables {
        shared_pmd_checks(t, &region, p);
    }
    let _ = unmap(p, GIB);
    drop(region);
    let _ = fs::remove_file(format!("{MOUNT}/api-gib"));
    t.check(
        "the region's PMD table, PTE tables and memory are freed with it",
        SystemStats::read()
            .map_err(|e| e.to_string())
            .and_then(|s| eq((s.shared_pmd_tables, s.shared_tables, s.memory_bytes), start)),
    );
}

/// Mode B: what a shared PMD table keeps of the shared PTE tables' rules, on the 64 MiB
/// region of [`gib_window_checks`] (a hole at granule 5) mapped by a 1 GiB window at `p`.
fn shared_pmd_checks(t: &mut Suite, region: &File, p: *mut u8) {
    const G: usize = GRANULE as usize;
    let codes: Vec<i32> =
        (0..8).map(|_| sharer_faults("api-gib", GIB, GIB_REGION - 1, touch_around_the_hole)).collect();
    t.check(
        "8 more processes each take one fault for the whole window and see the data",
        eq(codes.iter().all(|&c| c == 1), true).map_err(|e| format!("{e}: {codes:?}")),
    );
    t.check(
        "a forked child links the table on its first access (one fault) and sees the data",
        eq(
            in_child(|| {
                warm_stack();
                let mut seen = 0;
                // SAFETY: inside the inherited window.
                let faults = faults_of(|| seen = unsafe { p.add(GIB_REGION - 1).read_volatile() });
                if seen != 0x42 {
                    return 201;
                }
                faults.min(199) as i32
            }),
            1,
        ),
    );
    t.check(
        "still one PMD table however many processes linked it, and no PTE table",
        get_stats(region).map_err(|e| e.to_string()).and_then(|s| eq((s.pmd_tables, s.tables), (1, 0))),
    );
    t.check("a futex in a 2 MiB leaf wakes a waiter in another process", futex_across_processes(p));

    t.check("SET_PROT read-only", set_prot(region, libc::PROT_READ).map_err(|e| e.to_string()));
    t.check(
        "then a write through the 2 MiB leaf is SIGSEGV, a read is not",
        eq((write_in_child(p), read_in_child(p)), (Some(libc::SIGSEGV), None)),
    );
    t.check("SET_PROT read-write", set_prot(region, libc::PROT_READ | libc::PROT_WRITE).map_err(|e| e.to_string()));
    t.check("writes work again", eq(write_in_child(p), None));
    t.check(
        "a sharer writing in a loop (its TLB warm, no context switch) is stopped by SET_PROT read-only",
        warm_writer_is_stopped(region, p),
    );
    t.check(
        "SET_PROT read-write again",
        set_prot(region, libc::PROT_READ | libc::PROT_WRITE).map_err(|e| e.to_string()),
    );

    // SAFETY: offsets inside the window.
    let (second, third) = unsafe { (p.add(2 * G), p.add(3 * G)) };
    // SAFETY: inside the window.
    unsafe { second.add(8).write_volatile(7) };
    t.check("UNMAP of one 2 MiB leaf", unmap_range(region, 2 * GRANULE, GRANULE).map_err(|e| e.to_string()));
    t.check(
        "takes it from every process (SIGSEGV), its neighbour stays",
        eq((read_in_child(second), read_in_child(third)), (Some(libc::SIGSEGV), None)),
    );
    t.check(
        "CREATE_MAPPING gives it zeroed memory again, through the same table",
        create_mapping(region, &MshareCreate::anonymous(2 * GRANULE, GRANULE))
            .map_err(|e| e.to_string())
            // SAFETY: inside the window, with memory again.
            .and_then(|()| eq(unsafe { second.add(8).read_volatile() }, 0)),
    );

    // A file's pages are not contiguous: the PMD table points at a shared PTE table.
    let file = memfd(c"api-gib-file", 0).and_then(|f| {
        f.set_len(GRANULE)?;
        f.write_all_at(b"file", 0)?;
        Ok(f)
    });
    let given = file.and_then(|f| {
        unmap_range(region, 3 * GRANULE, GRANULE)?;
        let mut create = MshareCreate::anonymous(3 * GRANULE, GRANULE);
        create.flags = libc::MAP_SHARED as u32;
        create.fd = f.as_raw_fd() as u32;
        create_mapping(region, &create)
    });
    t.check(
        "a file's pages under the PMD table show through a shared PTE table",
        given.map_err(|e| e.to_string()).and_then(|()| {
            // SAFETY: the file's first bytes, through the window.
            let seen: Vec<u8> = (0..4).map(|i| unsafe { third.add(i).read_volatile() }).collect();
            eq(seen.as_slice(), b"file".as_slice())
        }),
    );
    t.check(
        "statistics: one PTE table, the rest 2 MiB leaves",
        get_stats(region)
            .map_err(|e| e.to_string())
            .and_then(|s| eq((s.pmd_tables, s.tables, s.huge_leaf_bytes), (1, 1, (GIB_REGION - 2 * G) as u64))),
    );
    t.check(
        "a window at a 2 MiB offset shares PTE tables, not the PMD table",
        open_rw("api-gib")
            .and_then(|f| map(&f, 4 * G, libc::MAP_SHARED, (4 * G) as i64))
            .map_err(|e| e.to_string())
            .and_then(|q| {
                // SAFETY: inside that window (granule 4; its first fault links the PTE tables
                // of granules 4, 6 and 7, beside the file's of granule 3).
                let byte = unsafe { q.add(8).read_volatile() };
                let tables = get_stats(region).map(|s| (s.pmd_tables, s.tables)).map_err(|e| e.to_string());
                let _ = unmap(q, 4 * G);
                eq((byte, tables?), (0, (1, 4)))
            }),
    );

    // munmap unlinks the PMD table and flushes every entry below it: a window of another
    // region mapped at the same address right after shows that region's data everywhere.
    t.check("after munmap, a new window at the same address sees its own region on every page", {
        let pages = (0..GIB_REGION).step_by(4096).filter(|&o| !(GIB_HOLE..GIB_HOLE + G).contains(&o));
        // One page per granule, at a different page offset in each, so that all of them
        // stay in a small TLB (QEMU's is direct-mapped: a sweep of every page evicts its
        // own entries before a second sweep reads them): read last to warm, first to check.
        let samples = (0..GIB_REGION / G).filter(|&g| g * G != GIB_HOLE).map(|g| g * G + g * 4096);
        let warm: Vec<usize> = pages.clone().chain(samples.clone()).collect();
        let check: Vec<usize> = samples.chain(pages).collect();
        replaced_window_shows_its_own_region(region, p, GIB, GIB_REGION, &warm, &check)
    });
    t.check(
        "mapped back, it shows its data again (the table linked anew)",
        // SAFETY: inside the window.
        eq(unsafe { p.add(GIB_REGION - 1).read_volatile() }, 0x42),
    );
    t.check(
        "exited processes left one window: this one",
        get_stats(region).map_err(|e| e.to_string()).and_then(|s| eq(s.windows, 1)),
    );
    t.check(
        "what a process wrote into a file's pages stays in the file after UNMAP, through drop_caches",
        written_file_pages_stay(region, 3 * GRANULE, third),
    );
}

/// Gives granule `offset` of `region` (mapped at `window`) the pages of a new memfd that
/// nothing ever wrote through the file, writes through the window, takes the granule
/// away (UNMAP: the pins go) and drops the page cache: the file must still hold what was
/// written. The writes went through the region's tables, which the core never reads the
/// dirty bits of, so the module marks the pages dirty as it unpins them; a clean shmem
/// page out of use is dropped, its data lost.
fn written_file_pages_stay(region: &File, offset: u64, window: *mut u8) -> Result<(), String> {
    const AT: usize = 2 * 4096 + 100;
    let file = memfd(c"api-dirty-file", 0).and_then(|f| f.set_len(GRANULE).map(|()| f)).map_err(|e| e.to_string())?;
    unmap_range(region, offset, GRANULE).map_err(|e| format!("UNMAP: {e}"))?;
    let mut create = MshareCreate::anonymous(offset, GRANULE);
    create.flags = libc::MAP_SHARED as u32;
    create.fd = file.as_raw_fd() as u32;
    create_mapping(region, &create).map_err(|e| format!("CREATE_MAPPING of the file: {e}"))?;
    // SAFETY: inside the granule, which maps the file's pages now.
    unsafe { window.add(AT).copy_from_nonoverlapping(b"written".as_ptr(), 7) };
    unmap_range(region, offset, GRANULE).map_err(|e| format!("UNMAP: {e}"))?;
    fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| format!("drop_caches: {e}"))?;
    let mut seen = [0u8; 7];
    file.read_exact_at(&mut seen, AT as u64).map_err(|e| format!("pread: {e}"))?;
    eq(&seen, b"written")
}

/// A child writes at `p` in a loop, its TLB warm (nothing makes it switch context) while
/// this process makes the region read-only: the unlink's TLB flush must reach its CPU, and
/// its next write is SIGSEGV. `Ok` if it was. The child gives up after a minute, a bound
/// for a kernel that never stops it, not for the test's pace: under the emulator this
/// process may take seconds to be scheduled between the child's "ready" and its SET_PROT.
fn warm_writer_is_stopped(region: &File, p: *mut u8) -> Result<(), String> {
    let (mut ready_r, mut ready_w) = guest_tests::process::pipe().map_err(|e| e.to_string())?;
    let Some(pid) = spawn_child(|| {
        // SAFETY: inside the inherited window; writable until the parent's SET_PROT.
        unsafe { p.add(100).write_volatile(1) };
        if ready_w.write_all(b"r").is_err() {
            return 2;
        }
        let until = Instant::now() + Duration::from_secs(60);
        let mut i = 0u8;
        while Instant::now() < until {
            i = i.wrapping_add(1);
            // SAFETY: as above; SIGSEGV once the region is read-only, as it should be.
            unsafe { p.add(100).write_volatile(i) };
        }
        0
    }) else {
        return Err(io::Error::last_os_error().to_string());
    };
    drop(ready_w);
    let mut byte = [0u8; 1];
    let ready = ready_r.read_exact(&mut byte).map_err(|e| e.to_string());
    let protected = ready.and_then(|()| set_prot(region, libc::PROT_READ).map_err(|e| e.to_string()));
    let status = wait_child(pid);
    protected?;
    eq(status, 128 + libc::SIGSEGV).map_err(|e| format!("the writer's status (0: it wrote for a minute): {e}"))
}

/// A child waits on a futex word at `p` (a shared futex, keyed by the region's file and
/// offset through GUP), this process wakes it: `Ok` if the child saw the wake-up.
fn futex_across_processes(p: *mut u8) -> Result<(), String> {
    let word = p.cast::<u32>();
    // SAFETY: an aligned word inside the window.
    unsafe { word.write_volatile(0) };
    let Some(pid) = spawn_child(|| {
        let timeout = libc::timespec { tv_sec: 20, tv_nsec: 0 };
        // SAFETY: FUTEX_WAIT on a word of the inherited window, with a timeout.
        let r = unsafe { libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAIT, 0, &timeout, 0usize, 0) };
        // Woken (0), or the value changed before it slept (EAGAIN): either way it saw ours.
        let woken = r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
        if woken {
            0
        } else {
            1
        }
    }) else {
        return Err(io::Error::last_os_error().to_string());
    };
    let mut woke = 0;
    for _ in 0..400 {
        // SAFETY: FUTEX_WAKE on the same word, through this process's window.
        woke = unsafe { libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAKE, 1, 0usize, 0usize, 0) };
        if woke > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eq((woke, wait_child(pid)), (1, 0))
}

/// `/dev/mshare`: the 2026 calls on regions with no name, and on named ones.
fn device_checks(t: &mut Suite) {
    use guest_tests::msharefs::ioctl_value;
    use mshare_uapi::device::{
        Device, MshareAttach, MshareDetach, MshareMap, MSHARE_ATTACH, MSHARE_ATTACH_FIXED, MSHARE_CREATE,
        MSHARE_DETACH, MSHARE_MAP,
    };
    use mshare_uapi::Calls;
    const SIZE: usize = 4 * GRANULE as usize;
    let start_regions = SystemStats::read().map(|s| s.regions).unwrap_or(u64::MAX);
    let dev = match Device::open() {
        Ok(d) => d,
        Err(e) => return t.check("open /dev/mshare", Err(e.to_string())),
    };
    t.check(
        "MSHARE_CREATE with unknown flags is EINVAL",
        expect_errno(ioctl_value(dev.file(), MSHARE_CREATE, 0x1), libc::EINVAL),
    );
    let region = match dev.create(true) {
        Ok(r) => r,
        Err(e) => return t.check("MSHARE_CREATE", Err(e.to_string())),
    };
    // SAFETY: reading the descriptor flags of a descriptor we own.
    let cloexec = unsafe { libc::fcntl(region.as_raw_fd(), libc::F_GETFD) } & libc::FD_CLOEXEC != 0;
    t.check(
        "MSHARE_CREATE gives a close-on-exec region of size 0",
        region.metadata().map_err(|e| e.to_string()).and_then(|m| eq((m.len(), cloexec), (0, true))),
    );
    t.check("ftruncate sizes it", region.set_len(SIZE as u64).map_err(|e| e.to_string()));
    // Raw calls with one field wrong, which the safe wrappers cannot express.
    let map_raw = |fd: i32, object_fd: i32| {
        let mut m = MshareMap {
            fd,
            prot: (libc::PROT_READ | libc::PROT_WRITE) as u32,
            offset: 0,
            size: GRANULE,
            object_fd,
            flags: 0,
        };
        ioctl(dev.file(), MSHARE_MAP, &mut m as *mut MshareMap as usize)
    };
    let attach_fixed = |addr: u64| {
        let mut a = MshareAttach { fd: region.as_raw_fd(), flags: MSHARE_ATTACH_FIXED, offset: 0, size: GRANULE, addr };
        ioctl(dev.file(), MSHARE_ATTACH, &mut a as *mut MshareAttach as usize)
    };
    t.check(
        "MSHARE_MAP with a file object that is not shmem (the console) is EOPNOTSUPP",
        expect_errno(map_raw(region.as_raw_fd(), 0), libc::EOPNOTSUPP),
    );
    t.check("MSHARE_MAP past the end is EINVAL", expect_errno(dev.map(&region, GRANULE, SIZE as u64), libc::EINVAL));
    t.check("MSHARE_MAP of a bad descriptor is EBADF", expect_errno(map_raw(999, -1), libc::EBADF));
    t.check(
        "MSHARE_MAP of a file that is no region is EINVAL",
        expect_errno(map_raw(dev.file().as_raw_fd(), -1), libc::EINVAL),
    );
    t.check("MSHARE_MAP gives it memory", dev.map(&region, 0, SIZE as u64).map_err(|e| e.to_string()));
    let window = match dev.attach(&region, 0, SIZE, false) {
        Ok(w) => w,
        Err(e) => return t.check("MSHARE_ATTACH", Err(e.to_string())),
    };
    window.write(SIZE - 8, b"attached");
    t.check("an attached window is granule aligned", eq(window.as_ptr() as u64 % GRANULE, 0));
    let code = in_child(|| {
        let Ok(w) = dev.attach(&region, GRANULE * 3, GRANULE as usize, true) else { return 10 };
        let mut seen = [0u8; 8];
        w.read(GRANULE as usize - 8, &mut seen);
        i32::from(&seen != b"attached")
    });
    t.check("a child given the descriptor attaches part of it read-only and reads the data", eq(code, 0));
    t.check(
        "MSHARE_ATTACH of an unaligned offset is EINVAL",
        expect_errno(dev.attach(&region, 4096, GRANULE as usize, false).map(|_| ()), libc::EINVAL),
    );
    t.check("MSHARE_ATTACH_FIXED without an address is EINVAL", expect_errno(attach_fixed(0), libc::EINVAL));
    t.check(
        "MSHARE_ATTACH_FIXED over a window is EEXIST",
        expect_errno(attach_fixed(window.as_ptr() as u64), libc::EEXIST),
    );
    let detach = |addr: u64, size: u64| {
        let mut d = MshareDetach { addr, size };
        ioctl(dev.file(), MSHARE_DETACH, &mut d as *mut MshareDetach as usize)
    };
    t.check(
        "MSHARE_DETACH of part of a window is EINVAL",
        expect_errno(detach(window.as_ptr() as u64, GRANULE), libc::EINVAL),
    );
    let stack = 0u64;
    t.check(
        "MSHARE_DETACH of memory that is no window is EINVAL",
        expect_errno(detach(&stack as *const u64 as u64 & !4095, 4096), libc::EINVAL),
    );
    t.check("MSHARE_PROTECT read-only", dev.protect(&region, libc::PROT_READ).map_err(|e| e.to_string()));
    t.check("then a write is SIGSEGV", eq(write_in_child(window.as_ptr()), Some(libc::SIGSEGV)));
    t.check(
        "MSHARE_PROTECT read-write",
        dev.protect(&region, libc::PROT_READ | libc::PROT_WRITE).map_err(|e| e.to_string()),
    );
    t.check("then a write lands", eq(write_in_child(window.as_ptr()), None));
    t.check("MSHARE_UNMAP of a granule", dev.unmap(&region, 0, GRANULE).map_err(|e| e.to_string()));
    t.check("leaves a hole", eq(read_in_child(window.as_ptr()), Some(libc::SIGSEGV)));
    t.check("an unknown request is ENOTTY", expect_errno(ioctl(dev.file(), 0x7800_78ff, 0), libc::ENOTTY));
    let named = create("api-dev", 0o600)
        .and_then(|f| f.set_len(GRANULE).map(|()| f))
        .and_then(|f| dev.map(&f, 0, GRANULE).map(|()| f))
        .and_then(|f| dev.attach(&f, 0, GRANULE as usize, false).and_then(|w| dev.detach(w)));
    t.check("a named msharefs region works with /dev/mshare too", named.map_err(|e| e.to_string()));
    let _ = fs::remove_file(format!("{MOUNT}/api-dev"));
    t.check("MSHARE_DETACH of the window", dev.detach(window).map_err(|e| e.to_string()));
    drop(region);
    t.check(
        "a region with no name goes with its last descriptor and window",
        SystemStats::read().map_err(|e| e.to_string()).and_then(|s| eq(s.regions, start_regions)),
    );
}

/// `mshare-api unplug`: an ivshmem device unbound while a process maps its msharefs
/// region. The region's inode keeps it alive (no use after free, no oops), the mapping
/// loses the memory (SIGBUS), calls on the open file are ENODEV, and once the driver is
/// bound again a new mount shows the device with its data. Needs an ivshmem device whose
/// first 19 bytes are "hello from the host"; leaves msharefs mounted, the device bound.
fn unplug_checks(t: &mut Suite) {
    use guest_tests::ivshmem::devices;
    let Some(device) = devices().ok().and_then(|all| all.into_iter().next()) else {
        return t.check("an ivshmem device to unplug", Err("none found".to_owned()));
    };
    let name = device.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| device.address.clone());
    let path = format!("{MOUNT}/ivshmem/{name}");
    // An unreadable count fails the checks that compare it (never MAX against MAX).
    let regions = || SystemStats::read().map(|s| s.regions).map_err(|e| format!("mshare_stats: {e}"));
    let before = match regions() {
        Ok(n) => n,
        Err(e) => return t.check("the region count before the unplug", Err(e)),
    };
    let file = match open_rw(&format!("ivshmem/{name}")) {
        Ok(f) => f,
        Err(e) => return t.check(&format!("open {path}"), Err(e.to_string())),
    };
    let len = device.size as usize;
    let ptr = match map(&file, len, libc::MAP_SHARED, 0) {
        Ok(p) => p,
        Err(e) => return t.check("map the device region", Err(e.to_string())),
    };
    // SAFETY: inside the live mapping of `len` bytes.
    let hello = unsafe { std::slice::from_raw_parts(ptr, 19) }.to_vec();
    t.check("the device region holds the host's bytes", eq(hello.as_slice(), b"hello from the host".as_slice()));
    // SAFETY: as above.
    unsafe { ptr.add(4096).copy_from_nonoverlapping(b"before unplug".as_ptr(), 13) };
    t.check("a child reaches it through the mapping", eq(read_in_child(ptr.wrapping_add(len - 1)), None));
    // A window of a whole GiB over the device: in mode B its region's PMD table, with special
    // 2 MiB leaves over the BAR (a BAR is aligned to its size), the rest of the GiB a hole.
    let shares = SystemStats::read().map(|s| s.shares_tables()).unwrap_or(false);
    match map(&file, 1 << 30, libc::MAP_SHARED, 0) {
        Ok(gib) => {
            // SAFETY: the device's first bytes, through the GiB window.
            let head = unsafe { std::slice::from_raw_parts(gib, 19) }.to_vec();
            let leaves = get_stats(&file).map(|s| (s.pmd_tables, s.huge_leaf_bytes)).map_err(|e| e.to_string());
            let want = if shares { (1, len as u64) } else { (0, 0) };
            t.check(
                "a GiB window over the device reads it (mode B: through 2 MiB leaves of a shared PMD table)",
                eq(head.as_slice(), b"hello from the host".as_slice()).and_then(|()| eq(leaves?, want)),
            );
            let _ = unmap(gib, 1 << 30);
        }
        Err(e) => t.check("map a GiB window over the device region", Err(e.to_string())),
    }

    t.check(
        "SET_PROT through an api=v3 mount (a second inode of the device region) unlinks this one's tables (mode C: its \
         mappings) and stops a warm writer",
        set_prot_through_a_second_mount(&name, ptr),
    );

    let unbind = fs::write(device.path.join("driver/unbind"), &device.address);
    t.check("unbind the driver under a live mapping", unbind.map_err(|e| e.to_string()));
    t.check("then the mapping has no memory: SIGBUS", eq(read_in_child(ptr), Some(libc::SIGBUS)));
    t.check("and a write is SIGBUS too", eq(write_in_child(ptr.wrapping_add(4096)), Some(libc::SIGBUS)));
    t.check("GET_SIZE on the open file is ENODEV", expect_errno(get_size(&file), libc::ENODEV));
    t.check("a new mapping is ENODEV", expect_errno(map(&file, len, libc::MAP_SHARED, 0), libc::ENODEV));
    t.check("the open file keeps the region alive", regions().and_then(|n| eq(n, before)));
    t.check("munmap of the old window", unmap(ptr, len).map_err(|e| e.to_string()));
    drop(file);

    let bind = fs::write("/sys/bus/pci/drivers/mshare-ivshmem/bind", &device.address);
    t.check("bind the driver again", bind.map_err(|e| e.to_string()));
    t.check(
        "the device region is published again (the old one lives on in the mount)",
        regions().and_then(|n| eq(n, before + 1)),
    );
    let remount = umount_msharefs(MOUNT).and_then(|()| mount_msharefs(MOUNT, c""));
    t.check("msharefs unmounts and mounts again", remount.map_err(|e| e.to_string()));
    t.check("the unplugged region went with its last inode", regions().and_then(|n| eq(n, before)));
    let again = open_rw(&format!("ivshmem/{name}")).and_then(|f| {
        let p = map(&f, len, libc::MAP_SHARED, 0)?;
        // SAFETY: inside the live mapping of `len` bytes.
        let seen = unsafe { std::slice::from_raw_parts(p.add(4096), 13) }.to_vec();
        unmap(p, len)?;
        Ok(seen)
    });
    t.check(
        "the new mount shows the device with the data written before the unplug",
        again.map_err(|e| e.to_string()).and_then(|seen| eq(seen.as_slice(), b"before unplug".as_slice())),
    );
}

/// A device region shows as one inode per msharefs instance: mounts msharefs with api=v3
/// (a second instance) and sets the device region read-only through it. This mount's
/// processes must lose their links to the region's tables too (a read through `p`, this
/// mount's mapping, then faults once to link them again), which is what flushes their
/// TLBs; and a process writing in a loop through `p` is stopped. Then writable again, and
/// unmounts.
fn set_prot_through_a_second_mount(name: &str, p: *mut u8) -> Result<(), String> {
    const SECOND: &str = "/tmp/msharefs-v3";
    fs::create_dir_all(SECOND).map_err(|e| format!("mkdir {SECOND}: {e}"))?;
    mount_msharefs(SECOND, c"api=v3").map_err(|e| format!("mount -o api=v3 {SECOND}: {e}"))?;
    let result = OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("{SECOND}/ivshmem/{name}"))
        .map_err(|e| format!("open {SECOND}/ivshmem/{name}: {e}"))
        .and_then(|file| {
            // SAFETY: inside this mount's window: its tables are linked now.
            unsafe { p.read_volatile() };
            set_prot(&file, libc::PROT_READ).map_err(|e| format!("SET_PROT read-only: {e}"))?;
            let relinks = faults_of(|| {
                // SAFETY: as above; reads stay allowed.
                std::hint::black_box(unsafe { p.read_volatile() });
            });
            set_prot(&file, libc::PROT_READ | libc::PROT_WRITE).map_err(|e| format!("SET_PROT read-write: {e}"))?;
            eq(relinks, 1).map_err(|e| {
                format!("faults of a read through this mount after SET_PROT through the other (1: its tables were unlinked and its TLB flushed): {e}")
            })?;
            let stopped = warm_writer_is_stopped(&file, p);
            set_prot(&file, libc::PROT_READ | libc::PROT_WRITE).map_err(|e| format!("SET_PROT read-write: {e}"))?;
            stopped
        });
    let unmounted = umount_msharefs(SECOND).map_err(|e| format!("umount {SECOND}: {e}"));
    result.and(unmounted)
}

fn umount_msharefs(target: &str) -> io::Result<()> {
    let target = std::ffi::CString::new(target).map_err(io::Error::other)?;
    // SAFETY: a valid C string.
    if unsafe { libc::umount(target.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Mounts msharefs at `target` with `options` (mount data, e.g. `api=v3`; empty for none).
fn mount_msharefs(target: &str, options: &std::ffi::CStr) -> io::Result<()> {
    mount_msharefs_with(target, 0, options)
}

/// `mount(2)` of msharefs at `target` with mount `flags` and `options`.
fn mount_msharefs_with(target: &str, flags: libc::c_ulong, options: &std::ffi::CStr) -> io::Result<()> {
    let target = std::ffi::CString::new(target).map_err(io::Error::other)?;
    let data = if options.is_empty() { std::ptr::null() } else { options.as_ptr().cast() };
    // SAFETY: valid C strings; `data` is null or a C string.
    let done = unsafe { libc::mount(c"msharefs".as_ptr(), target.as_ptr(), c"msharefs".as_ptr(), flags, data) };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `MADV_DONTNEED` of 4 KiB inside a window's first granule (a 2 MiB leaf of its own in
/// mode C, a shared table in mode B), in a child that then exits: the data stays (the
/// region is the memory, as a file's page cache is), and the child's memory accounting
/// ends clean. In mode C the module made the window `VM_MIXEDMAP`, where the core's split
/// of a leaf only clears it: the child's exit then printed `BUG: Bad rss-counter state`
/// (which fails the run) and the chunk was never freed.
fn madvise_checks(t: &mut Suite) {
    let made = create("api-madvise", 0o600).and_then(|f| {
        set_size(&f, GRANULE)?;
        create_mapping(&f, &MshareCreate::anonymous(0, GRANULE))?;
        Ok(f)
    });
    let Ok(region) = made else {
        t.check("a region for madvise", made.map(|_| ()).map_err(|e| e.to_string()));
        return;
    };
    let status = in_child(|| {
        let Ok(p) = map(&region, GRANULE as usize, libc::MAP_SHARED, 0) else { return 2 };
        touch(p, GRANULE as usize);
        // SAFETY: inside the window just mapped.
        unsafe { p.add(4096).write_volatile(0x5a) };
        // SAFETY: a page-aligned range inside the window.
        if unsafe { libc::madvise(p.add(4096).cast(), 4096, libc::MADV_DONTNEED) } != 0 {
            return 3;
        }
        // SAFETY: as above; the page comes back from the region.
        if unsafe { p.add(4096).read_volatile() } != 0x5a {
            return 4;
        }
        0
    });
    drop(region);
    t.check(
        "MADV_DONTNEED of 4 KiB of a window keeps the data and leaves the process's accounting clean",
        eq(status, 0).and_then(|()| fs::remove_file(format!("{MOUNT}/api-madvise")).map_err(|e| e.to_string())),
    );
}

/// The mount limits `size=` and `nr_regions=` (on an api=v3 instance of its own, mounted
/// here and gone after): regions by name past `nr_regions` and memory past `size` are
/// ENOSPC; UNMAP gives memory back; /proc/mounts shows the limits; a remount may raise
/// them, not set one below what is in use (EINVAL).
fn limits_checks(t: &mut Suite) {
    const LIMITED: &str = "/tmp/msharefs-limits";
    let mounted = fs::create_dir_all(LIMITED)
        .and_then(|()| mount_msharefs(LIMITED, c"api=v3,size=4M,nr_regions=2"))
        .map_err(|e| format!("mount -o api=v3,size=4M,nr_regions=2 {LIMITED}: {e}"));
    t.check("msharefs mounts with size= and nr_regions=", mounted.clone());
    if mounted.is_err() {
        return;
    }
    let options = fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(LIMITED))
        .map(str::to_owned)
        .unwrap_or_default();
    t.check(
        "/proc/mounts shows the limits",
        eq(options.contains("api=v3,size=4194304,nr_regions=2"), true).map_err(|e| format!("{options:?}: {e}")),
    );
    let make = |name: &str| {
        OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(format!("{LIMITED}/{name}"))
    };
    let (a, b) = (make("limit-a"), make("limit-b"));
    t.check("two regions within nr_regions=2", eq((a.is_ok(), b.is_ok()), (true, true)));
    t.check("a third is ENOSPC", expect_errno(make("limit-c"), libc::ENOSPC));
    let (Ok(a), Ok(b)) = (a, b) else { return };
    // The instance speaks v3: sizes by ftruncate, memory by v3's CREATE_MAPPING.
    let give = |file: &File, offset: u64, size: u64| {
        let create = MshareCreate {
            flags: (libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_FIXED) as u32,
            ..MshareCreate::anonymous(offset, size)
        };
        guest_tests::msharefs::v3::create_mapping(file, &create)
    };
    let filled = a.set_len(4 * GRANULE).and_then(|()| b.set_len(GRANULE)).and_then(|()| give(&a, 0, 2 * GRANULE));
    t.check("memory up to size=4M", filled.map_err(|e| e.to_string()));
    t.check(
        "memory past size= is ENOSPC, and the region keeps none of it",
        expect_errno(give(&b, 0, GRANULE), libc::ENOSPC)
            .and_then(|()| get_stats(&b).map_err(|e| e.to_string()).and_then(|s| eq(s.backed, 0))),
    );
    t.check(
        "UNMAP gives memory back to the mount",
        guest_tests::msharefs::v3::unmap(&a, GRANULE, GRANULE)
            .and_then(|()| give(&b, 0, GRANULE))
            .map_err(|e| e.to_string()),
    );
    let remount = |options: &std::ffi::CStr| remount_msharefs(LIMITED, options);
    t.check(
        "a remount cannot set a limit below what is in use",
        expect_errno(remount(c"size=2M"), libc::EINVAL)
            .and_then(|()| expect_errno(remount(c"nr_regions=1"), libc::EINVAL)),
    );
    t.check(
        "a remount raises them",
        remount(c"size=8M,nr_regions=3")
            .and_then(|()| make("limit-c"))
            .and_then(|c| c.set_len(GRANULE).and_then(|()| give(&c, 0, GRANULE)))
            .map_err(|e| e.to_string()),
    );
    drop((a, b));
    let removed = ["limit-a", "limit-b", "limit-c"].iter().try_for_each(|n| fs::remove_file(format!("{LIMITED}/{n}")));
    let unmounted = umount_msharefs(LIMITED);
    t.check("the limited mount goes", removed.and(unmounted).map_err(|e| e.to_string()));
}

/// Remounts the msharefs mount at `target` with `options`.
fn remount_msharefs(target: &str, options: &std::ffi::CStr) -> io::Result<()> {
    mount_msharefs_with(target, libc::MS_REMOUNT, options)
}

/// read/write/lseek/fsync on a region file: they and the mappings show the same bytes both
/// ways; a hole reads as zeros and takes no write (EIO); a write never grows the region.
fn file_io_checks(t: &mut Suite) {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::FileExt;
    const SIZE: u64 = 4 * GRANULE;
    let setup = create("api-io", 0o600).and_then(|f| {
        set_size(&f, SIZE)?;
        create_mapping(&f, &MshareCreate::anonymous(0, 2 * GRANULE))?;
        Ok(f)
    });
    let file = match setup {
        Ok(f) => f,
        Err(e) => return t.check("a region for file I/O (2 of 4 granules with memory)", Err(e.to_string())),
    };
    t.check(
        "pwrite into the region",
        file.write_at(b"through the file", 100).map_err(|e| e.to_string()).and_then(|n| eq(n, 16)),
    );
    let window = match map(&file, SIZE as usize, libc::MAP_SHARED, 0) {
        Ok(p) => p,
        Err(e) => return t.check("map the region", Err(e.to_string())),
    };
    // SAFETY: inside the live window of SIZE bytes.
    let seen = unsafe { std::slice::from_raw_parts(window.add(100), 16) }.to_vec();
    t.check("the mapping shows what pwrite wrote", eq(seen.as_slice(), b"through the file".as_slice()));
    // SAFETY: as above.
    unsafe { window.add(GRANULE as usize - 4).copy_from_nonoverlapping(b"across granules".as_ptr(), 15) };
    let mut back = [0u8; 15];
    t.check(
        "pread shows what the mapping wrote, across a granule boundary",
        file.read_exact_at(&mut back, GRANULE - 4)
            .map_err(|e| e.to_string())
            .and_then(|()| eq(&back, b"across granules")),
    );
    t.check(
        "lseek(SEEK_END) is the region's size",
        (&file).seek(SeekFrom::End(0)).map_err(|e| e.to_string()).and_then(|end| eq(end, SIZE)),
    );
    let mut tail = [0xffu8; 10];
    t.check(
        "a read at the end is short, and a hole reads as zeros",
        file.read_at(&mut tail, SIZE - 3)
            .map_err(|e| e.to_string())
            .and_then(|n| eq((n, &tail[..3]), (3, &[0u8; 3][..]))),
    );
    t.check(
        "a read past the end is 0 (EOF)",
        file.read_at(&mut tail, SIZE).map_err(|e| e.to_string()).and_then(|n| eq(n, 0)),
    );
    t.check(
        "a write into a hole is EIO (writes give no memory)",
        expect_errno(file.write_at(b"x", 3 * GRANULE), libc::EIO),
    );
    t.check(
        "a write at the end is ENOSPC (writes never grow a region)",
        expect_errno(file.write_at(b"x", SIZE), libc::ENOSPC),
    );
    t.check(
        "fsync and fdatasync succeed (the memory is the truth)",
        file.sync_all().and_then(|()| file.sync_data()).map_err(|e| e.to_string()),
    );
    let whole = File::open(format!("{MOUNT}/api-io")).and_then(|mut f| {
        let mut all = Vec::new();
        f.read_to_end(&mut all)?;
        Ok(all)
    });
    t.check(
        "read() of the whole region: its size, the bytes written, zeros in the holes",
        whole.map_err(|e| e.to_string()).and_then(|all| {
            eq(
                (all.len() as u64, &all[100..116], all[3 * GRANULE as usize..].iter().all(|b| *b == 0)),
                (SIZE, b"through the file".as_slice(), true),
            )
        }),
    );
    t.check(
        "write through a read-only open is EBADF",
        expect_errno(File::open(format!("{MOUNT}/api-io")).and_then(|mut f| f.write(b"x")), libc::EBADF),
    );
    let refused = set_prot(&file, libc::PROT_READ).and_then(|()| {
        let result = file.write_at(b"x", 0);
        set_prot(&file, libc::PROT_READ | libc::PROT_WRITE)?;
        result
    });
    t.check("a write while the region is read-only (SET_PROT) is EACCES", expect_errno(refused, libc::EACCES));
    let _ = unmap(window, SIZE as usize);
    let _ = fs::remove_file(format!("{MOUNT}/api-io"));
}

fn main() -> ExitCode {
    // `mshare-api [B|C]`: the mode the module must be in (B by default); `mshare-api
    // unplug`: the device-unbind checks alone.
    let expected_mode = std::env::args().nth(1).unwrap_or_else(|| "B".to_owned());
    let mut t = Suite::new("mshare-api");
    if expected_mode == "unplug" {
        unplug_checks(&mut t);
        return t.finish();
    }
    t.check("mshare_info gives the granule", {
        fs::read_to_string(format!("{MOUNT}/mshare_info"))
            .map_err(|e| e.to_string())
            .and_then(|s| eq(s.trim().parse::<u64>().map_err(|e| e.to_string())?, GRANULE))
    });
    let region = create("api-a", 0o600);
    t.check("create a region with O_CREAT|O_EXCL", region.as_ref().map(|_| ()).map_err(|e| e.to_string()));
    let Ok(region) = region else {
        println!("mshare-api: cannot go on without a region");
        return ExitCode::FAILURE;
    };
    t.check("a second O_EXCL create is EEXIST", expect_errno(create("api-a", 0o600), libc::EEXIST));
    t.check(
        "a new region has size 0",
        get_size(&region).map_err(|e| e.to_string()).and_then(|i| eq(i, MshareInfo::default())),
    );
    t.check("an unaligned size is EINVAL", expect_errno(set_size(&region, GRANULE + 4096), libc::EINVAL));
    t.check("size 0 is EINVAL", expect_errno(set_size(&region, 0), libc::EINVAL));
    t.check("a size over 1 TiB is EFBIG", expect_errno(set_size(&region, 2 << 40), libc::EFBIG));
    t.check("SET_SIZE of 2 granules", set_size(&region, 2 * GRANULE).map_err(|e| e.to_string()));
    t.check(
        "GET_SIZE reads it back",
        get_size(&region).map_err(|e| e.to_string()).and_then(|i| eq(i.size, 2 * GRANULE)),
    );
    t.check("fstat shows it", region.metadata().map_err(|e| e.to_string()).and_then(|m| eq(m.size(), 2 * GRANULE)));
    t.check("the size is set once: another size is EINVAL", expect_errno(set_size(&region, 4 * GRANULE), libc::EINVAL));
    t.check("the same size again is fine", set_size(&region, 2 * GRANULE).map_err(|e| e.to_string()));
    t.check("an unknown ioctl is ENOTTY", expect_errno(ioctl(&region, 0x7800_ff00, 0), libc::ENOTTY));
    t.check(
        "a bad pointer is EFAULT",
        expect_errno(ioctl(&region, guest_tests::msharefs::MSHAREFS_GET_SIZE, 16), libc::EFAULT),
    );
    t.check(
        "the mode was kept",
        region.metadata().map_err(|e| e.to_string()).and_then(|m| eq(m.mode() & 0o7777, 0o600)),
    );
    t.check(
        "another user cannot open a 0600 region",
        open_as_other_user(&format!("{MOUNT}/api-a")).and_then(|e| eq(e, libc::EACCES)),
    );

    match create("api-b", 0o644) {
        Ok(b) => {
            t.check("ftruncate sets the size", b.set_len(3 * GRANULE).map_err(|e| e.to_string()));
            t.check(
                "GET_SIZE after ftruncate",
                get_size(&b).map_err(|e| e.to_string()).and_then(|i| eq(i.size, 3 * GRANULE)),
            );
            t.check(
                "an unaligned ftruncate is EINVAL",
                expect_errno(File::create(format!("{MOUNT}/api-c")).and_then(|c| c.set_len(4096)), libc::EINVAL),
            );
        }
        Err(e) => t.check("create a second region", Err(e.to_string())),
    }
    t.check(
        "open(O_TRUNC) keeps a region's size",
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(format!("{MOUNT}/api-a"))
            .and_then(|_| get_size(&region))
            .map_err(|e| e.to_string())
            .and_then(|i| eq(i.size, 2 * GRANULE)),
    );
    t.check(
        "SET_SIZE through a read-only open is EBADF",
        expect_errno(File::open(format!("{MOUNT}/api-a")).and_then(|f| set_size(&f, 2 * GRANULE)), libc::EBADF),
    );
    t.check("unlink removes a region", fs::remove_file(format!("{MOUNT}/api-a")).map_err(|e| e.to_string()));
    t.check(
        "the open file keeps working after unlink",
        get_size(&region).map_err(|e| e.to_string()).and_then(|i| eq(i.size, 2 * GRANULE)),
    );
    t.check("an unlinked region cannot be opened", expect_errno(File::open(format!("{MOUNT}/api-a")), libc::ENOENT));
    let system = SystemStats::read();
    t.check(
        "mshare_stats gives the mode this run expects",
        system.as_ref().map_err(|e| e.to_string()).and_then(|s| eq(s.mode.as_str(), expected_mode.as_str())),
    );
    let shares_tables = system.map(|s| s.shares_tables()).unwrap_or(false);
    mapping_checks(&mut t, shares_tables);
    gib_window_checks(&mut t, shares_tables);
    file_io_checks(&mut t);
    device_checks(&mut t);
    limits_checks(&mut t);
    madvise_checks(&mut t);
    if shares_tables {
        shared_table_checks(&mut t);
    } else {
        own_mapping_protection_checks(&mut t);
    }
    for name in ["api-b", "api-c"] {
        let _ = fs::remove_file(format!("{MOUNT}/{name}"));
    }
    t.finish()
}
