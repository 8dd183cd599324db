//! mshare: manage msharefs regions from the shell, in the spirit of `ipcs`/`ipcrm`.
//!
//! ```text
//! mshare list                      every region: name, size, mode, owner, mapped windows,
//!                                  shared PTE tables, table links (ever, and now: a
//!                                  process linking every table of the region adds
//!                                  one per table), faults; then per
//!                                  owner, the regions and the memory they hold
//! mshare create NAME SIZE [MODE]   a region of SIZE (K/M/G suffixes; whole granules), memory
//!                                  for all of it, mode octal (default 600)
//! mshare remove NAME...            unlink regions (each goes when its last user does)
//! mshare info                      mount point, its API (v1 or v3), granule, mode and
//!                                  system-wide statistics
//! mshare read NAME OFFSET LEN      print LEN bytes of a region at OFFSET (as text)
//! mshare write NAME OFFSET TEXT    write TEXT into a region at OFFSET
//! mshare add NAME OFFSET TIMES     add 1 to the 64-bit word at OFFSET, TIMES times, each with
//!                                  one atomic instruction (other processes and VMs may add
//!                                  at the same time: futexes do not cross kernels, atomics
//!                                  on shared memory do)
//! mshare word NAME OFFSET          print the 64-bit word at OFFSET (decimal)
//! mshare run [--mode B|C] [--threshold SIZE] [--name NAME] [--fallback] [--verbose]
//!            -- PROGRAM [ARG...]
//!                                  run PROGRAM (and every process it starts) with its
//!                                  shared anonymous mappings and System V segments of at
//!                                  least SIZE (default 2M) on msharefs regions, through
//!                                  the preload library (docs/preload.md); --mode: refuse
//!                                  unless the module is in that mode; --fallback: map the
//!                                  ordinary way what cannot move
//! ```
//! NAME is a file under /sys/fs/mshare, e.g. `db` or `ivshmem/<name>` (regions the VMM
//! gives the guest). `list` shows both.
//! ```text
//! ```
//! Exit status: 0 done, 1 the operation failed (the error says why), 2 bad usage.

use guest_tests::msharefs::{create_mapping, get_stats, mount_api, set_size, MshareCreate, MOUNT};

/// Files of msharefs that are not regions.
const RESERVED: [&str; 2] = ["mshare_info", "mshare_stats"];
use guest_tests::msharefs::SystemStats;
use guest_tests::parse_size;
use mshare_uapi::preload::{Mode, Settings, LIBRARY_PATH};
use std::fs::{self, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

const USAGE: &str = "usage: mshare list | create NAME SIZE [MODE] | remove NAME... | info | read NAME OFFSET LEN | write NAME OFFSET TEXT | add NAME OFFSET TIMES | word NAME OFFSET | run [--mode B|C] [--threshold SIZE] [--name NAME] [--fallback] [--verbose] -- PROGRAM [ARG...]";

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}G", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}M", b >> 20),
        b => format!("{}K", b >> 10),
    }
}

fn fail(msg: String) -> ExitCode {
    eprintln!("mshare: {msg}");
    ExitCode::FAILURE
}

