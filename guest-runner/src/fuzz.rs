//! Bounded randomized testing without a fuzzing toolchain: a small reproducible PRNG, the
//! seed and round count from the environment, and text mutations. Used by the VMM's input
//! tests and the console parsers' tests.

/// xorshift64*: small, fast, reproducible.
pub struct Rng(pub u64);

impl Rng {
    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// The generator and round count: `MSHARE_FUZZ_SEED` and `MSHARE_FUZZ_ROUNDS` override the
/// defaults; the seed is printed so a failure can be replayed.
pub fn setup() -> (Rng, usize) {
    let seed = std::env::var("MSHARE_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6d73_6861_7265);
    let rounds = std::env::var("MSHARE_FUZZ_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    eprintln!("seed {seed}, {rounds} rounds (MSHARE_FUZZ_SEED / MSHARE_FUZZ_ROUNDS to replay or extend)");
    (Rng(seed | 1), rounds)
}

/// A mutation of `base`: bytes flipped, cut, duplicated or replaced by interesting tokens.
pub fn mutate(rng: &mut Rng, base: &str) -> String {
    const TOKENS: [&str; 14] = [
        "=",
        "\"",
        "[[vm]]",
        "[[region]]",
        "\n",
        ",",
        "{",
        "}",
        "99999999999999999999G",
        "-1",
        "ro",
        "${X}",
        "\u{fffd}",
        "0x",
    ];
    let mut bytes = base.as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(4) {
            0 if !bytes.is_empty() => {
                let end = (at + rng.below(8)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            1 => bytes.splice(at..at, TOKENS[rng.below(TOKENS.len())].bytes()).for_each(drop),
            2 if at < bytes.len() => bytes[at] = (rng.next_u64() & 0x7f) as u8,
            _ => bytes.truncate(at),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
