//! KTAP, the test output format of KUnit, as it appears on a guest console.
//!
//! Console lines may carry a printk timestamp (`[    1.234567] `); nesting is by four
//! spaces per level. The parser builds the test tree and counts the leaves, so a failing
//! case, a suite that stopped before its plan was complete, or a run cut off in the middle
//! all show as failures.

use std::fmt;

/// How one test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `ok`
    Pass,
    /// `not ok`
    Fail,
    /// `ok ... # SKIP`
    Skip,
}

/// A test, a suite or a parameterised case, with its subtests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Test {
    /// Name from the result line (or from `# Subtest:` while still open).
    pub name: String,
    /// `None` while the test has not printed its result.
    pub outcome: Option<Outcome>,
    /// The `1..N` plan of its subtests, if it printed one.
    pub plan: Option<usize>,
    /// Subtests in the order they finished.
    pub subtests: Vec<Test>,
}

/// Leaf counts of a KTAP run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Cases skipped.
    pub skipped: usize,
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed, {} skipped", self.passed, self.failed, self.skipped)
    }
}

/// Every KTAP result found on a console: the top-level tests are the suites.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// Top-level tests (KUnit suites).
    pub suites: Vec<Test>,
    /// Whether any `KTAP version` header was seen at all.
    pub seen_header: bool,
    /// Problems with the structure: unfinished tests, plans not met.
    pub incomplete: Vec<String>,
}

impl Test {
    fn count(&self, totals: &mut Totals) {
        if self.subtests.is_empty() {
            match self.outcome {
                Some(Outcome::Pass) => totals.passed += 1,
                Some(Outcome::Fail) => totals.failed += 1,
                Some(Outcome::Skip) => totals.skipped += 1,
                None => {}
            }
        }
        for t in &self.subtests {
            t.count(totals);
        }
    }

    fn failures(&self, path: &str, out: &mut Vec<String>) {
        let path = if path.is_empty() { self.name.clone() } else { format!("{path}.{}", self.name) };
        if self.outcome == Some(Outcome::Fail) && self.subtests.iter().all(|t| t.outcome != Some(Outcome::Fail)) {
            out.push(path.clone());
        }
        for t in &self.subtests {
            t.failures(&path, out);
        }
    }
}

impl Report {
    /// Leaf counts over all suites.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for s in &self.suites {
            s.count(&mut totals);
        }
        totals
    }

    /// Dotted paths of the failed tests (the deepest failing one of each branch).
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.suites {
            s.failures("", &mut out);
        }
        out
    }

    /// The suite of that name, if it reported.
    pub fn suite(&self, name: &str) -> Option<&Test> {
        self.suites.iter().find(|s| s.name == name)
    }

    /// `Ok(totals)` when KTAP was seen, nothing failed, nothing was cut off and at least one
    /// case ran; otherwise a one-paragraph explanation.
    pub fn verdict(&self) -> Result<Totals, String> {
        let totals = self.totals();
        let mut problems = Vec::new();
        if !self.seen_header {
            problems.push("no KTAP output on the console".to_owned());
        }
        for f in self.failures() {
            problems.push(format!("failed: {f}"));
        }
        problems.extend(self.incomplete.iter().cloned());
        if self.seen_header && totals.passed + totals.failed + totals.skipped == 0 {
            problems.push("KTAP header but no test case ran".to_owned());
        }
        if problems.is_empty() {
            Ok(totals)
        } else {
            Err(format!("{totals}; {}", problems.join("; ")))
        }
    }
}

/// Strips a printk timestamp and returns (nesting depth, content).
fn split_line(raw: &str) -> (usize, &str) {
    let mut line = raw.trim_end_matches(['\r', '\n']);
    if line.starts_with('[') {
        if let Some(end) = line.find("] ") {
            line = &line[end + 2..];
        }
    }
    let indent = line.len() - line.trim_start_matches(' ').len();
    (indent / 4, line.trim_start())
}