fn list() -> ExitCode {
    let entries = match fs::read_dir(MOUNT) {
        Ok(e) => e,
        Err(e) => return fail(format!("{MOUNT}: {e} (is mshare.ko loaded and msharefs mounted?)")),
    };
    let devices = fs::read_dir(format!("{MOUNT}/ivshmem")).into_iter().flatten();
    let mut rows: Vec<(String, String)> = Vec::new();
    // Per owner: regions, and bytes of memory the module holds for them (a file's pages
    // are the file's).
    let mut owners: std::collections::BTreeMap<u32, (u64, u64)> = std::collections::BTreeMap::new();
    for entry in entries.flatten().chain(devices.flatten()) {
        let mut name = entry.file_name().to_string_lossy().into_owned();
        if RESERVED.contains(&name.as_str()) || entry.path().is_dir() {
            continue;
        }
        if entry.path().parent().is_some_and(|p| p.ends_with("ivshmem")) {
            name = format!("ivshmem/{name}");
        }
        let Ok(meta) = entry.metadata() else { continue };
        let stats = OpenOptions::new().read(true).open(entry.path()).ok().and_then(|f| get_stats(&f).ok());
        let owner = owners.entry(meta.uid()).or_default();
        owner.0 += 1;
        owner.1 += stats.as_ref().map_or(0, |s| s.backed.saturating_sub(s.file_backed));
        // PMD: shared PMD tables (windows of whole GiBs); 2M: memory they map by 2 MiB leaves.
        let counts = stats.map_or_else(
            || vec!["-".to_owned(); 8],
            |s| {
                let bytes = |n: u64| if n == 0 { "-".to_owned() } else { human(n) };
                vec![
                    s.windows.to_string(),
                    s.tables.to_string(),
                    s.pmd_tables.to_string(),
                    bytes(s.huge_leaf_bytes),
                    s.links.to_string(),
                    s.links_now.to_string(),
                    s.faults.to_string(),
                    bytes(s.file_backed),
                ]
            },
        );
        let row = format!(
            "{:<20} {:>8} {:>5o} {:>6} {:>8} {:>7} {:>4} {:>7} {:>7} {:>6} {:>7} {:>6}",
            name,
            human(meta.size()),
            meta.mode() & 0o7777,
            meta.uid(),
            counts[0],
            counts[1],
            counts[2],
            counts[3],
            counts[4],
            counts[5],
            counts[6],
            counts[7]
        );
        rows.push((name, row));
    }
    rows.sort();
    println!(
        "{:<20} {:>8} {:>5} {:>6} {:>8} {:>7} {:>4} {:>7} {:>7} {:>6} {:>7} {:>6}",
        "NAME", "SIZE", "MODE", "OWNER", "WINDOWS", "TABLES", "PMD", "2M", "LINKS", "LINKED", "FAULTS", "FILE"
    );
    for (_, row) in rows {
        println!("{row}");
    }
    for (uid, (regions, memory)) in owners {
        let plural = if regions == 1 { "" } else { "s" };
        println!("owner {uid}: {regions} region{plural}, {} of memory", human(memory));
    }
    ExitCode::SUCCESS
}

fn create(name: &str, size: &str, mode: Option<&str>) -> ExitCode {
    let Some(size) = parse_size(size) else {
        eprintln!("mshare: size '{size}': a number with an optional K, M or G suffix\n{USAGE}");
        return ExitCode::from(2);
    };
    let Some(mode) = mode.map_or(Some(0o600), |m| u32::from_str_radix(m, 8).ok().filter(|m| *m <= 0o777)) else {
        eprintln!("mshare: mode must be octal, 0 to 777\n{USAGE}");
        return ExitCode::from(2);
    };
    let path = format!("{MOUNT}/{name}");
    let file = match OpenOptions::new().read(true).write(true).create_new(true).mode(mode).open(&path) {
        Ok(f) => f,
        Err(e) => return fail(format!("creating {path}: {e}")),
    };
    let result = set_size(&file, size)
        .map_err(|e| {
            format!("setting the size of {path} to {size} bytes: {e} (sizes are whole granules: see 'mshare info')")
        })
        .and_then(|()| {
            create_mapping(&file, &MshareCreate::anonymous(0, size))
                .map_err(|e| format!("giving {path} its memory: {e}"))
        });
    match result {
        Ok(()) => {
            println!("{path} {}", human(size));
            ExitCode::SUCCESS
        }
        Err(msg) => {
            // Nothing half-made is left behind.
            let _ = fs::remove_file(&path);
            fail(msg)
        }
    }
}

/// Maps a whole region shared (read-write when `write`) and runs `f` on its bytes.
fn with_region<T>(name: &str, write: bool, f: impl FnOnce(&mut [u8]) -> T) -> Result<T, String> {
    let path = format!("{MOUNT}/{name}");
    let file = OpenOptions::new().read(true).write(write).open(&path).map_err(|e| format!("{path}: {e}"))?;
    let len = usize::try_from(file.metadata().map_err(|e| e.to_string())?.len()).map_err(|e| e.to_string())?;
    let prot = libc::PROT_READ | if write { libc::PROT_WRITE } else { 0 };
    // SAFETY: a fresh shared mapping of the whole region; checked for MAP_FAILED.
    let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, file.as_raw_fd(), 0) };
    if ptr == libc::MAP_FAILED {
        return Err(format!("mapping {path}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the mapping is `len` bytes and lives until the munmap below; nothing else in
    // this process aliases it (other processes or VMs may write it, which for bytes is fine).
    let result = f(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) });
    // SAFETY: unmapping what was mapped above.
    unsafe { libc::munmap(ptr, len) };
    Ok(result)
}

