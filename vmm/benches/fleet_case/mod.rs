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
    /// The fleet's `--stats-json` report.
    pub stats: Value,
}

impl CaseFigures {
    /// `group` (`kvm_stats`, `kvm_vcpu_stats`) statistic `name` summed over the fleet's VMs.
    pub fn sum(&self, group: &str, name: &str) -> u64 {
        self.stats["vms"].as_array().map_or(0, |vms| vms.iter().filter_map(|vm| vm[group][name].as_u64()).sum())
    }
}

/// The L1 script of case `case` (fleet file `/bench/CASE.toml`) with `vms` guests. A case
/// whose guests have not all printed `T` within `limit_s` seconds is reported as stalled
/// (several L2 VMs at once now and then stop making progress under QEMU's SVM emulation:
/// docs/vmm.md) and the next case runs.
pub fn script(case: &str, vms: usize, limit_s: u32) -> String {
    let polls = limit_s * 5;
    // stat_refresh folds the per-CPU counter deltas into /proc/meminfo first: without it
    // SecPageTables lags by up to a few pages per CPU.
    format!(
        "echo 1 > /proc/sys/vm/stat_refresh\n\
         before=$(awk '/^SecPageTables:/ {{print $2}}' /proc/meminfo)\n\
         mshare-vmm -q launch /bench/{case}.toml --stats-json /tmp/{case}.json &\n\
         pid=$!\n\
         i=0\n\
         until [ \"$(cat /tmp/{case}-vm*.console 2>/dev/null | grep -c T)\" -ge {vms} ]; do\n\
         \x20   i=$((i + 1)); [ $i -lt {polls} ] || break; sleep 0.2\n\
         done\n\
         if [ $i -ge {polls} ]; then kill -KILL $pid; wait $pid; echo STAGE2 case={case} stalled=1; else\n\
         echo 1 > /proc/sys/vm/stat_refresh\n\
         during=$(awk '/^SecPageTables:/ {{print $2}}' /proc/meminfo)\n\
         kill -TERM $pid; wait $pid\n\
         echo STAGE2 case={case} secpagetables_before_kib=$before secpagetables_kib=$during touch_s=$(( i / 5 ))\n\
         echo STATS-BEGIN {case}; tr -d '\\n ' < /tmp/{case}.json; echo; echo STATS-END {case}\n\
         fi\n"
    )
}

/// What L1's `console` says of case `case`: `None` when it stalled; a panic when it says
/// nothing (the script did not get there).
pub fn figures(console: &str, case: &str) -> Option<CaseFigures> {
    let line = console
        .lines()
        .find(|l| l.starts_with(&format!("STAGE2 case={case} ")))
        .unwrap_or_else(|| panic!("no figures for {case}"));
    if console::field(line, "stalled").is_some() {
        return None;
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
    Some(CaseFigures { tables_kib: field("secpagetables_kib") - field("secpagetables_before_kib"), stats })
}
