//! What the database benchmarks share: Zipfian key choice and latency percentiles.

use crate::rng::Rng;
use std::time::{Duration, Instant};

/// Zipfian ranks over `n` items (Gray et al., "Quickly generating billion-record synthetic
/// databases"; YCSB's generator), hottest first.
pub struct Zipf {
    n: f64,
    theta: f64,
    alpha: f64,
    eta: f64,
    zeta_n: f64,
}

impl Zipf {
    /// Ranks below `n` (> 1), skewed by `theta` (in (0, 1); YCSB's 0.99 is the usual).
    pub fn new(n: usize, theta: f64) -> Self {
        let zeta_n = zeta(n, theta);
        let zeta_2 = zeta(2, theta);
        let n_f = n as f64;
        Self {
            n: n_f,
            theta,
            alpha: 1.0 / (1.0 - theta),
            eta: (1.0 - (2.0 / n_f).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n),
            zeta_n,
        }
    }

    /// The next rank (0 is the hottest).
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        ((self.n * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as usize).min(self.n as usize - 1)
    }
}

/// Terms summed exactly before [`zeta`] switches to its closed form.
const ZETA_EXACT: usize = 1 << 16;

/// The generalized harmonic number: the sum of 1 / i^theta for i in 1..=n. Exact up to
/// [`ZETA_EXACT`] terms; beyond, the Euler-Maclaurin tail (integral, end-point and first
/// derivative terms), whose error there is below 1e-15 relative: a reader of a database
/// of millions of keys would otherwise spend seconds of an emulated CPU on the sum.
pub fn zeta(n: usize, theta: f64) -> f64 {
    let exact = n.min(ZETA_EXACT);
    let head = (1..=exact).map(|i| (i as f64).powf(-theta)).sum::<f64>();
    if n <= ZETA_EXACT {
        return head;
    }
    let (a, b) = (exact as f64, n as f64);
    let f = |x: f64| x.powf(-theta);
    let derivative = |x: f64| -theta * x.powf(-theta - 1.0);
    let integral = (b.powf(1.0 - theta) - a.powf(1.0 - theta)) / (1.0 - theta);
    head + integral + (f(b) - f(a)) / 2.0 + (derivative(b) - derivative(a)) / 12.0
}

/// Spreads ranks over `n` items, as a hash of the key would: the hottest items are not
/// neighbours.
pub fn scatter(rank: usize, n: usize) -> usize {
    (rank.wrapping_mul(0x9e37_79b1) ^ (rank >> 7)) % n
}

/// The monotonic clock's step in nanoseconds, as observed: the smallest advance between
/// two readings. `clock_getres` would give the timer tick (10 ms without high-resolution
/// timers) even where the clocksource is the TSC; a guest whose clocksource is the
/// jiffies (QEMU TCG without a known TSC rate) really steps by 10 ms, too coarse for an
/// operation.
pub fn clock_resolution_ns() -> u64 {
    let mut step = u64::MAX;
    // The smallest of many: a reading preempted in between only makes one sample larger.
    for _ in 0..64 {
        let first = Instant::now();
        let mut now = Instant::now();
        while now == first && first.elapsed() < Duration::from_millis(50) {
            now = Instant::now();
        }
        step = step.min(now.duration_since(first).as_nanos() as u64);
    }
    step
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for all processes of a guest, so that
/// figures from several can be put on one time line (an `Instant` cannot leave its process).
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is ours to write; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec as u64)
}

/// Per-operation latencies in nanoseconds (the first million kept).
#[derive(Default)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    const KEPT: usize = 1 << 20;

    pub fn new() -> Self {
        Self(Vec::with_capacity(Self::KEPT))
    }

    pub fn record(&mut self, nanos: u128) {
        if self.0.len() < Self::KEPT {
            self.0.push(nanos.min(u128::from(u32::MAX)) as u32);
        }
    }

    /// The `q` quantile (0..=1) in nanoseconds; 0 with nothing recorded.
    pub fn quantile(&mut self, q: f64) -> u64 {
        self.0.sort_unstable();
        let at = ((self.0.len() as f64 * q) as usize).min(self.0.len().saturating_sub(1));
        self.0.get(at).copied().map_or(0, u64::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeta_closed_form_matches_the_sum() {
        for n in [ZETA_EXACT + 1, 1 << 20, 3_000_001] {
            let sum = (1..=n).map(|i| (i as f64).powf(-0.99)).sum::<f64>();
            let closed = zeta(n, 0.99);
            assert!(((closed - sum) / sum).abs() < 1e-12, "n={n}: {closed} vs {sum}");
        }
    }

    #[test]
    fn zipf_ranks_are_skewed_and_in_range() {
        let (zipf, mut rng) = (Zipf::new(1000, 0.99), Rng::new(3));
        let mut hottest = 0;
        for _ in 0..10_000 {
            let rank = zipf.sample(&mut rng);
            assert!(rank < 1000);
            hottest += usize::from(rank == 0);
        }
        // Rank 0's share is 1 / zeta(1000) at theta 0.99, about 13 %.
        assert!((800..2000).contains(&hottest), "rank 0 drawn {hottest} times in 10,000");
        assert!((0..1000).all(|r| scatter(r, 1000) < 1000));
    }

    #[test]
    fn quantiles_come_from_the_sorted_samples() {
        let mut l = Latencies::new();
        assert_eq!(l.quantile(0.5), 0);
        (1..=100).rev().for_each(|n| l.record(n));
        assert_eq!((l.quantile(0.5), l.quantile(0.99)), (51, 100));
    }
}
