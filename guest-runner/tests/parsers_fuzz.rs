//! The console parsers on mutated consoles: KTAP, the result line and the problem scan must
//! never panic, and a mutated KTAP run must never come out better than it went in.

use guest_runner::fuzz::{mutate, setup};
use guest_runner::{console, ktap};

const RUN: &str = "KTAP version 1\n1..2\n    KTAP version 1\n    # Subtest: a\n    1..2\n    ok 1 x\n    not ok 2 y\nnot ok 1 a\n    \
                   # Subtest: b\n    1..1\n    ok 1 z # SKIP no\nok 2 b\nMSHARE-RESULT status=3 module=loaded uptime=1.5\n";

#[test]
fn mutated_consoles_never_panic_and_a_failure_never_turns_into_a_pass() {
    let (mut rng, rounds) = setup();
    assert!(ktap::parse(RUN).verdict().is_err(), "the base run has a failing case");
    for _ in 0..rounds {
        let text = mutate(&mut rng, RUN);
        let report = ktap::parse(&text);
        let _ = console::kernel_problems(&text);
        let _ = console::guest_result(&text);
        // While the failing result line survives whole, the run cannot pass, whatever else
        // was lost around it.
        if text.lines().any(|l| l.trim_start() == "not ok 2 y") {
            assert!(report.verdict().is_err(), "a failing case passed in {text:?}");
        }
    }
}
