//! The router's timers: a closed enum and a fixed-size table of deadlines (quinn `TimerTable` idea).
//!
//! Owns [`Timer`] and [`TimerTable`].
//! Must not decide what a timer means; [`crate::Router::handle_timeout`] does.

use crate::time::Instant;

/// The timers of RFC 5798 §6.2. At most one is armed at a time (see `LIFECYCLE.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Master_Down_Timer: armed in Backup; on expiry the backup declares the master dead.
    MasterDown,
    /// Adver_Timer: armed in Master; on expiry the master sends an advert and re-arms it.
    Adver,
}

impl Timer {
    /// Every timer, in the order expired timers are handled.
    pub const ALL: [Timer; 2] = [Timer::MasterDown, Timer::Adver];
}

/// Deadline per [`Timer`]; `None` means stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimerTable {
    deadlines: [Option<Instant>; Timer::ALL.len()],
}

impl TimerTable {
    /// Arms (or re-arms) `timer` to fire at `at`.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    /// Stops `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    /// Stops every timer.
    pub fn stop_all(&mut self) {
        self.deadlines = Default::default();
    }

    /// Deadline of `timer`, if armed.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer as usize]
    }

    /// Earliest armed deadline.
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Stops and returns the first timer (in [`Timer::ALL`] order) whose deadline is `<= now`.
    pub fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        let timer = Timer::ALL
            .into_iter()
            .find(|t| self.get(*t).is_some_and(|at| at <= now))?;
        self.stop(timer);
        Some(timer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_tracks_earliest_and_expiry() {
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Adver, Instant::from_nanos(20));
        t.set(Timer::MasterDown, Instant::from_nanos(10));
        assert_eq!(t.next(), Some(Instant::from_nanos(10)));
        assert_eq!(t.take_expired(Instant::from_nanos(9)), None);
        assert_eq!(
            t.take_expired(Instant::from_nanos(25)),
            Some(Timer::MasterDown)
        );
        assert_eq!(t.take_expired(Instant::from_nanos(25)), Some(Timer::Adver));
        assert_eq!(t.take_expired(Instant::from_nanos(25)), None);
        t.set(Timer::Adver, Instant::from_nanos(1));
        t.stop_all();
        assert_eq!(t.next(), None);
    }
}
