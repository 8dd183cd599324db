//! Reading a guest's serial console: the `/init` result line and kernel problems.

use std::fmt;

/// Markers of a kernel in trouble. Any of them on the console fails a run, whatever the
/// guest command returned.
const PROBLEM_MARKERS: &[&str] = &[
    "WARNING:",
    "BUG:",
    "Oops",
    "Kernel panic",
    "general protection fault",
    "Call Trace:",
    "possible circular locking",
    "possible recursive locking",
    "soft lockup",
    "hard LOCKUP",
    "rcu_sched self-detected stall",
    "rcu: INFO:",
    "kernel BUG at",
    "UBSAN:",
    "Unable to handle kernel",
];

/// A console line that shows a kernel problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number on the console.
    pub line_number: usize,
    /// The line, without a trailing carriage return.
    pub line: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "console line {}: {}", self.line_number, self.line)
    }
}

impl Problem {
    /// Whether the line opens an RCU stall report.
    pub fn is_rcu_stall(&self) -> bool {
        ["rcu: INFO:", "rcu_sched self-detected stall"].iter().any(|m| self.line.contains(m))
    }

    /// Whether the line is an RCU stall report's: its header or its trace's.
    pub fn is_part_of_a_stall_report(&self) -> bool {
        self.is_rcu_stall() || self.line.contains("Call Trace:")
    }
}

/// Every console line that shows a kernel warning, BUG, oops, lockdep report or panic.
pub fn kernel_problems(console: &str) -> Vec<Problem> {
    console
        .lines()
        .enumerate()
        .filter(|(_, line)| PROBLEM_MARKERS.iter().any(|m| line.contains(m)))
        .map(|(i, line)| Problem { line_number: i + 1, line: line.trim_end_matches('\r').to_owned() })
        .collect()
}

/// Up to `lines` console lines from `problem`'s line on.
pub fn report_at(console: &str, problem: &Problem, lines: usize) -> String {
    console
        .lines()
        .skip(problem.line_number - 1)
        .take(lines)
        .map(|l| l.trim_end_matches('\r'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How `/init` found mshare.ko.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleState {
    /// insmod succeeded and /sys/module/mshare exists.
    Loaded,
    /// insmod failed.
    Failed,
    /// The command line said `mshare_module=skip`.
    Skipped,
}

/// The `MSHARE-RESULT` line `/init` prints before it ends the VM.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestResult {
    /// Exit status of the guest command.
    pub status: i32,
    /// Whether the module was loaded.
    pub module: ModuleState,
    /// Guest uptime in seconds when the command ended.
    pub uptime: f64,
}

/// Guest uptime in seconds when `/init` started (its `MSHARE-INIT` line).
pub fn init_uptime(console: &str) -> Option<f64> {
    console.lines().find_map(|l| l.split("MSHARE-INIT uptime=").nth(1)?.trim().parse().ok())
}

/// The value of `key` in a guest program's report line of `key=value` words (`BENCH`, `DB`,
/// `STRESS`, `FUZZ`), if the line has it.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// The last `MSHARE-RESULT` line of the console, if `/init` got that far.
pub fn guest_result(console: &str) -> Option<GuestResult> {
    console.lines().rev().find_map(|line| {
        let fields = line.split("MSHARE-RESULT ").nth(1)?;
        let mut status = None;
        let mut module = None;
        let mut uptime = None;
        for field in fields.split_whitespace() {
            match field.split_once('=')? {
                ("status", v) => status = v.parse().ok(),
                ("module", "loaded") => module = Some(ModuleState::Loaded),
                ("module", "failed") => module = Some(ModuleState::Failed),
                ("module", "skipped") => module = Some(ModuleState::Skipped),
                ("uptime", v) => uptime = v.parse().ok(),
                _ => {}
            }
        }
        Some(GuestResult { status: status?, module: module?, uptime: uptime? })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_fields_by_whole_key() {
        let line = "BENCH way=mshare procs=64 pagetables_kib=508 faults=64";
        assert_eq!(field(line, "procs"), Some("64"));
        assert_eq!(field(line, "faults"), Some("64"));
        assert_eq!(field(line, "pages"), None, "a key is matched whole");
        assert_eq!(field(line, "way"), Some("mshare"));
    }

    #[test]
    fn finds_warnings_oopses_and_panics() {
        let console = "booting\n\
            ------------[ cut here ]------------\n\
            WARNING: CPU: 0 PID: 1 at mm/memory.c:100 zap_pte_range+0x10/0x20\r\n\
            fine\n\
            Kernel panic - not syncing: Attempted to kill init!\n";
        let problems = kernel_problems(console);
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].line_number, 3);
        assert!(problems[0].line.ends_with("zap_pte_range+0x10/0x20"));
        assert!(problems[1].to_string().starts_with("console line 5: Kernel panic"));
    }

    #[test]
    fn clean_console_has_no_problems() {
        assert!(kernel_problems("Linux version 7.3.4\nRun /init as init process\n").is_empty());
    }

    #[test]
    fn reads_the_last_result_line() {
        let console = "MSHARE-INIT uptime=1.25\n\
            noise MSHARE-RESULT status=1 module=failed uptime=1.5\n\
            MSHARE-RESULT status=3 module=loaded uptime=2.75\n\
            reboot: Restarting system\n";
        let result = guest_result(console).unwrap();
        assert_eq!(result, GuestResult { status: 3, module: ModuleState::Loaded, uptime: 2.75 });
        assert_eq!(init_uptime(console), Some(1.25));
    }

    /// What the console did to a result line in make test (2026-12-06): the kernel's
    /// console thread printed KUnit output into it. No parser can take that line, which is
    /// why the result travels on ttyS1, where the kernel never writes.
    #[test]
    fn a_result_line_the_kernel_printed_into_is_no_result() {
        assert_eq!(guest_result("[l2] MSHARE-RESULT status=7 module=loaded uptime=3.78    # speed: normal"), None);
    }

    #[test]
    fn a_truncated_result_line_is_no_result() {
        assert_eq!(guest_result("MSHARE-RESULT status=0 modu"), None);
        assert_eq!(guest_result("MSHARE-RESULT status=x module=loaded uptime=1"), None);
        assert_eq!(guest_result(""), None);
    }
}
