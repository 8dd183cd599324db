//! `mshare-vmm`: the command line.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vmm::config::{parse_size, SerialTarget, VmConfig};
use vmm::host::SoftwareHypervisor;
use vmm::regions::{Attachment, RegionSpec};
use vmm::report::{Report, VmReport};

/// Exit status for bad arguments or a VM that could not start.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(name = "mshare-vmm", version, about = "A KVM VMM that shares host memory regions across VMs")]
struct Cli {
    /// More output (-v: exits and devices as they happen).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot one VM; exit with the guest command's status.
    Run(Box<RunArgs>),
    /// Launch the VMs and shared regions of a fleet file; exit 0 when every VM's status is 0,
    /// else with the first non-zero status in file order.
    Launch(LaunchArgs),
    /// Boot one VM from a configuration written by `launch --process-per-vm` (JSON): how a
    /// fleet hands each VM process all of its configuration.
    #[command(hide = true)]
    RunConfig(RunConfigArgs),
}

#[derive(clap::Args)]
struct RunConfigArgs {
    /// The VM's configuration (vmm::config::VmConfig as JSON).
    config: PathBuf,
    /// Write the run's statistics as JSON here.
    #[arg(long, value_name = "PATH")]
    stats_json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct LaunchArgs {
    /// The fleet file (TOML).
    fleet: PathBuf,
    /// Write the run's statistics (per VM and per region) as JSON here.
    #[arg(long, value_name = "PATH")]
    stats_json: Option<PathBuf>,
    /// Run each VM in a process of its own (regions handed down as descriptors), so that a
    /// VM process that dies takes nothing else with it. The guests see the same devices.
    #[arg(long)]
    process_per_vm: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// A name for the VM: its console lines on stdout start with [NAME].
    #[arg(long)]
    name: Option<String>,
    /// Kernel: an ELF vmlinux (entered at its 64-bit entry) or a bzImage.
    #[arg(long)]
    kernel: PathBuf,
    /// Initramfs (uncompressed cpio is fastest).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Extra kernel command-line words.
    #[arg(long)]
    cmdline: Option<String>,
    /// vCPUs (1 to 32).
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// Guest memory, e.g. 512M or 2G.
    #[arg(long, default_value = "512M", value_parser = size_arg)]
    memory: u64,
    /// Console: stdout, or a file to write it to.
    #[arg(long, default_value = "stdout")]
    serial: SerialTarget,
    /// A second UART, COM2 (the guest's ttyS1), to stdout (lines prefixed [NAME/ttyS1]) or
    /// a file: the guest image's /init writes its command's output and result line there,
    /// apart from the kernel's console.
    #[arg(long, value_name = "stdout|FILE")]
    serial2: Option<SerialTarget>,
    /// Stop the VM after this many seconds (exit status 124).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Treat the host as a software hypervisor (kvm_pvm): auto, yes or no.
    #[arg(long, default_value = "auto", value_name = "auto|yes|no")]
    software_hypervisor: SoftwareHypervisor,
    /// System.map for naming kernel functions in error reports (default: beside --kernel).
    #[arg(long)]
    system_map: Option<PathBuf>,
    /// Write the run's statistics as JSON here.
    #[arg(long, value_name = "PATH")]
    stats_json: Option<PathBuf>,
    /// A shared region to attach, as an ivshmem PCI device (repeatable):
    /// name=NAME,size=SIZE[,backing=memfd|hugetlbfs][,pagesize=2M|1G][,path=FILE][,ro]
    #[arg(long = "region", value_name = "SPEC", value_parser = region_arg)]
    regions: Vec<(RegionSpec, Attachment)>,
    /// The guest command: passed to the guest's /init after `--` on the kernel command line.
    #[arg(last = true)]
    command: Vec<String>,
}

fn region_arg(text: &str) -> Result<(RegionSpec, Attachment), String> {
    RegionSpec::parse_flag(text).map_err(|e| e.to_string())
}

fn size_arg(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| e.to_string())
}

