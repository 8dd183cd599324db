//! One program written against the mshare calls ([`Calls`]), run through the system calls
//! (`mshare-calls syscall`) or `/dev/mshare` (`mshare-calls device`): a region made, sized
//! with ftruncate, given memory and attached by the creator and 4 more processes; then
//! made read-only for all of them and writable again, advised (`MADV_DONTNEED`), let go by
//! its creator while the others keep using it, and detached. Each step prints one line of
//! what it saw; the lines are the same whichever way the calls went (the host test
//! compares them), and the program fails on the first one that is not what the calls
//! promise. `mshare-calls no-module` checks that the system calls are ENOSYS.

use guest_tests::process::{self, access_name, pipe, spawn_child, wait_child, Access};
use guest_tests::{errno_name, faults_of};
use mshare_uapi::abi::SYS_MSHARE_PROTECT;
use mshare_uapi::device::Device;
use mshare_uapi::syscalls::Syscalls;
use mshare_uapi::{Calls, Window};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;

const GRANULE: u64 = 2 << 20;
const SIZE: u64 = 4 * GRANULE;
const SHARERS: usize = 4;

/// Where sharer `k` writes its mark: page `k + 1` of the second granule.
fn slot(k: usize) -> usize {
    (GRANULE as usize) + (k + 1) * 4096
}

/// The creator's byte at the start of granule `g`.
fn pattern(g: usize) -> u8 {
    0xa0 + g as u8
}

fn pattern_intact(window: &Window) -> bool {
    (0..(SIZE / GRANULE) as usize).all(|g| {
        let mut byte = [0u8];
        window.read(g * GRANULE as usize, &mut byte);
        byte[0] == pattern(g)
    })
}

/// What an access at `ptr` in a forked child does: "ok", or the signal that stopped it.
fn access_in_child(ptr: *mut u8, access: Access) -> &'static str {
    access_name(process::access_in_child(ptr, access))
}

/// A sharer: attaches the region, then answers the creator's commands, one line each.
fn sharer(calls: &dyn Calls, region: File, k: usize, commands: File, mut replies: File) -> i32 {
    let mut window = match calls.attach(&region, 0, SIZE as usize, false) {
        Ok(window) => Some(window),
        Err(e) => {
            let _ = writeln!(replies, "attach: {e}");
            return 1;
        }
    };
    let _ = writeln!(replies, "attached");
    for command in BufReader::new(commands).lines() {
        let Ok(command) = command else { return 1 };
        let Some(w) = window.as_ref() else { return 1 };
        let reply = match command.as_str() {
            "check-and-mark" => {
                let intact = pattern_intact(w);
                w.write(slot(k), &[k as u8 + 1]);
                if intact { "intact" } else { "changed" }.to_owned()
            }
            "write" => access_in_child(w.as_ptr().wrapping_add(slot(k)), Access::Write).to_owned(),
            "read" => if pattern_intact(w) { "intact" } else { "changed" }.to_owned(),
            "refault" => {
                let mut intact = false;
                let faults = faults_of(|| intact = pattern_intact(w));
                format!("{} after {faults} faults", if intact { "intact" } else { "changed" })
            }
            "detach" => {
                let (ptr, len) = window.take().map(Window::into_raw).unwrap_or((std::ptr::null_mut(), 0));
                // SAFETY: the window this process attached, handed back whole.
                let detached = calls.detach(unsafe { Window::from_raw(ptr, len) });
                match detached {
                    Ok(()) => format!("detached, then a read: {}", access_in_child(ptr, Access::Read)),
                    Err(e) => format!("detach: {e}"),
                }
            }
            _ => return 1,
        };
        if writeln!(replies, "{reply}").is_err() {
            return 1;
        }
        if window.is_none() {
            return 0;
        }
    }
    1
}

/// The creator's side of the sharers: their pids and pipes.
struct Sharers {
    pids: Vec<libc::pid_t>,
    commands: Vec<File>,
    replies: Vec<BufReader<File>>,
}

impl Sharers {
    fn start(calls: &dyn Calls, region: &File) -> io::Result<Self> {
        let mut sharers = Sharers { pids: Vec::new(), commands: Vec::new(), replies: Vec::new() };
        for k in 0..SHARERS {
            let (command_rx, command_tx) = pipe()?;
            let (reply_rx, reply_tx) = pipe()?;
            let region = region.try_clone()?;
            let pid = spawn_child(move || sharer(calls, region, k, command_rx, reply_tx))
                .ok_or_else(|| io::Error::other("fork failed"))?;
            sharers.pids.push(pid);
            sharers.commands.push(command_tx);
            sharers.replies.push(BufReader::new(reply_rx));
        }
        let attached = sharers.collect()?;
        if attached.iter().any(|r| r != "attached") {
            return Err(io::Error::other(format!("a sharer could not attach: {attached:?}")));
        }
        Ok(sharers)
    }

