//! One case of a nested fleet benchmark (`regions_nested`, `stage2`): an L1 script that
//! launches a fleet of tiny guests, waits until each printed `T` on its console file
//! (`/tmp/CASE-vmN.console`), reads L1's SecPageTables, stops the fleet and prints the
//! figures and the VMM's statistics; and the reading of those lines back.

use guest_runner::console;
use serde_json::Value;
use vmm_testing::tiny::{bar2_address_into_rbx, print_marker, touch_pages_from_rbx};

/// The guest of a case: touch `pages` 4 KiB pages of BAR2 (none: only guest RAM's
/// tables), print `T` (what [`script`] waits for), spin until stopped.
pub fn toucher(pages: u32) -> Vec<u8> {
    let mut code = Vec::new();
    if pages > 0 {
        code.extend(bar2_address_into_rbx());
        code.extend(touch_pages_from_rbx(pages));
    }
    code.extend(print_marker(b'T'));
    code.extend([0xeb, 0xfe]); // jmp .
    code
}

/// The figures of one case that finished.
pub struct CaseFigures {
    /// SecPageTables while every guest was alive, minus before the fleet (signed: a global
    /// counter, and what the kernel frees meanwhile counts too).
    pub tables_kib: i64,
    /// Fleets launched for it: more than one when L1 traced a guest's lost state (see
    /// [`LOSSES`]).
    pub attempts: u32,
    /// The fleet's `--stats-json` report.
    pub stats: Value,
}

impl CaseFigures {
    /// `group` (`kvm_stats`, `kvm_vcpu_stats`) statistic `name` summed over the fleet's VMs.
    pub fn sum(&self, group: &str, name: &str) -> u64 {
        self.stats["vms"].as_array().map_or(0, |vms| vms.iter().filter_map(|vm| vm[group][name].as_u64()).sum())
    }
}

/// The number of KVM entries into an L2 at L1's own `__svm_vcpu_run` that L1 traced: the
/// evidence that QEMU's SVM emulation overwrote a running L2's saved state with L1's at a
/// #VMEXIT (docs/vmm.md; no guest executes there). The watch every nested script runs in
/// (`guest_runner::nested::WATCH_SCRIPT`) arms that filtered `kvm_entry` event for the
/// whole boot; a case that handled a loss clears the trace, so what the watch reports at
/// the end is only what no case answered.
const LOSSES: &str = "losses() { grep -c 'kvm_entry:' /sys/kernel/tracing/trace; }\n";

/// The L1 script of case `case` (fleet file `/bench/CASE.toml`) with `vms` guests. A fleet
/// in which L1 traced the emulator's signature ([`LOSSES`]) is stopped and launched again,
/// at most `attempts` times in all, each relaunch said on the console with its evidence
/// (`STAGE2-RELAUNCH ... evidence=`). Nothing else is relaunched: a VM or the VMM that ended
/// before every guest printed `T` without that evidence (`exited`), and a case whose guests
/// have not all printed `T` within `limit_s` seconds (`stalled`), end the case unmeasured,
/// which the bench reports as a failure. `pin_vcpus`: see [`pin_vcpus_script`].
pub fn script(case: &str, vms: usize, limit_s: u32, attempts: u32, pin_vcpus: bool) -> String {
    let polls = limit_s * 5;
    let pin = if pin_vcpus { pin_vcpus_script(vms) } else { String::new() };
    // stat_refresh folds the per-CPU counter deltas into /proc/meminfo first: without it
    // SecPageTables lags by up to a few pages per CPU.
    format!(
        "{LOSSES}fleet_vms() {{ for d in /sys/kernel/debug/kvm/*-*; do t=${{d##*/}}; [ -e /proc/$pid/task/${{t%%-*}} ] && echo $d; done; }}\n\
         attempt=0\n\
         while :; do\n\
         attempt=$((attempt + 1)); rm -f /tmp/{case}-vm*.console\n\
         echo 1 > /proc/sys/vm/stat_refresh\n\
         before=$(awk '/^SecPageTables:/ {{print $2}}' /proc/meminfo)\n\
         mshare-vmm -q launch /bench/{case}.toml --stats-json /tmp/{case}.json &\n\
         pid=$!\n\
         {pin}\
         i=0; state=done; all_up=\n\
         until [ \"$(cat /tmp/{case}-vm*.console 2>/dev/null | grep -c T)\" -ge {vms} ]; do\n\
         \x20   i=$((i + 1)); [ $i -lt {polls} ] || {{ state=stalled; break; }}\n\
         \x20   if [ $((i % 5)) = 0 ]; then\n\
         \x20       [ \"$(losses)\" = 0 ] || {{ state=lost; break; }}\n\
         \x20       vmm=$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)\n\
         \x20       up=$(fleet_vms | grep -c .)\n\
         \x20       [ $up -lt {vms} ] || all_up=1\n\
         \x20       if [ -z \"$vmm\" ] || [ \"$vmm\" = Z ] || {{ [ -n \"$all_up\" ] && [ $up -lt {vms} ]; }}; then state=exited; break; fi\n\
         \x20   fi\n\
         \x20   sleep 0.2\n\
         done\n\
         [ $state = exited ] && [ \"$(losses)\" != 0 ] && state=lost\n\
         [ $state = lost ] || break\n\
         kill -KILL $pid 2>/dev/null; wait $pid\n\
         echo STAGE2-RELAUNCH case={case} attempt=$attempt reason=lost after_s=$(( i / 5 )) entries=$(losses) \
         evidence=\"$(grep -m 1 'kvm_entry:' /sys/kernel/tracing/trace | tr -s ' ' | tr ' ' '_')\"\n\
         echo > /sys/kernel/tracing/trace\n\
         [ $attempt -lt {attempts} ] || break\n\
         done\n\
         if [ $state = stalled ] || [ $state = exited ]; then kill -KILL $pid 2>/dev/null; wait $pid; fi\n\
         if [ $state != done ]; then echo STAGE2 case={case} $state=1 attempts=$attempt; else\n\
         echo 1 > /proc/sys/vm/stat_refresh\n\
         during=$(awk '/^SecPageTables:/ {{print $2}}' /proc/meminfo)\n\
         kill -TERM $pid; wait $pid\n\
         echo STAGE2 case={case} secpagetables_before_kib=$before secpagetables_kib=$during touch_s=$(( i / 5 )) attempts=$attempt\n\
         echo STATS-BEGIN {case}; tr -d '\\n ' < /tmp/{case}.json; echo; echo STATS-END {case}\n\
         fi\n"
    )
}

