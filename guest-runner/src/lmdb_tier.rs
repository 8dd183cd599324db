//! The LMDB database tier, as every host runs it (QEMU TCG guests here, `mshare-vmm`
//! fleets on the nested KVM host or on hardware): the ways a VM can hold the database,
//! the guest script that runs the tier in one VM, and the figures read back from its
//! console.
//!
//! In every way the database reaches the VM as a region device (`/sys/fs/mshare/ivshmem/*`,
//! the only one the VM has). The private ways copy it into the VM's own tmpfs first (timed:
//! the copy-in is charged to them) and use the copy; the mshare ways use the region itself.
//! Then, for each reader count N: a connect storm (N processes open the database at once
//! and read a key), and the bench (N readers, Zipfian gets and short scans, every value
//! checked) `repeats` times. All readers open the database as a snapshot (MDB_RDONLY |
//! MDB_NOLOCK): a writer cannot share LMDB's lock table across VMs.

use std::collections::BTreeMap;

/// What a VM prints once its database is in place (copied, for the private ways).
pub const READY: &str = "MSHARE-TIER ready";
/// Bytes per generated pair in a database (100-byte value, key, LMDB's node header).
pub const PAIR_BYTES: u64 = 128;

/// How a VM holds the database.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Way {
    /// A copy on the VM's own tmpfs, 4 KiB pages.
    Private,
    /// A copy on a tmpfs mounted `huge=always`: 2 MiB pages and mappings.
    PrivateThp,
    /// The region, mapped by each process with its own page tables (2 MiB entries).
    MshareC,
    /// The region, with page tables shared by the VM's processes.
    MshareB,
}

impl Way {
    pub const ALL: [Way; 4] = [Way::Private, Way::PrivateThp, Way::MshareC, Way::MshareB];

    pub fn name(self) -> &'static str {
        match self {
            Way::Private => "private",
            Way::PrivateThp => "private-thp",
            Way::MshareC => "mshare-c",
            Way::MshareB => "mshare-b",
        }
    }

    /// The way called `name`.
    pub fn from_name(name: &str) -> Option<Way> {
        Way::ALL.into_iter().find(|way| way.name() == name)
    }

    /// Whether the VM keeps a copy of its own.
    pub fn private(self) -> bool {
        matches!(self, Way::Private | Way::PrivateThp)
    }

    /// Kernel command-line words the VM needs (mode C of the module).
    pub fn cmdline(self) -> &'static [&'static str] {
        match self {
            Way::MshareC => &["mshare_params=shared_tables=0"],
            _ => &[],
        }
    }

    /// The guest's shell lines that put the database in place and name it `$db`; `$d` is
    /// the region device.
    fn prepare(self) -> &'static str {
        match self {
            Way::Private => {
                "mkdir -p /mnt/db && mount -t tmpfs -o huge=never tmpfs /mnt/db && \
                 mshare-lmdb copy ivshmem/$d /mnt/db/data && db=/mnt/db/data"
            }
            Way::PrivateThp => {
                "mkdir -p /mnt/db && mount -t tmpfs -o huge=always tmpfs /mnt/db && \
                 mshare-lmdb copy ivshmem/$d /mnt/db/data && db=/mnt/db/data"
            }
            Way::MshareC | Way::MshareB => "db=ivshmem/$d",
        }
    }
}

/// The database of `size_mib` a builder VM generates: pairs filling about 70 % of it.
pub fn generated_pairs(size_mib: u64) -> u64 {
    (size_mib << 20) * 7 / 10 / PAIR_BYTES
}

/// The builder VM's command: generates the database into its one region device.
pub fn build_script(size_mib: u64) -> String {
    format!("d=$(ls /sys/fs/mshare/ivshmem) && mshare-lmdb load ivshmem/$d --generate {}", generated_pairs(size_mib))
}

/// Where a fleet's start barrier says how far every VM got (see [`vm_script`]): a step
/// number, 7 digits, at this offset of the barrier region; each VM says its own at
/// 8 × its index.
pub const BARRIER_GO: u64 = 4096;
/// The step the host writes at [`BARRIER_GO`] when a VM ended early: every VM waiting
/// at the barrier gives up.
pub const BARRIER_ABORT: u64 = 9_999_999;

