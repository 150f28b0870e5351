//! Reconnect backoff with a cap, pure (no clock): the shell asks for the next delay.
//!
//! Owns the delay sequence only; must not sleep or count time itself.

use std::time::Duration;

/// First reconnect delay.
pub const INITIAL: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const CAP: Duration = Duration::from_secs(2);

/// Doubling delays from [`INITIAL`] to [`CAP`]; [`Backoff::reset`] after a good connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: INITIAL }
    }
}

impl Backoff {
    /// The delay to wait now; the following one doubles, up to [`CAP`].
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(CAP);
        d
    }

    /// Back to [`INITIAL`].
    pub fn reset(&mut self) {
        self.next = INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let seq: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seq, [100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_delay(), INITIAL);
    }
}