    fn collect(&mut self) -> io::Result<Vec<String>> {
        self.replies
            .iter_mut()
            .map(|r| {
                let mut line = String::new();
                r.read_line(&mut line)?;
                Ok(line.trim_end().to_owned())
            })
            .collect()
    }

    /// Sends `command` to every sharer; their replies, in order.
    fn ask(&mut self, command: &str) -> io::Result<Vec<String>> {
        for c in &mut self.commands {
            writeln!(c, "{command}")?;
        }
        self.collect()
    }

    fn wait(self) -> Vec<i32> {
        drop(self.commands);
        self.pids.into_iter().map(wait_child).collect()
    }
}

/// The transcript, and whether every step was what the calls promise.
struct Transcript {
    ok: bool,
}

impl Transcript {
    /// Prints `what: seen`, failing the run unless `seen` is `want`.
    fn step(&mut self, what: &str, seen: impl AsRef<str>, want: &str) {
        let seen = seen.as_ref();
        println!("mshare-calls: {what}: {seen}");
        if seen != want {
            println!("mshare-calls: FAILED: {what}: wanted {want}");
            self.ok = false;
        }
    }

    /// The same for every sharer's reply (one line if all agree).
    fn each(&mut self, what: &str, replies: io::Result<Vec<String>>, want: &str) {
        let seen = match replies {
            Ok(r) if r.iter().all(|x| *x == r[0]) => format!("{} x{}", r[0], r.len()),
            Ok(r) => r.join(" | "),
            Err(e) => format!("lost the sharers: {e}"),
        };
        self.step(what, seen, &format!("{want} x{SHARERS}"));
    }
}

fn outcome<T>(result: io::Result<T>) -> String {
    result.map_or_else(|e| errno_name(&e), |_| "ok".to_owned())
}