/// What one VM runs (a `sh -c` script): the way's preparation, then for each N in
/// `readers` a storm and `repeats` benches of `seconds`, seeds from `seed`; at the end, a
/// few lines of the guest's /proc/meminfo.
///
/// `barrier`: this VM's index in a fleet whose VMs wait for each other before each storm
/// and bench, through a second region device (the first is the database): the VM writes
/// the step it reached at 8 × its index and waits until the host has written that step at
/// [`BARRIER_GO`] (once every VM reached it), so the VMs' readers run at the same time by
/// construction rather than by chance.
pub fn vm_script(way: Way, readers: &[u64], seconds: u64, repeats: u64, seed: u64, barrier: Option<usize>) -> String {
    let mut body = String::new();
    let mut step = 0;
    let mut gate = |body: &mut String| {
        if barrier.is_some() {
            step += 1;
            *body += &format!("gate {step} && ");
        }
    };
    for n in readers {
        gate(&mut body);
        body += &format!("mshare-lmdb storm $db {n} --snapshot && ");
        for r in 0..repeats {
            gate(&mut body);
            body += &format!("mshare-lmdb bench $db {n} {seconds} --snapshot --seed $((seed + {})) && ", n * 100 + r);
        }
    }
    let devices = match barrier {
        // No double quotes: the script travels on the kernel command line.
        Some(vm) => format!(
            "set -- $(ls /sys/fs/mshare/ivshmem); d=$1; b=$2; vm={vm}; \
             gate() {{ mshare write ivshmem/$b $((vm * 8)) $(printf %07d $1) >/dev/null && \
             until [ x$(mshare read ivshmem/$b {BARRIER_GO} 7) = x$(printf %07d $1) ]; do \
             [ x$(mshare read ivshmem/$b {BARRIER_GO} 7) != x{BARRIER_ABORT} ] || exit 1; sleep 0.05; done; }}; [ -n $b ]"
        ),
        None => "d=$(ls /sys/fs/mshare/ivshmem)".to_owned(),
    };
    format!(
        "seed={seed}; {devices} && {} || exit 1; echo {READY}; {body}\
         grep -E '^(MemTotal|MemFree|Shmem|PageTables)' /proc/meminfo",
        way.prepare()
    )
}

/// A fleet of the tier for `mshare-vmm launch`.
pub struct FleetSpec<'a> {
    pub way: Way,
    pub size_mib: u64,
    pub vms: usize,
    /// The database file on the VMM's host: the region, attached read-only by every VM.
    pub database: &'a str,
    pub kernel: &'a str,
    pub initrd: &'a str,
    pub readers: &'a [u64],
    pub seconds: u64,
    pub repeats: u64,
    /// Guest RAM besides a private copy of the database.
    pub base_memory_mib: u64,
    /// Where each VM's console goes (`DIR/vmI.log`); `None`: the VMM's output.
    pub serial_dir: Option<&'a str>,
    pub timeout_s: u64,
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

impl FleetSpec<'_> {
    /// The fleet file: one region (the database) and the VMs, VM `i` seeded `(i + 1)`
    /// millions as under QEMU.
    pub fn toml(&self) -> String {
        let memory = self.base_memory_mib + if self.way.private() { self.size_mib } else { 0 };
        let mut text = format!(
            "[[region]]\nname = \"db\"\nsize = \"{}M\"\npath = {}\n\n",
            self.size_mib,
            toml_string(self.database)
        );
        let cmdline: Vec<&str> = ["kunit.enable=0"].iter().chain(self.way.cmdline()).copied().collect();
        for vm in 0..self.vms {
            let script =
                vm_script(self.way, self.readers, self.seconds, self.repeats, (vm as u64 + 1) * 1_000_000, None);
            text += &format!(
                "[[vm]]\nname = \"vm{vm}\"\nkernel = {}\ninitrd = {}\ncpus = 2\nmemory = \"{memory}M\"\ntimeout = {}\n\
                 cmdline = {}\ncommand = [\"sh\", \"-c\", {}]\nregions = [{{ name = \"db\", access = \"ro\" }}]\n",
                toml_string(self.kernel),
                toml_string(self.initrd),
                self.timeout_s,
                toml_string(&cmdline.join(" ")),
                toml_string(&script)
            );
            if let Some(dir) = self.serial_dir {
                text += &format!("serial = {}\n", toml_string(&format!("{dir}/vm{vm}.log")));
            }
            text += "\n";
        }
        text
    }
}

