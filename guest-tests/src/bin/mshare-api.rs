//! mshare-api: the msharefs API suite, run inside the guest with mshare.ko loaded and
//! msharefs mounted. Prints one `ok`/`not ok` line per check and exits 1 if any failed.

use guest_tests::msharefs::{get_size, ioctl, set_size, MshareInfo, MOUNT};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::process::ExitCode;

const GRANULE: u64 = 2 << 20;

struct Suite {
    count: usize,
    failed: usize,
}

impl Suite {
    fn check(&mut self, name: &str, result: Result<(), String>) {
        self.count += 1;
        match result {
            Ok(()) => println!("mshare-api: ok {} - {name}", self.count),
            Err(why) => {
                self.failed += 1;
                println!("mshare-api: not ok {} - {name}: {why}", self.count);
            }
        }
    }
}

fn expect_errno<T: std::fmt::Debug>(result: io::Result<T>, errno: i32) -> Result<(), String> {
    match result {
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        other => Err(format!("expected errno {errno}, got {other:?}")),
    }
}

fn create(name: &str, mode: u32) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create_new(true).mode(mode).open(format!("{MOUNT}/{name}"))
}

fn eq<T: PartialEq + std::fmt::Debug>(got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("got {got:?}, want {want:?}"))
    }
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

fn main() -> ExitCode {
    let mut t = Suite { count: 0, failed: 0 };
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
    t.check("unlink removes a region", fs::remove_file(format!("{MOUNT}/api-a")).map_err(|e| e.to_string()));
    t.check(
        "the open file keeps working after unlink",
        get_size(&region).map_err(|e| e.to_string()).and_then(|i| eq(i.size, 2 * GRANULE)),
    );
    t.check("an unlinked region cannot be opened", expect_errno(File::open(format!("{MOUNT}/api-a")), libc::ENOENT));
    for name in ["api-b", "api-c"] {
        let _ = fs::remove_file(format!("{MOUNT}/{name}"));
    }
    println!("mshare-api: {} checks, {} failed", t.count, t.failed);
    if t.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