fn read_write(name: &str, offset: &str, arg: &str, write: bool) -> ExitCode {
    let Some(offset) = parse_size(offset).and_then(|o| usize::try_from(o).ok()) else {
        eprintln!("mshare: bad offset '{offset}'\n{USAGE}");
        return ExitCode::from(2);
    };
    let result = if write {
        with_region(name, true, |bytes| {
            let end =
                offset.checked_add(arg.len()).filter(|e| *e <= bytes.len()).ok_or("past the end of the region")?;
            bytes[offset..end].copy_from_slice(arg.as_bytes());
            Ok::<(), &str>(())
        })
    } else {
        let Some(len) = parse_size(arg).and_then(|l| usize::try_from(l).ok()) else {
            eprintln!("mshare: bad length '{arg}'\n{USAGE}");
            return ExitCode::from(2);
        };
        with_region(name, false, |bytes| {
            let end = offset.checked_add(len).filter(|e| *e <= bytes.len()).ok_or("past the end of the region")?;
            println!("{}", String::from_utf8_lossy(&bytes[offset..end]));
            Ok(())
        })
    };
    finish(name, result)
}

/// The 64-bit word at `offset` of a mapped region, which other processes and VMs update at
/// the same time: only ever accessed atomically.
fn word_at(bytes: &mut [u8], offset: usize) -> Result<&AtomicU64, &'static str> {
    if !offset.is_multiple_of(8) {
        return Err("a word's offset is a multiple of 8");
    }
    let end = offset.checked_add(8).filter(|e| *e <= bytes.len()).ok_or("past the end of the region")?;
    // SAFETY: bytes[offset..end] lies in the mapping, which lives as long as `bytes`; it is
    // 8-byte aligned (the mapping is page aligned, `offset` a multiple of 8); every process
    // touching it does so through atomics.
    Ok(unsafe { AtomicU64::from_ptr(bytes[offset..end].as_mut_ptr().cast()) })
}

/// `mshare add`: prints the last value it made and how many of its additions found the
/// word moved by someone else since its previous one (`interleaved`).
fn add(name: &str, offset: usize, times: u64) -> ExitCode {
    let result = with_region(name, true, |bytes| {
        let word = word_at(bytes, offset)?;
        let (mut previous, mut interleaved) = (None, 0u64);
        for _ in 0..times {
            let seen = word.fetch_add(1, Ordering::SeqCst);
            interleaved += u64::from(previous.is_some_and(|p: u64| seen != p + 1));
            previous = Some(seen);
        }
        println!("added {times} at {name}+{offset}: last={} interleaved={interleaved}", previous.map_or(0, |p| p + 1));
        Ok::<(), &str>(())
    });
    finish(name, result)
}

fn word(name: &str, offset: usize) -> ExitCode {
    let result = with_region(name, false, |bytes| {
        println!("{}", word_at(bytes, offset)?.load(Ordering::SeqCst));
        Ok::<(), &str>(())
    });
    finish(name, result)
}

fn finish(name: &str, result: Result<Result<(), &str>, String>) -> ExitCode {
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(why)) => fail(format!("{name}: {why}")),
        Err(why) => fail(why),
    }
}

/// A number argument, or the usage (exit status 2).
fn number(what: &str, text: &str) -> Result<u64, ExitCode> {
    parse_size(text).ok_or_else(|| {
        eprintln!("mshare: bad {what} '{text}'\n{USAGE}");
        ExitCode::from(2)
    })
}

fn offset_arg(text: &str) -> Result<usize, ExitCode> {
    number("offset", text).and_then(|o| usize::try_from(o).map_err(|_| ExitCode::from(2)))
}

