//! Slow start: the effective weight of a server that just came back up.
//!
//! Owns the pure ramp function. Must not read the clock: the caller passes how long the server
//! has been up (it remembers the instant of the `Down -> Up` transition, see
//! [`crate::ServerMonitor`]).
//!
//! Ramp (HAProxy `slowstart`): linear from `weight / ramp`-ish to `weight` over `ramp`, rounded
//! up and never below 1 while the configured weight is non-zero, so a recovering server always
//! receives a trickle of traffic from the first instant.

use std::time::Duration;

/// Effective weight of a server with configured `weight`, up for `since_up`, ramping over
/// `ramp` (zero disables the ramp). `since_up == None` means "up since load time": no ramp,
/// as HAProxy does not slow-start servers at startup.
pub fn effective_weight(weight: u32, since_up: Option<Duration>, ramp: Duration) -> u32 {
    let Some(since_up) = since_up else {
        return weight;
    };
    if weight == 0 || ramp.is_zero() || since_up >= ramp {
        return weight;
    }
    // u128 nanoseconds cannot overflow: weight <= u32::MAX, durations < 2^64 s.
    let num = u128::from(weight) * since_up.as_nanos();
    let den = ramp.as_nanos();
    let ramped = num.div_ceil(den);
    // ramped <= weight because since_up < ramp, so the conversion cannot fail.
    u32::try_from(ramped).unwrap_or(weight).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(weight: u32, since_up_ms: Option<u64>, ramp_ms: u64, expected: u32) {
        let got = effective_weight(
            weight,
            since_up_ms.map(Duration::from_millis),
            Duration::from_millis(ramp_ms),
        );
        assert_eq!(
            got, expected,
            "weight {weight} since_up {since_up_ms:?} ramp {ramp_ms}"
        );
    }

    #[test]
    fn ramp_values() {
        check(100, Some(0), 10_000, 1);
        check(100, Some(1), 10_000, 1);
        check(100, Some(1_000), 10_000, 10);
        check(100, Some(2_500), 10_000, 25);
        check(100, Some(5_000), 10_000, 50);
        check(100, Some(9_999), 10_000, 100);
        check(100, Some(10_000), 10_000, 100);
        check(100, Some(60_000), 10_000, 100);
        check(256, Some(5_000), 10_000, 128);
        check(3, Some(5_000), 10_000, 2);
    }

    #[test]
    fn no_ramp_cases() {
        check(100, None, 10_000, 100);
        check(100, Some(0), 0, 100);
        check(0, Some(5_000), 10_000, 0);
    }

    #[test]
    fn ramp_is_monotonic() {
        let mut last = 0;
        for ms in (0..=10_000).step_by(7) {
            let w = effective_weight(37, Some(Duration::from_millis(ms)), Duration::from_secs(10));
            assert!(w >= last && (1..=37).contains(&w));
            last = w;
        }
    }
}
