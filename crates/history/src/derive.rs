//! Helpers for the sample producer: per-second rates from the proxy's cumulative counters
//! (surviving counter resets when the proxy restarts) and response-time percentiles of one
//! interval from two snapshots of a cumulative histogram.
//!
//! Owns these conversions; pure (time is an argument). Must not read the proxy or the store.

use std::collections::HashMap;
use std::hash::Hash;

/// Turns cumulative counters into rates per second, one state per key.
#[derive(Debug, Clone, Default)]
pub struct RateMeter<K> {
    last: HashMap<K, (i64, u64)>,
}

impl<K: Eq + Hash> RateMeter<K> {
    /// A meter that has seen nothing.
    pub fn new() -> RateMeter<K> {
        RateMeter {
            last: HashMap::new(),
        }
    }

    /// The rate of `key` since the previous reading, `counter` read at `ts_ms`
    /// (milliseconds). `None` on the first reading, when time did not advance, and after a
    /// reset (the counter went down: the proxy restarted), which starts over from this
    /// reading rather than reporting a negative or huge rate.
    pub fn rate(&mut self, key: K, ts_ms: i64, counter: u64) -> Option<f64> {
        let prev = self.last.insert(key, (ts_ms, counter));
        let (t0, c0) = prev?;
        if ts_ms <= t0 || counter < c0 {
            return None;
        }
        Some((counter - c0) as f64 * 1000.0 / (ts_ms - t0) as f64)
    }

    /// Forgets keys not in `keep` (servers removed from the configuration).
    pub fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.last.retain(|k, _| keep(k));
    }
}

/// The `q` quantile (0 to 1) of the observations between two snapshots of a cumulative
/// histogram given as `(upper bound, cumulative count)` pairs in increasing bound order
/// (Prometheus `le` buckets; the last bound may be infinite). Interpolates linearly inside
/// the bucket, like Prometheus' `histogram_quantile`; a quantile in the infinite bucket is
/// the largest finite bound. `None` when the interval saw no observation or the snapshots do
/// not match (different buckets, or a reset).
pub fn interval_quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> Option<f64> {
    if before.len() != after.len() && !before.is_empty() {
        return None;
    }
    let mut delta = Vec::with_capacity(after.len());
    for (i, &(le, c)) in after.iter().enumerate() {
        let c0 = match before.get(i) {
            Some(&(le0, c0)) if le0 == le => c0,
            Some(_) => return None,
            None => 0,
        };
        delta.push((le, c.checked_sub(c0)?));
    }
    quantile(&delta, q)
}

/// The `q` quantile of a cumulative histogram (see [`interval_quantile`]).
pub fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total as f64;
    let mut lower_bound = 0.0;
    let mut lower_count = 0u64;
    for &(le, count) in buckets {
        if count as f64 >= rank && count > lower_count {
            if le.is_infinite() {
                return Some(lower_bound);
            }
            let within = (rank - lower_count as f64) / (count - lower_count) as f64;
            return Some(lower_bound + (le - lower_bound) * within.clamp(0.0, 1.0));
        }
        if le.is_finite() {
            lower_bound = le;
        }
        lower_count = count;
    }
    Some(lower_bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_skip_first_reading_and_resets() {
        let mut m = RateMeter::new();
        assert_eq!(m.rate("a", 0, 100), None);
        assert_eq!(m.rate("a", 10_000, 600), Some(50.0));
        assert_eq!(m.rate("a", 20_000, 5), None, "reset");
        assert_eq!(m.rate("a", 30_000, 105), Some(10.0));
        assert_eq!(m.rate("a", 30_000, 200), None, "no time passed");
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let h = [(0.1, 50), (0.5, 90), (1.0, 99), (f64::INFINITY, 100)];
        assert_eq!(quantile(&h, 0.5), Some(0.1));
        assert!((quantile(&h, 0.7).unwrap() - 0.3).abs() < 1e-9);
        assert_eq!(
            quantile(&h, 1.0),
            Some(1.0),
            "the infinite bucket gives the last bound"
        );
        let before = [(0.1, 40), (0.5, 80), (1.0, 89), (f64::INFINITY, 90)];
        // Between the snapshots: 10 observations, all at or below 0.1.
        assert!(interval_quantile(&before, &h, 0.99).unwrap() <= 0.1);
        assert_eq!(interval_quantile(&h, &h, 0.5), None, "nothing observed");
        assert_eq!(interval_quantile(&h, &before, 0.5), None, "a reset");
    }
}