/// The relaunches of case `case` on L1's `console`, each with its evidence: the
/// `STAGE2-RELAUNCH` lines [`script`] printed.
pub fn relaunches<'a>(console: &'a str, case: &str) -> Vec<&'a str> {
    let prefix = format!("STAGE2-RELAUNCH case={case} ");
    console.lines().filter(|l| l.starts_with(&prefix)).map(|l| l.trim_end_matches('\r')).collect()
}

/// The most L1 CPUs the guests' vCPU threads are pinned to: a nested host of 9 vCPUs on
/// this 2-core machine reset while booting (2026-11-30); 5 boot.
const MAX_PINNED_CPUS: usize = 4;

/// The L1 CPUs the guests' vCPU threads of a fleet of `vms` are pinned to (see
/// [`pin_vcpus_script`]).
fn pinned_cpus(vms: usize) -> usize {
    vms.min(MAX_PINNED_CPUS)
}

/// The vCPUs a nested host needs for pinned fleets of up to `max_vms` guests: the pinned
/// CPUs and CPU 0 for everything else.
// Each bench binary compiles this module; only regions_nested still pins.
#[allow(dead_code)]
pub fn pinned_host_cpus(max_vms: usize) -> u32 {
    u32::try_from(pinned_cpus(max_vms) + 1).unwrap_or(u32::MAX)
}

/// Script lines that pin the vCPU threads of the fleet `$pid` (`vms` guests of one vCPU)
/// to L1 CPUs 1 to `min(vms, MAX_PINNED_CPUS)` in turn, and the VMM's other threads and this
/// shell to CPU 0 (the nested host needs that many CPUs plus one). With every L2 vCPU
/// thread alone on its L1 CPU the loss of a guest's state ([`LOSSES`]) was not
/// seen in 4 fleets of four VMs, nor in one of eight (two per CPU), where unpinned fleets of
/// four lost a guest in one of two or more (2026-11-30).
fn pin_vcpus_script(vms: usize) -> String {
    let cpus = pinned_cpus(vms);
    format!(
        "busybox taskset -p -c 0 $$ >/dev/null\n\
         j=0; until [ $(grep -l '^vcpu' /proc/$pid/task/*/comm 2>/dev/null | wc -l) -ge {vms} ] || [ $j -ge 300 ]; do j=$((j + 1)); sleep 0.2; done\n\
         cpu=1; for c in $(grep -l '^vcpu' /proc/$pid/task/*/comm 2>/dev/null); do t=${{c%/comm}}; busybox taskset -p -c $cpu ${{t##*/}} >/dev/null; cpu=$((cpu % {cpus} + 1)); done\n\
         for t in /proc/$pid/task/*; do grep -q '^vcpu' $t/comm || busybox taskset -p -c 0 ${{t##*/}} >/dev/null; done\n"
    )
}

/// What L1's `console` says of case `case`: its figures, or why it has none (`stalled`,
/// `exited`: a VM ended without the emulator's signature, or `lost`: every attempt lost a
/// guest, see [`script`]); a panic when it says nothing (the script did not get there).
pub fn figures(console: &str, case: &str) -> Result<CaseFigures, &'static str> {
    let line = console
        .lines()
        .find(|l| l.starts_with(&format!("STAGE2 case={case} ")))
        .unwrap_or_else(|| panic!("no figures for {case}"));
    for reason in ["stalled", "lost", "exited"] {
        if console::field(line, reason).is_some() {
            return Err(reason);
        }
    }
    let field = |key: &str| -> i64 {
        console::field(line, key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {key}= in {line}"))
    };
    let json = console
        .split(&format!("STATS-BEGIN {case}"))
        .nth(1)
        .and_then(|rest| rest.split(&format!("STATS-END {case}")).next())
        .unwrap_or_else(|| panic!("no statistics for {case}"));
    let stats = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{case} statistics: {e}"));
    Ok(CaseFigures {
        tables_kib: field("secpagetables_kib") - field("secpagetables_before_kib"),
        attempts: field("attempts") as u32,
        stats,
    })
}
