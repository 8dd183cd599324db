//! A figure over the runs of a benchmark case: its median and range, as the reports print
//! them.

/// One figure over the runs of a case.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Spread {
    /// The spread of `values`; `None` without any.
    pub fn of(mut values: Vec<f64>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 };
        Some(Self { median, min: values[0], max: values[n - 1], runs: n })
    }

    /// `median (min to max)`, or the one value.
    pub fn cell(&self) -> String {
        let f = |v: f64| if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") };
        if self.min == self.max {
            f(self.median)
        } else {
            format!("{} ({} to {})", f(self.median), f(self.min), f(self.max))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        let s = Spread::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
        assert_eq!(Spread::of(vec![1.0, 2.0]).unwrap().median, 1.5);
        assert_eq!(Spread::of(vec![]), None);
        assert_eq!(Spread::of(vec![4.0, 4.0]).unwrap().cell(), "4");
        assert_eq!(Spread::of(vec![1.0, 2.5]).unwrap().cell(), "1.8 (1 to 2.5)");
    }
}