/// Parses `ok 3 name # SKIP why` / `not ok 3 name`.
fn parse_result(content: &str) -> Option<(Outcome, String)> {
    let (ok, rest) = if let Some(rest) = content.strip_prefix("ok ") {
        (true, rest)
    } else {
        (false, content.strip_prefix("not ok ")?)
    };
    let (number, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    number.parse::<usize>().ok()?;
    let (name, directive) =
        rest.split_once(" # ").or_else(|| rest.strip_prefix("# ").map(|d| ("", d))).unwrap_or((rest, ""));
    let outcome = if directive.trim_start().to_ascii_uppercase().starts_with("SKIP") {
        Outcome::Skip
    } else if ok {
        Outcome::Pass
    } else {
        Outcome::Fail
    };
    Some((outcome, name.trim().to_owned()))
}

/// Parses every KTAP line of a console log.
pub fn parse(console: &str) -> Report {
    let mut report = Report::default();
    // open[d] is the test whose subtests print at depth d; open[0] collects the suites.
    let mut open: Vec<Test> = vec![Test::default()];
    // A console may hold several top-level KTAP documents (boot, then each module load):
    // each one's plan is checked against the suites it reported.
    let mut document = (None::<usize>, 0usize);
    let close_document = |document: &mut (Option<usize>, usize), report: &mut Report| {
        if let (Some(plan), reported) = *document {
            if reported < plan {
                report.incomplete.push(format!("a KTAP run planned {plan} suites but reported {reported}"));
            }
        }
        *document = (None, 0);
    };

    for raw in console.lines() {
        let (depth, content) = split_line(raw);
        let starts_test = content.starts_with("KTAP version") || content.starts_with("# Subtest:");
        if content.starts_with("KTAP version") && depth == 0 {
            report.seen_header = true;
            close_document(&mut document, &mut report);
        }
        if starts_test && depth > 0 {
            while open.len() <= depth {
                open.push(Test::default());
            }
            if let Some(name) = content.strip_prefix("# Subtest:") {
                open[depth].name = name.trim().to_owned();
            }
            report.seen_header = true;
            continue;
        }
        let is_plan = content.starts_with("1..");
        if !is_plan && parse_result(content).is_none() {
            continue;
        }
        // A plan or result deeper than any header opened (a header lost on the console):
        // count it in an unnamed test, which the end reports as never finished.
        while open.len() <= depth {
            open.push(Test::default());
        }
        if let Some(plan) = content.strip_prefix("1..") {
            if let Ok(n) = plan.trim().parse() {
                open[depth].plan = Some(n);
                if depth == 0 {
                    document.0 = Some(n);
                }
            }
            continue;
        }
        let Some((outcome, name)) = parse_result(content) else {
            continue;
        };
        // A result at depth d closes any deeper open test: the one at d + 1 is this result's
        // own subtests; anything deeper was cut off.
        while open.len() > depth + 2 {
            let cut = open.pop().unwrap_or_default();
            report.incomplete.push(format!("test '{}' never printed its result", cut.name));
        }
        let mut test = if open.len() == depth + 2 { open.pop().unwrap_or_default() } else { Test::default() };
        test.name = name;
        test.outcome = Some(outcome);
        if let Some(plan) = test.plan {
            if test.subtests.len() < plan && outcome != Outcome::Skip {
                report.incomplete.push(format!(
                    "'{}' planned {plan} subtests but reported {}",
                    test.name,
                    test.subtests.len()
                ));
            }
        }
        open[depth].subtests.push(test);
        if depth == 0 {
            document.1 += 1;
        }
    }
    close_document(&mut document, &mut report);
    while open.len() > 1 {
        let cut = open.pop().unwrap_or_default();
        let name = if cut.name.is_empty() { "(unnamed)".to_owned() } else { cut.name };
        report.incomplete.push(format!("test '{name}' never printed its result (run cut off?)"));
    }
    report.suites = open.pop().map(|root| root.subtests).unwrap_or_default();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSING: &str = "\
[    0.500000] KTAP version 1
[    0.500001] 1..1
[    0.500002]     KTAP version 1
[    0.500003]     # Subtest: mshare_granule
[    0.500004]     # module: mshare
[    0.500005]     1..2
[    0.500006]     ok 1 rounds_up_to_whole_granules
[    0.500007]     ok 2 rejects_empty_and_overflowing_sizes
[    0.500008] # mshare_granule: pass:2 fail:0 skip:0 total:2
[    0.500009] # Totals: pass:2 fail:0 skip:0 total:2
[    0.500010] ok 1 mshare_granule
";

    #[test]
    fn passing_run() {
        let report = parse(PASSING);
        assert_eq!(report.verdict(), Ok(Totals { passed: 2, failed: 0, skipped: 0 }));
        let suite = report.suite("mshare_granule").unwrap();
        assert_eq!(suite.plan, Some(2));
        assert_eq!(suite.subtests[1].name, "rejects_empty_and_overflowing_sizes");
    }

    #[test]
    fn a_failing_case_fails_the_run() {
        let console = PASSING
            .replace("    ok 2 rejects", "    not ok 2 rejects")
            .replace("ok 1 mshare_granule", "not ok 1 mshare_granule");
        let report = parse(&console);
        assert_eq!(report.totals(), Totals { passed: 1, failed: 1, skipped: 0 });
        assert_eq!(report.failures(), vec!["mshare_granule.rejects_empty_and_overflowing_sizes"]);
        assert!(report.verdict().unwrap_err().contains("failed: mshare_granule.rejects"));
    }

    #[test]
    fn skips_are_counted_but_do_not_fail() {
        let console =
            "KTAP version 1\n1..1\n    # Subtest: s\n    1..2\n    ok 1 a\n    ok 2 b # SKIP no hugepages\nok 1 s\n";
        assert_eq!(parse(console).verdict(), Ok(Totals { passed: 1, failed: 0, skipped: 1 }));
    }

    #[test]
    fn a_run_cut_off_mid_suite_fails() {
        let cut = PASSING.lines().take(7).collect::<Vec<_>>().join("\n");
        let verdict = parse(&cut).verdict().unwrap_err();
        assert!(verdict.contains("mshare_granule' never printed its result"), "{verdict}");
    }

    #[test]
    fn a_run_that_stops_between_suites_fails() {
        let two_planned = PASSING.replace("[    0.500001] 1..1", "[    0.500001] 1..2");
        let verdict = parse(&two_planned).verdict().unwrap_err();
        assert!(verdict.contains("a KTAP run planned 2 suites but reported 1"), "{verdict}");
        // Two complete documents (boot, then a module load) are fine.
        assert!(parse(&format!("{PASSING}{PASSING}")).verdict().is_ok());
    }

    #[test]
    fn a_result_whose_header_was_lost_still_fails_the_run() {
        let console = "KTAP version 1\n1..1\n    1..1\n    not ok 1 y\n";
        assert!(parse(console).verdict().is_err());
    }

    #[test]
    fn a_suite_short_of_its_plan_fails() {
        let short = PASSING.replace("[    0.500007]     ok 2 rejects_empty_and_overflowing_sizes\n", "");
        let verdict = parse(&short).verdict().unwrap_err();
        assert!(verdict.contains("planned 2 subtests but reported 1"), "{verdict}");
    }

    #[test]
    fn no_ktap_at_all_fails() {
        assert_eq!(
            parse("Linux version 7.3\nreboot: Restarting system\n").verdict().unwrap_err(),
            "0 passed, 0 failed, 0 skipped; no KTAP output on the console"
        );
    }

    #[test]
    fn parameterised_cases_count_as_leaves() {
        let console = "KTAP version 1\n1..1\n    # Subtest: s\n    1..1\n        KTAP version 1\n        # Subtest: p\n        ok 1 p=1\n        not ok 2 p=2\n    not ok 1 p\nnot ok 1 s\n";
        let report = parse(console);
        assert_eq!(report.totals(), Totals { passed: 1, failed: 1, skipped: 0 });
        assert_eq!(report.failures(), vec!["s.p.p=2"]);
    }
}