/// `mshare run`'s options: the preload library's settings, and the program with its
/// arguments; `Err` with what is wrong.
fn run_options<'a>(args: &'a [&'a str]) -> Result<(Settings, &'a [&'a str]), String> {
    let mut settings = Settings::default();
    let mut rest = args;
    loop {
        match rest {
            ["--", program @ ..] if !program.is_empty() => return Ok((settings, program)),
            ["--mode", mode, more @ ..] => {
                settings.mode = Some(Mode::parse(mode).ok_or(format!("--mode {mode}: expected B or C"))?);
                rest = more;
            }
            ["--threshold", size, more @ ..] => {
                settings.threshold = parse_size(size)
                    .filter(|&t| t > 0)
                    .ok_or(format!("--threshold {size}: expected a size above 0"))?;
                rest = more;
            }
            ["--name", name, more @ ..] => {
                settings.name = (*name).to_owned();
                rest = more;
            }
            ["--fallback", more @ ..] => {
                settings.fallback = true;
                rest = more;
            }
            ["--verbose", more @ ..] => {
                settings.verbose = true;
                rest = more;
            }
            _ => return Err("expected options, then -- and the program to run".to_owned()),
        }
    }
}

/// `mshare run`: checks what the library would refuse for (so that the program does not
/// start only to fail its first large mapping), then becomes the program with the library
/// preloaded. Exit status: 2 bad usage, 1 msharefs missing or in the other mode (without
/// --fallback), 127 no such program, else the program's.
fn run(args: &[&str]) -> ExitCode {
    let (settings, program) = match run_options(args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("mshare run: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The settings are checked the way the library reads them.
    let env = settings.to_env();
    if let Err(e) = Settings::from_lookup(|name| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())) {
        eprintln!("mshare run: {e}");
        return ExitCode::from(2);
    }
    if !std::path::Path::new(LIBRARY_PATH).is_file() {
        return fail(format!("run: the preload library {LIBRARY_PATH} is missing (an image without it?)"));
    }
    if !settings.fallback {
        let module = SystemStats::read();
        match (&module, settings.mode) {
            (Err(e), _) => {
                return fail(format!(
                    "run: {MOUNT}: {e} (is mshare.ko loaded?); --fallback runs the program on ordinary memory"
                ))
            }
            (Ok(stats), Some(mode)) if !stats.is_mode(mode) => {
                return fail(format!(
                    "run: --mode {mode}, but the module is in mode {} (boot with mshare_params=shared_tables={})",
                    stats.mode,
                    mode.shared_tables()
                ))
            }
            _ => {}
        }
    }
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(others) if !others.is_empty() => format!("{LIBRARY_PATH}:{others}"),
        _ => LIBRARY_PATH.to_owned(),
    };
    let error = std::process::Command::new(program[0]).args(&program[1..]).envs(env).env("LD_PRELOAD", preload).exec();
    let status = if error.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
    eprintln!("mshare run: {}: {error}", program[0]);
    ExitCode::from(status)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["list"] => list(),
        ["create", name, size] => create(name, size, None),
        ["create", name, size, mode] => create(name, size, Some(mode)),
        ["remove", names @ ..] if !names.is_empty() => {
            let mut status = ExitCode::SUCCESS;
            for name in names {
                if let Err(e) = fs::remove_file(format!("{MOUNT}/{name}")) {
                    status = fail(format!("removing {name}: {e}"));
                }
            }
            status
        }
        ["read", name, offset, len] => read_write(name, offset, len, false),
        ["write", name, offset, text] => read_write(name, offset, text, true),
        ["add", name, offset, times] => match (offset_arg(offset), number("count", times)) {
            (Ok(offset), Ok(times)) => add(name, offset, times),
            (Err(code), _) | (_, Err(code)) => code,
        },
        ["word", name, offset] => offset_arg(offset).map_or_else(|code| code, |offset| word(name, offset)),
        ["run", rest @ ..] => run(rest),
        ["info"] => match (
            fs::read_to_string(format!("{MOUNT}/mshare_info")),
            fs::read_to_string(format!("{MOUNT}/mshare_stats")),
            mount_api(MOUNT),
        ) {
            (Ok(granule), Ok(stats), Ok(api)) => {
                print!("mount {MOUNT}\napi {api}\ngranule {}\n{stats}", granule.trim());
                ExitCode::SUCCESS
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                fail(format!("{MOUNT}: {e} (is mshare.ko loaded and msharefs mounted?)"))
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_options_give_the_settings_and_the_program() {
        let (settings, program) =
            run_options(&["--mode", "C", "--threshold", "64M", "--fallback", "--", "postgres", "-D", "/pg"]).unwrap();
        assert_eq!((settings.mode, settings.threshold, settings.fallback), (Some(Mode::C), 64 << 20, true));
        assert_eq!(program, ["postgres", "-D", "/pg"]);
        assert!(run_options(&["--mode", "D", "--", "x"]).is_err());
        assert!(run_options(&["--threshold", "0", "--", "x"]).is_err());
        assert!(run_options(&["--"]).is_err());
        assert!(run_options(&["postgres"]).is_err());
    }

    #[test]
    fn sizes_and_their_display() {
        assert_eq!(human(64 << 20), "64M");
        assert_eq!(human(1 << 30), "1G");
        assert_eq!(human(6 << 10), "6K");
    }
}
