//! A guest program's checks, one line each on standard output: `PROGRAM: ok N - what`, or
//! `PROGRAM: not ok N - what: why`, then `PROGRAM: N checks, F failed`, which the host's
//! tests read.

use std::process::ExitCode;

/// The checks of one program run.
pub struct Suite {
    program: &'static str,
    count: usize,
    failed: usize,
}

impl Suite {
    /// No checks yet; `program` starts every line.
    pub fn new(program: &'static str) -> Self {
        Self { program, count: 0, failed: 0 }
    }

    /// Prints check `name`'s outcome.
    pub fn check(&mut self, name: &str, result: Result<(), String>) {
        self.count += 1;
        match result {
            Ok(()) => println!("{}: ok {} - {name}", self.program, self.count),
            Err(why) => {
                self.failed += 1;
                println!("{}: not ok {} - {name}: {why}", self.program, self.count);
            }
        }
    }

    /// How many checks failed so far.
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// Prints the summary; the exit status says whether every check passed.
    pub fn finish(&self) -> ExitCode {
        println!("{}: {} checks, {} failed", self.program, self.count, self.failed);
        if self.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// `Ok` if `got` is `want`, else both, for a check's message.
pub fn eq<T: PartialEq + std::fmt::Debug>(got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("got {got:?}, want {want:?}"))
    }
}