/// The numeric `key=value` figures of a console line.
pub fn figures(line: &str) -> BTreeMap<String, f64> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The guest figures of K VMs' consoles for one reader count N.
#[derive(Debug, Clone)]
pub struct TierFigures {
    /// The fleet's operations per second (sum over VMs) in each repeat, in order.
    pub ops_per_s: Vec<f64>,
    /// Median over VMs and repeats of each bench's p50, if the clock allowed one.
    pub p50_us: Option<f64>,
    /// Median over repeats of the worst VM's p99, if the clock allowed one.
    pub p99_us: Option<f64>,
    /// Medians over VMs and repeats, per VM.
    pub pagetables_kib: f64,
    pub minor_faults: f64,
    pub thp_mapped_kib: f64,
    /// The worst VM's connect storm.
    pub storm_ms: f64,
    /// Median over VMs.
    pub storm_pagetables_kib: f64,
    /// The slowest VM's copy-in (private ways).
    pub copy_in_ms: Option<f64>,
}

impl TierFigures {
    /// Reads them from `consoles` (one per VM), each of which must hold a storm line for
    /// N and `repeats` bench lines for N with `bad=0`.
    pub fn read(consoles: &[&str], n: u64, repeats: u64) -> Result<Self, String> {
        let mut ops = vec![0.0; repeats as usize];
        let mut p99 = vec![0.0f64; repeats as usize];
        let (mut p50, mut pagetables, mut faults, mut thp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut storm_ms, mut storm_pt, mut copy_in) = (0.0f64, Vec::new(), None::<f64>);
        let mut timed = true;
        let readers = format!(" readers={n} ");
        for (vm, console) in consoles.iter().enumerate() {
            let benches: Vec<&str> =
                console.lines().filter(|l| l.starts_with("LMDB ") && l.contains(&readers)).collect();
            if benches.len() != repeats as usize {
                return Err(format!("vm{vm}: {} bench lines for N = {n}, not {repeats}", benches.len()));
            }
            for (r, line) in benches.iter().enumerate() {
                let f = figures(line);
                let figure = |key: &str| f.get(key).copied().ok_or_else(|| format!("vm{vm}: no {key}= in {line}"));
                if figure("bad")? != 0.0 {
                    return Err(format!("vm{vm}: values failed their check: {line}"));
                }
                ops[r] += figure("ops_per_s")?;
                match (f.get("p50_us"), f.get("p99_us")) {
                    (Some(a), Some(b)) => {
                        p50.push(*a);
                        p99[r] = p99[r].max(*b);
                    }
                    _ => timed = false,
                }
                pagetables.push(figure("pagetables_kib")?);
                faults.push(figure("minor_faults")?);
                thp.push(figure("pmd_mapped_kib")?);
            }
            let storm = console
                .lines()
                .find(|l| l.starts_with("STORM ") && l.contains(&format!(" processes={n} ")))
                .ok_or_else(|| format!("vm{vm}: no storm line for N = {n}"))?;
            let f = figures(storm);
            storm_ms = storm_ms.max(f.get("ms").copied().unwrap_or(f64::NAN));
            storm_pt.push(f.get("pagetables_kib").copied().unwrap_or(f64::NAN));
            if let Some(copied) = console.lines().find(|l| l.starts_with("mshare-lmdb: copied")) {
                // "... in MS ms"
                let ms = copied.split_whitespace().rev().nth(1).and_then(|v| v.parse::<f64>().ok());
                copy_in = Some(copy_in.unwrap_or(0.0).max(ms.unwrap_or(f64::NAN)));
            }
        }
        Ok(Self {
            ops_per_s: ops,
            p50_us: timed.then(|| median(&mut p50)),
            p99_us: timed.then(|| median(&mut p99)),
            pagetables_kib: median(&mut pagetables),
            minor_faults: median(&mut faults),
            thp_mapped_kib: median(&mut thp),
            storm_ms,
            storm_pagetables_kib: median(&mut storm_pt),
            copy_in_ms: copy_in,
        })
    }

