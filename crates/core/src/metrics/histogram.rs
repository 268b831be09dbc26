//! A mergeable log-scale histogram for time-to-completion percentiles.
//!
//! Bin `i` holds the values in `(γ^(i-1), γ^i]` with `γ = (1 + α) / (1 - α)`
//! and `α = 0.02`, and reports them as `2γ^i / (γ + 1)`. That representative
//! is within a relative `α` of every value in the bin, so a quantile read from
//! the histogram is within 2 % of the exact nearest-rank quantile (for
//! positive normal values; zero is kept exactly in its own count). The bin
//! boundaries are fixed, so two histograms merge by adding counts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The relative error bound of [`LogHistogram::quantile`].
pub const RELATIVE_ERROR: f64 = 0.02;

/// `γ`: the ratio between consecutive bin boundaries.
const GAMMA: f64 = (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR);

/// A histogram of non-negative values with log-scale bins of fixed
/// boundaries. Sparse: only bins that hold a value take space.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogHistogram {
    /// How many values were recorded.
    pub count: u64,
    /// How many of them were zero (or negative, recorded as zero).
    pub zeros: u64,
    /// Bin index → number of values in the bin.
    pub bins: BTreeMap<i32, u64>,
}

impl LogHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `value`. Non-finite values are ignored; values ≤ 0 count as
    /// zero (time-to-completion is never negative).
    pub fn record(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        self.count += 1;
        if value <= 0.0 {
            self.zeros += 1;
        } else {
            *self.bins.entry(bin_index(value)).or_insert(0) += 1;
        }
    }

    /// Adds the counts of `other`: the result is the histogram of both
    /// streams of values.
    pub fn merge(&mut self, other: &LogHistogram) {
        self.count += other.count;
        self.zeros += other.zeros;
        for (&i, &n) in &other.bins {
            *self.bins.entry(i).or_insert(0) += n;
        }
    }

    /// Whether no value was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `q`-quantile (`q` clamped to [0, 1]) by the nearest-rank method:
    /// the value of rank `max(1, ⌈q·n⌉)` among the `n` sorted values, within
    /// a relative [`RELATIVE_ERROR`]. 0.0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = self.zeros;
        if seen >= rank {
            return 0.0;
        }
        for (&i, &n) in &self.bins {
            seen += n;
            if seen >= rank {
                return bin_value(i);
            }
        }
        // Only reached if `count` disagrees with the bins (a hand-edited
        // deserialised value): answer with the largest bin.
        self.bins.keys().next_back().map_or(0.0, |&i| bin_value(i))
    }
}

/// The bin of a positive finite value: `⌈log_γ(value)⌉`.
fn bin_index(value: f64) -> i32 {
    // |ln(value)| ≤ 745 for positive f64, so the index fits easily in i32.
    (value.ln() / GAMMA.ln()).ceil() as i32
}

/// The representative of bin `i`: `2γ^i / (γ + 1)`, computed in log space so
/// that the top bins do not overflow before the scaling.
fn bin_value(i: i32) -> f64 {
    (f64::from(i) * GAMMA.ln() + (2.0 / (GAMMA + 1.0)).ln())
        .exp()
        .min(f64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        let n = sorted.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        sorted[rank - 1]
    }

    #[test]
    fn empty_histogram_reads_zero() {
        let h = LogHistogram::new();
        assert!(h.is_empty());
        assert_eq!(h.quantile(0.5), 0.0);
    }

    #[test]
    fn single_value_is_within_bound() {
        let mut h = LogHistogram::new();
        h.record(8.0);
        for q in [0.0, 0.5, 0.95, 1.0] {
            let v = h.quantile(q);
            assert!((v - 8.0).abs() <= 8.0 * RELATIVE_ERROR, "{v}");
        }
    }

    #[test]
    fn zeros_and_non_finite() {
        let mut h = LogHistogram::new();
        h.record(0.0);
        h.record(-3.0);
        h.record(f64::NAN);
        h.record(f64::INFINITY);
        h.record(10.0);
        assert_eq!(h.count, 3);
        assert_eq!(h.zeros, 2);
        assert_eq!(h.quantile(0.5), 0.0);
        assert!((h.quantile(1.0) - 10.0).abs() <= 10.0 * RELATIVE_ERROR);
    }

    #[test]
    fn extreme_values_stay_finite() {
        let mut h = LogHistogram::new();
        h.record(f64::MAX);
        h.record(f64::MIN_POSITIVE);
        assert!(h.quantile(1.0).is_finite());
        assert!(h.quantile(0.0) >= 0.0);
    }

    proptest! {
        #[test]
        fn quantile_within_documented_error(
            values in prop::collection::vec(
                prop_oneof![Just(0.0), 1e-3f64..1e7, 0.5f64..2.0], 1..200),
            q in 0.0f64..=1.0,
        ) {
            let mut h = LogHistogram::new();
            for &v in &values {
                h.record(v);
            }
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let exact = exact_quantile(&sorted, q);
            let est = h.quantile(q);
            // A hair above α for the rounding of ln/exp.
            prop_assert!((est - exact).abs() <= exact * RELATIVE_ERROR * (1.0 + 1e-9),
                "q={} exact={} est={}", q, exact, est);
        }

        #[test]
        fn merge_equals_recording_both(
            a in prop::collection::vec(0.0f64..1e5, 0..50),
            b in prop::collection::vec(0.0f64..1e5, 0..50),
        ) {
            let mut ha = LogHistogram::new();
            a.iter().for_each(|&v| ha.record(v));
            let mut hb = LogHistogram::new();
            b.iter().for_each(|&v| hb.record(v));
            let mut whole = LogHistogram::new();
            a.iter().chain(&b).for_each(|&v| whole.record(v));
            ha.merge(&hb);
            prop_assert_eq!(ha, whole);
        }
    }
}