/// `mshare_protect(fd, 0, one granule, PROT_READ)`: a region has one protection, so the
/// system call, the only way to name a range, refuses part of it. Made whichever way the
/// rest goes (where the kernel has the system calls), so that both transcripts show it.
fn protect_part(region: &File) -> io::Result<()> {
    // SAFETY: integers only; the kernel checks the descriptor and the range.
    let ret = unsafe {
        libc::syscall(SYS_MSHARE_PROTECT, region.as_raw_fd() as libc::c_long, 0u64, GRANULE, libc::PROT_READ as u64)
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What a careless or hostile caller gets, the same whichever way the calls go: a file
/// that is no region, memory for granules that have some, ranges not whole granules or
/// past the end, a window larger than the region. Each is refused with EINVAL, and
/// nothing changes (the sharers' checks after this still find the data).
fn hostile_steps(calls: &dyn Calls, region: &File, t: &mut Transcript) -> io::Result<()> {
    let not_a_region = File::open("/dev/null")?;
    t.step("map of a file that is no region", outcome(calls.map(&not_a_region, 0, GRANULE)), "EINVAL");
    t.step(
        "attach of a file that is no region",
        outcome(calls.attach(&not_a_region, 0, GRANULE as usize, false)),
        "EINVAL",
    );
    t.step(
        "advise of a file that is no region",
        outcome(calls.advise(&not_a_region, 0, GRANULE, libc::MADV_DONTNEED)),
        "EINVAL",
    );
    t.step("map of granules that have memory", outcome(calls.map(region, 0, GRANULE)), "EINVAL");
    t.step("unmap of half a granule", outcome(calls.unmap(region, 0, GRANULE / 2)), "EINVAL");
    t.step(
        "advise at an offset inside a granule",
        outcome(calls.advise(region, 4096, GRANULE, libc::MADV_DONTNEED)),
        "EINVAL",
    );
    t.step(
        "attach of more than the region",
        outcome(calls.attach(region, 0, (SIZE + GRANULE) as usize, false)),
        "EINVAL",
    );
    Ok(())
}

fn run(calls: &dyn Calls, t: &mut Transcript) -> io::Result<()> {
    let region = calls.create(true)?;
    t.step("create", "ok", "ok");
    t.step("ftruncate to 8 MiB", outcome(region.set_len(SIZE)), "ok");
    t.step("map 8 MiB of anonymous memory", outcome(calls.map(&region, 0, SIZE)), "ok");
    let window = calls.attach(&region, 0, SIZE as usize, false)?;
    for g in 0..(SIZE / GRANULE) as usize {
        window.write(g * GRANULE as usize, &[pattern(g)]);
    }
    let mut sharers = Sharers::start(calls, &region)?;
    t.step("attach in the creator and 4 more processes", "ok", "ok");
    t.each("each sharer reads the creator's data, and marks its slot", sharers.ask("check-and-mark"), "intact");
    let marks: Vec<u8> = (0..SHARERS)
        .map(|k| {
            let mut b = [0u8];
            window.read(slot(k), &mut b);
            b[0]
        })
        .collect();
    let all_marked = marks.iter().enumerate().all(|(k, &m)| m == k as u8 + 1);
    t.step("the creator sees every mark", if all_marked { "yes" } else { "no" }, "yes");

    t.step("protect(PROT_READ) for all", outcome(calls.protect(&region, libc::PROT_READ)), "ok");
    t.each("a write in each sharer", sharers.ask("write"), "SIGSEGV");
    t.step("a write in the creator", access_in_child(window.as_ptr(), Access::Write), "SIGSEGV");
    t.each("a read in each sharer", sharers.ask("read"), "intact");
    t.step("a new writable attach while read-only", outcome(calls.attach(&region, 0, SIZE as usize, false)), "EACCES");
    match Syscalls::probe() {
        Ok(_) => t.step("mshare_protect() of part of the region", outcome(protect_part(&region)), "EINVAL"),
        Err(_) => t.step("mshare_protect() of part of the region", "no system calls here", "no system calls here"),
    }
    t.step(
        "protect(PROT_READ | PROT_WRITE) for all",
        outcome(calls.protect(&region, libc::PROT_READ | libc::PROT_WRITE)),
        "ok",
    );
    t.each("a write in each sharer", sharers.ask("write"), "ok");

    t.each("a read in each sharer, which maps the window again", sharers.ask("read"), "intact");
    t.step("advise(MADV_DONTNEED)", outcome(calls.advise(&region, 0, SIZE, libc::MADV_DONTNEED)), "ok");
    let refault = sharers.ask("refault");
    let want = match refault.as_ref().ok().and_then(|r| r.first()) {
        // In mode B one fault links every table of the window; in mode C each granule.
        Some(r) if r == "intact after 1 faults" => "intact after 1 faults",
        _ => "intact after 4 faults",
    };
    t.each("each sharer's data after it", refault, want);
    t.step("advise(MADV_WILLNEED)", outcome(calls.advise(&region, 0, SIZE, libc::MADV_WILLNEED)), "ok");
    t.step("advise(MADV_PAGEOUT)", outcome(calls.advise(&region, 0, SIZE, libc::MADV_PAGEOUT)), "EINVAL");
    t.step(
        "advise past the region's end",
        outcome(calls.advise(&region, 0, SIZE + GRANULE, libc::MADV_DONTNEED)),
        "EINVAL",
    );

    hostile_steps(calls, &region, t)?;

    t.step("the creator detaches", outcome(calls.detach(window)), "ok");
    drop(region);
    t.each("after the creator closed the region, each sharer reads", sharers.ask("read"), "intact");
    t.each("and writes", sharers.ask("write"), "ok");
    t.each("each sharer detaches", sharers.ask("detach"), "detached, then a read: SIGSEGV");
    let ends = sharers.wait();
    t.step("the sharers exit", if ends.iter().all(|&s| s == 0) { "0".to_owned() } else { format!("{ends:?}") }, "0");
    Ok(())
}

fn main() -> ExitCode {
    let via = std::env::args().nth(1).unwrap_or_default();
    let calls: Box<dyn Calls> = match via.as_str() {
        "syscall" => match Syscalls::probe() {
            Ok(s) => Box::new(s),
            Err(e) => {
                eprintln!("mshare-calls: this kernel does not answer the mshare system calls: {e}");
                return ExitCode::FAILURE;
            }
        },
        "device" => match Device::open() {
            Ok(d) => Box::new(d),
            Err(e) => {
                eprintln!("mshare-calls: cannot open /dev/mshare: {e}");
                return ExitCode::FAILURE;
            }
        },
        "no-module" => {
            let seen = outcome(Syscalls::probe());
            println!("mshare-calls: the system calls without the module: {seen}");
            return if seen == "ENOSYS" { ExitCode::SUCCESS } else { ExitCode::FAILURE };
        }
        _ => {
            eprintln!("usage: mshare-calls syscall|device|no-module");
            return ExitCode::from(2);
        }
    };
    let mut t = Transcript { ok: true };
    if let Err(e) = run(calls.as_ref(), &mut t) {
        println!("mshare-calls: FAILED: {e}");
        t.ok = false;
    }
    println!("mshare-calls: {}", if t.ok { "ok" } else { "FAILED" });
    if t.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