    /// Median, least and most of the repeats' fleet operations per second.
    pub fn ops_spread(&self) -> (f64, f64, f64) {
        let mut sorted = self.ops_per_s.clone();
        let least = sorted.iter().copied().fold(f64::MAX, f64::min);
        let most = sorted.iter().copied().fold(0.0, f64::max);
        (median(&mut sorted), least, most)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vm_script_runs_every_n_and_repeat_after_the_preparation() {
        let script = vm_script(Way::PrivateThp, &[8, 64], 3, 2, 7, None);
        assert!(script.starts_with(
            "seed=7; d=$(ls /sys/fs/mshare/ivshmem) && mkdir -p /mnt/db && mount -t tmpfs -o huge=always"
        ));
        assert_eq!(script.matches("mshare-lmdb storm $db ").count(), 2);
        assert_eq!(script.matches("mshare-lmdb bench $db 64 3 --snapshot").count(), 2);
        assert!(script.contains("|| exit 1; echo MSHARE-TIER ready;"));
        assert!(!script.contains('"'), "the kernel command line cannot carry a double quote");
        assert!(!script.contains("gate"));
    }

    #[test]
    fn with_a_barrier_every_storm_and_bench_waits_for_every_vm() {
        let script = vm_script(Way::MshareB, &[8, 64], 3, 2, 7, Some(3));
        assert!(script.starts_with("seed=7; set -- $(ls /sys/fs/mshare/ivshmem); d=$1; b=$2; vm=3; gate() {"));
        for step in 1..=6 {
            assert_eq!(script.matches(&format!("gate {step} && ")).count(), 1, "step {step}: {script}");
        }
        assert!(script.contains("gate 6 && mshare-lmdb bench $db 64 3"));
        assert!(!script.contains('"'), "the kernel command line cannot carry a double quote");
    }

    #[test]
    fn a_fleet_file_attaches_the_database_read_only_to_every_vm() {
        let spec = FleetSpec {
            way: Way::MshareC,
            size_mib: 256,
            vms: 2,
            database: "/tmp/db.img",
            kernel: "${L2_KERNEL}",
            initrd: "/l2/initramfs.cpio",
            readers: &[8],
            seconds: 3,
            repeats: 1,
            base_memory_mib: 768,
            serial_dir: Some("/tmp"),
            timeout_s: 900,
        };
        let text = spec.toml();
        assert!(text.starts_with("[[region]]\nname = \"db\"\nsize = \"256M\"\npath = \"/tmp/db.img\"\n"), "{text}");
        assert_eq!(text.matches("regions = [{ name = \"db\", access = \"ro\" }]").count(), 2);
        assert!(text.contains("cmdline = \"kunit.enable=0 mshare_params=shared_tables=0\""), "{text}");
        assert!(text.contains("memory = \"768M\"") && text.contains("serial = \"/tmp/vm1.log\""), "{text}");
        assert!(text.contains("seed=2000000;"), "{text}");
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn figures_come_from_every_vm_and_a_failed_check_is_an_error() {
        let vm = "STORM db=x processes=8 ms=20 pagetables_kib=400 minor_faults=300\n\
                  LMDB readers=8 ops_per_s=100 p50_us=5 p99_us=30 pagetables_kib=360 pmd_mapped_kib=0 minor_faults=900 bad=0\n";
        let f = TierFigures::read(&[vm, vm], 8, 1).unwrap();
        assert_eq!(f.ops_per_s, vec![200.0]);
        assert_eq!((f.p50_us, f.p99_us, f.storm_ms), (Some(5.0), Some(30.0), 20.0));
        assert!(TierFigures::read(&[&vm.replace("bad=0", "bad=1")], 8, 1).is_err());
        assert!(TierFigures::read(&[vm], 8, 2).is_err(), "a missing repeat is an error");
        let untimed = vm.replace("p50_us=5 p99_us=30", "p50_us=n/a p99_us=n/a");
        assert_eq!(TierFigures::read(&[&untimed], 8, 1).unwrap().p50_us, None);
    }
}
