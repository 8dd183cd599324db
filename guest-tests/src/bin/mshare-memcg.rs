//! mshare-memcg: region memory is charged to the memory cgroup of the task that gives it
//! to a region, so a user under `memory.max` cannot exceed it through regions.
//!
//! ```text
//! mshare-memcg
//! ```
//! Mounts cgroup2 at /sys/fs/cgroup if need be, makes the cgroup `mshare-memcg` with
//! `memory.max` 64 MiB and runs a child in it as an unprivileged user (65534), once per
//! way to make a region:
//! - msharefs: a 256 MiB region; `CREATE_MAPPING` of its first 32 MiB succeeds and the
//!   cgroup's `memory.current` grows by at least that; of the other 224 MiB it fails with
//!   ENOMEM, and the cgroup stays under its limit, the region at 32 MiB; unlinking the
//!   region gives the 32 MiB back.
//! - /dev/mshare: the same with `MSHARE_CREATE`, `ftruncate` and `MSHARE_MAP`; closing the
//!   region gives it back.
//!
//! Prints `MEMCG way=.. ...` with the figures per way and `MEMCG-FAIL ...` for each check
//! that did not hold; exit 0 if all held.

use guest_tests::msharefs::{create_mapping, get_stats, set_size, MshareCreate, MOUNT};
use guest_tests::process::{spawn_child, wait_child};
use mshare_uapi::device::Device;
use mshare_uapi::Calls;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const LIMIT: u64 = 64 * MIB;
const REGION: u64 = 256 * MIB;
const FIRST: u64 = 32 * MIB;
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP: &str = "/sys/fs/cgroup/mshare-memcg";
const NOBODY: libc::uid_t = 65534;

/// The cgroup's `memory.current`, in bytes.
fn memory_current() -> io::Result<u64> {
    fs::read_to_string(format!("{CGROUP}/memory.current"))?
        .trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("memory.current: {e}")))
}

/// cgroup2 mounted, the memory controller on for children, the limited cgroup made.
fn set_up_cgroup() -> Result<(), String> {
    if !std::path::Path::new(&format!("{CGROUP_ROOT}/cgroup.controllers")).exists() {
        // SAFETY: valid C strings; a fresh cgroup2 mount on the sysfs mount point.
        let mounted = unsafe {
            libc::mount(c"cgroup2".as_ptr(), c"/sys/fs/cgroup".as_ptr(), c"cgroup2".as_ptr(), 0, std::ptr::null())
        };
        if mounted != 0 {
            return Err(format!("mounting cgroup2 at {CGROUP_ROOT}: {}", io::Error::last_os_error()));
        }
    }
    let controllers = fs::read_to_string(format!("{CGROUP_ROOT}/cgroup.controllers")).unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return Err(format!("no memory controller in {CGROUP_ROOT} (controllers: {controllers:?}; CONFIG_MEMCG?)"));
    }
    fs::write(format!("{CGROUP_ROOT}/cgroup.subtree_control"), "+memory")
        .map_err(|e| format!("enabling the memory controller: {e}"))?;
    match fs::create_dir(CGROUP) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("mkdir {CGROUP}: {e}")),
    }
    fs::write(format!("{CGROUP}/memory.max"), LIMIT.to_string()).map_err(|e| format!("memory.max: {e}"))?;
    // No swap here; say so, so that nothing could go there.
    let _ = fs::write(format!("{CGROUP}/memory.swap.max"), "0");
    Ok(())
}

