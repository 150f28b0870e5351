//! One series' value in one time slot, how finer slots consolidate into a coarser one, and
//! which of two values for the same slot is kept when they meet (a re-recorded sample, a
//! sample imported from the peer).
//!
//! Owns the consolidation and merge rules; pure. Must not know the byte layout or files.

use crate::series::Kind;

/// A slot's value: how many raw (10 s) samples it holds and their average, maximum and latest
/// value. For [`Kind::State`] series `avg` is the fraction of samples in state 0 and `max` the
/// worst state code (see [`Kind`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    /// Raw samples consolidated into this slot (1 for a 10 s slot, up to 360 for 1 h).
    pub count: u16,
    /// Mean of the samples (states: fraction of samples in state 0).
    pub avg: f32,
    /// Largest sample (states: worst state).
    pub max: f32,
    /// Latest sample.
    pub last: f32,
}

impl Cell {
    /// One raw sample of a series of kind `kind`.
    pub fn sample(kind: Kind, value: f32) -> Cell {
        let avg = match kind {
            Kind::Gauge => value,
            Kind::State => f32::from(u8::from(value == 0.0)),
        };
        Cell {
            count: 1,
            avg,
            max: value,
            last: value,
        }
    }

    /// Consolidates the present children of a slot, oldest first; `None` when none is present.
    /// The same rule for both kinds: count-weighted mean of `avg`, max of `max`, last `last`.
    pub fn consolidate(children: impl IntoIterator<Item = Cell>) -> Option<Cell> {
        let mut count: u32 = 0;
        let mut weighted = 0.0f64;
        let mut max = f32::NEG_INFINITY;
        let mut last = None;
        for c in children {
            count += u32::from(c.count);
            weighted += f64::from(c.avg) * f64::from(c.count);
            max = max.max(c.max);
            last = Some(c.last);
        }
        let last = last?;
        if count == 0 {
            return None;
        }
        Some(Cell {
            count: u16::try_from(count).unwrap_or(u16::MAX),
            avg: (weighted / f64::from(count)) as f32,
            max,
            last,
        })
    }

    /// Whether `incoming` replaces `self` when both claim the same slot: the one with more
    /// samples (more information) wins; on a tie the one with the larger `(max, avg, last)`,
    /// which is the pessimistic choice for capacity and health. The rule is a total order, so
    /// merging is idempotent and commutative: both nodes keep the same value whatever the order
    /// in which samples arrive, and importing a batch twice changes nothing.
    pub fn loses_to(&self, incoming: &Cell) -> bool {
        match incoming.count.cmp(&self.count) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => incoming.key() > self.key(),
        }
    }

    fn key(&self) -> (u32, u32, u32) {
        (
            total_key(self.max),
            total_key(self.avg),
            total_key(self.last),
        )
    }

    /// Whether every value is finite and the count is not zero.
    pub fn is_valid(&self) -> bool {
        self.count > 0 && self.avg.is_finite() && self.max.is_finite() && self.last.is_finite()
    }
}

/// Maps an f32 to a u32 whose order is the IEEE total order (negative below positive).
fn total_key(v: f32) -> u32 {
    let b = v.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consolidation_keeps_mean_peak_and_last() {
        let c = Cell::consolidate([1.0, 5.0, 3.0].map(|v| Cell::sample(Kind::Gauge, v))).unwrap();
        assert_eq!((c.count, c.avg, c.max, c.last), (3, 3.0, 5.0, 3.0));
        // Coarser from coarse: count-weighted.
        let a = Cell {
            count: 6,
            avg: 1.0,
            max: 2.0,
            last: 1.0,
        };
        let b = Cell {
            count: 2,
            avg: 5.0,
            max: 9.0,
            last: 4.0,
        };
        let c = Cell::consolidate([a, b]).unwrap();
        assert_eq!((c.count, c.avg, c.max, c.last), (8, 2.0, 9.0, 4.0));
        assert_eq!(Cell::consolidate([]), None);
    }

    #[test]
    fn states_consolidate_to_availability_and_worst() {
        let s = [0.0, 0.0, 3.0, 0.0].map(|v| Cell::sample(Kind::State, v));
        let c = Cell::consolidate(s).unwrap();
        assert_eq!((c.avg, c.max, c.last), (0.75, 3.0, 0.0));
    }

    #[test]
    fn merge_is_a_total_order() {
        let small = Cell::sample(Kind::Gauge, 1.0);
        let big = Cell::sample(Kind::Gauge, 2.0);
        assert!(small.loses_to(&big));
        assert!(!big.loses_to(&small));
        assert!(!big.loses_to(&big), "a value never loses to itself");
        let more = Cell {
            count: 2,
            avg: 0.5,
            max: 0.5,
            last: 0.5,
        };
        assert!(big.loses_to(&more), "more samples beat a larger value");
        assert!(Cell::sample(Kind::Gauge, -1.0).loses_to(&Cell::sample(Kind::Gauge, -0.5)));
    }
}