fn vm_config(args: RunArgs) -> VmConfig {
    let mut config = VmConfig::new(args.kernel);
    config.initrd = args.initrd;
    config.cmdline = args.cmdline;
    config.cpus = args.cpus;
    config.memory = args.memory;
    config.serial = args.serial;
    config.serial2 = args.serial2;
    config.timeout = args.timeout.map(Duration::from_secs);
    config.software_hypervisor = args.software_hypervisor;
    config.system_map = args.system_map;
    config.command = args.command;
    config.regions = args.regions;
    config.name = args.name;
    config
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Info,
        (false, _) => log::LevelFilter::Debug,
    };
    vmm::logger::init(level);
    match cli.command {
        Command::Run(args) => {
            let stats_json = args.stats_json.clone();
            run(&vm_config(*args), stats_json.as_deref())
        }
        Command::RunConfig(args) => match read_config(&args.config) {
            Ok(config) => run(&config, args.stats_json.as_deref()),
            Err(e) => {
                log::error!("{e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Launch(args) => launch(&args),
    }
}

/// Runs one VM to its end, reports it, writes its statistics; the exit status is the VM's.
fn run(config: &VmConfig, stats_json: Option<&std::path::Path>) -> ExitCode {
    match vmm::vmm::run(config) {
        Ok(outcome) => {
            let who = config.name.as_ref().map(|n| format!("vm '{n}': ")).unwrap_or_default();
            report(&who, &outcome);
            let regions: Vec<_> = config.regions.iter().map(|(spec, _)| spec.clone()).collect();
            let report = Report::new(vec![VmReport::new(config.name.as_deref().unwrap_or("vm"), &outcome)], &regions);
            if let Err(e) = write_stats(stats_json, &report) {
                log::error!("{e}");
                return ExitCode::from(EXIT_USAGE);
            }
            ExitCode::from(outcome.reason.exit_status())
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// A VM configuration written by `launch --process-per-vm`.
fn read_config(path: &std::path::Path) -> Result<VmConfig, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading the VM configuration {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("the VM configuration {}: {e}", path.display()))
}

/// Logs how a VM ended (`who` names it in a fleet).
fn report(who: &str, outcome: &vmm::vmm::Outcome) {
    let reason = &outcome.reason;
    if reason.is_failure() {
        log::error!("{who}{reason}");
    } else {
        log::info!("{who}{reason}");
    }
    log::info!(
        "{who}ran {:.1} s (first KVM_RUN after {:.1} ms); exits: {}; unclaimed port accesses {}",
        outcome.elapsed.as_secs_f64(),
        outcome.first_run.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        outcome.counters,
        outcome.unclaimed_ports
    );
    log::info!("{who}{}", vmm::stats::summary_line(outcome));
}

/// Writes the JSON report if asked to.
fn write_stats(path: Option<&std::path::Path>, report: &Report) -> Result<(), String> {
    let Some(path) = path else { return Ok(()) };
    let text = serde_json::to_string_pretty(report).map_err(|e| format!("--stats-json: {e}"))?;
    std::fs::write(path, text + "\n").map_err(|e| format!("--stats-json {}: {e}", path.display()))
}

fn launch(args: &LaunchArgs) -> ExitCode {
    let fleet = match vmm::fleet::Fleet::load(&args.fleet) {
        Ok(fleet) => fleet,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if args.process_per_vm {
        return launch_process_per_vm(&fleet, args.stats_json.as_deref());
    }
    let results = match vmm::fleet::launch(&fleet) {
        Ok(results) => results,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut status = 0u8;
    for (name, result) in &results.vms {
        let who = format!("vm '{name}': ");
        match result {
            Ok(outcome) => {
                report(&who, outcome);
                if status == 0 {
                    status = outcome.reason.exit_status();
                }
            }
            Err(e) => {
                log::error!("{who}{e}");
                if status == 0 {
                    status = EXIT_USAGE;
                }
            }
        }
    }
    let finished: Vec<VmReport> =
        results.vms.iter().filter_map(|(name, r)| r.as_ref().ok().map(|o| VmReport::new(name, o))).collect();
    let after = &results.host_memory_after;
    log::info!("fleet: host memory after every VM stopped, regions still mapped: {}", vmm::stats::rss_pss(after));
    let mut report = Report::new(finished, &fleet.regions);
    report.host_memory_kib_after_all_vms = Some(after.clone());
    if let Err(e) = write_stats(args.stats_json.as_deref(), &report) {
        log::error!("{e}");
        return ExitCode::from(EXIT_USAGE);
    }
    ExitCode::from(status)
}

fn launch_process_per_vm(fleet: &vmm::fleet::Fleet, stats_json: Option<&std::path::Path>) -> ExitCode {
    let scratch = match vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/mshare-vmm-fleet-") {
        Ok(dir) => dir,
        Err(e) => {
            log::error!("creating a scratch directory: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let processes = match vmm::fleet::launch_process_per_vm(fleet, scratch.as_path()) {
        Ok(p) => p,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut status = 0u8;
    let mut vms = Vec::new();
    for p in &processes {
        match p.status {
            Some(code) => log::info!("vm '{}': its process exited with status {code}", p.name),
            None => log::error!("vm '{}': its process was killed by a signal", p.name),
        }
        let code = p.status.map_or(125, |c| u8::try_from(c).unwrap_or(125));
        if status == 0 {
            status = code;
        }
        match p.stats.as_ref().and_then(|s| s.vms.first()) {
            Some(vm) => vms.push(VmReport { name: p.name.clone(), ..vm.clone() }),
            // Its statistics are missing from the report: say so, and fail the launch.
            None if stats_json.is_some() => {
                log::error!("vm '{}': its process left no readable statistics; the fleet report lacks it", p.name);
                if status == 0 {
                    status = EXIT_USAGE;
                }
            }
            None => {}
        }
    }
    let mut report = Report::new(vms, &fleet.regions);
    report.process_per_vm = true;
    if let Err(e) = write_stats(stats_json, &report) {
        log::error!("{e}");
        return ExitCode::from(EXIT_USAGE);
    }
    ExitCode::from(status)
}