/// In the child: joins the cgroup and becomes an unprivileged user.
fn enter_cgroup_as_nobody() -> io::Result<()> {
    fs::write(format!("{CGROUP}/cgroup.procs"), "0")?;
    // SAFETY: plain credential calls of this (single-threaded) child.
    if unsafe { libc::setgid(NOBODY) } != 0 || unsafe { libc::setuid(NOBODY) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What one way of making a region showed.
struct Figures {
    way: &'static str,
    before: u64,
    after_first: u64,
    first: io::Result<()>,
    rest: io::Result<()>,
    after_rest: u64,
    backed: u64,
}

impl Figures {
    /// Checks, as `MEMCG-FAIL` lines; how many failed.
    fn report(&self) -> usize {
        let Figures { way, before, after_first, first, rest, after_rest, backed } = self;
        println!(
            "MEMCG way={way} limit={LIMIT} before={before} after_first={after_first} first={} rest={} \
             after_rest={after_rest} backed={backed}",
            outcome(first),
            outcome(rest)
        );
        let checks = [
            (first.is_ok(), format!("the first {FIRST} bytes were refused: {first:?}")),
            (
                after_first.saturating_sub(*before) >= FIRST,
                format!(
                    "memory.current grew by {} bytes for {FIRST} bytes of region",
                    after_first.saturating_sub(*before)
                ),
            ),
            (
                matches!(rest, Err(e) if e.raw_os_error() == Some(libc::ENOMEM)),
                format!("{} more bytes over memory.max gave {rest:?}, not ENOMEM", REGION - FIRST),
            ),
            (*after_rest <= LIMIT, format!("memory.current is {after_rest}, over memory.max {LIMIT}")),
            (*backed == FIRST, format!("the region holds {backed} bytes, not {FIRST}")),
        ];
        checks.iter().filter(|(ok, _)| !ok).map(|(_, why)| println!("MEMCG-FAIL way={way}: {why}")).count()
    }
}

fn outcome(r: &io::Result<()>) -> String {
    match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("errno{}", e.raw_os_error().unwrap_or(0)),
    }
}

/// A named msharefs region, filled in two steps; unlinked at the end.
fn through_msharefs() -> io::Result<Figures> {
    let path = format!("{MOUNT}/memcg-user");
    let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
    set_size(&file, REGION)?;
    let before = memory_current()?;
    let first = create_mapping(&file, &MshareCreate::anonymous(0, FIRST));
    let after_first = memory_current()?;
    let rest = create_mapping(&file, &MshareCreate::anonymous(FIRST, REGION - FIRST));
    let after_rest = memory_current()?;
    let backed = get_stats(&file)?.backed;
    drop(file);
    fs::remove_file(&path)?;
    Ok(Figures { way: "msharefs", before, after_first, first, rest, after_rest, backed })
}

/// An unnamed region through /dev/mshare, filled in two steps; closed at the end.
fn through_dev_mshare(regions: &mut Vec<File>) -> io::Result<Figures> {
    let dev = Device::open()?;
    let region = dev.create(true)?;
    region.set_len(REGION)?;
    let before = memory_current()?;
    let first = dev.map(&region, 0, FIRST);
    let after_first = memory_current()?;
    let rest = dev.map(&region, FIRST, REGION - FIRST);
    let after_rest = memory_current()?;
    let backed = get_stats(&region)?.backed;
    regions.push(region);
    Ok(Figures { way: "dev-mshare", before, after_first, first, rest, after_rest, backed })
}

/// memory.current once the regions are gone (their memory goes after an RCU grace period).
fn settled_current(at_most: u64) -> io::Result<u64> {
    let mut current = memory_current()?;
    for _ in 0..100 {
        if current <= at_most {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        current = memory_current()?;
    }
    Ok(current)
}

fn child() -> i32 {
    if let Err(e) = enter_cgroup_as_nobody() {
        println!("MEMCG-FAIL joining {CGROUP} as user {NOBODY}: {e}");
        return 1;
    }
    let start = memory_current().unwrap_or(0);
    let mut failed = 0;
    let mut regions = Vec::new();
    for (way, figures) in [("msharefs", through_msharefs()), ("dev-mshare", through_dev_mshare(&mut regions))] {
        match figures {
            Ok(f) => failed += f.report(),
            Err(e) => {
                println!("MEMCG-FAIL way={way}: {e}");
                failed += 1;
            }
        }
    }
    drop(regions);
    // Everything given back: at most a few pages of the processes' own above the start.
    let slack = 4 * MIB;
    match settled_current(start + slack) {
        Ok(end) if end <= start + slack => println!("MEMCG released start={start} end={end}"),
        Ok(end) => {
            println!("MEMCG-FAIL the regions' memory was not given back: memory.current {start} -> {end}");
            failed += 1;
        }
        Err(e) => {
            println!("MEMCG-FAIL memory.current: {e}");
            failed += 1;
        }
    }
    i32::from(failed > 0)
}

fn main() -> ExitCode {
    if let Err(why) = set_up_cgroup() {
        println!("MEMCG-FAIL {why}");
        return ExitCode::FAILURE;
    }
    let status = spawn_child(child).map_or(255, wait_child);
    // The cgroup is empty once its child has been reaped: nothing is left behind.
    if let Err(e) = fs::remove_dir(CGROUP) {
        println!("MEMCG-FAIL removing {CGROUP}: {e}");
        return ExitCode::FAILURE;
    }
    if status == 0 {
        ExitCode::SUCCESS
    } else {
        println!("MEMCG-FAIL the child in {CGROUP} ended with status {status}");
        ExitCode::FAILURE
    }
}
