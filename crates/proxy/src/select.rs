//! Pure selection and health hysteresis, a stand-in until `tandem-balance` exposes its API.
//!
//! Owns: smooth weighted round robin over a candidate list, the rise/fall hysteresis
//! function, and the [`Pick`] result shape.
//! Does not own: which servers are candidates (up, not full, not excluded: see `queue`),
//! any atomics, clocks or IO. Swapping in `tandem-balance` replaces this module only.

/// Result of trying to pick a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// This server (index in its backend) was picked and a slot reserved on it.
    Picked(usize),
    /// Usable servers exist but all are at `max_connections`: queue.
    AllFull,
    /// No usable server (none configured, all down, or all already tried).
    NoServer,
}

/// Smooth weighted round robin (nginx's algorithm, HAProxy's `roundrobin` distribution).
///
/// `current` holds one running weight per server of the backend; `candidates` yields
/// `(index, weight)` of the servers eligible now. Returns the chosen index.
pub fn swrr(current: &mut [i64], candidates: impl Iterator<Item = (usize, u32)>) -> Option<usize> {
    let mut total: i64 = 0;
    let mut best: Option<usize> = None;
    for (i, w) in candidates {
        let w = i64::from(w);
        current[i] += w;
        total += w;
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let b = best?;
    current[b] -= total;
    Some(b)
}

/// Health hysteresis of one server: its state and the streak of contrary results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hysteresis {
    /// Whether the server is considered up.
    pub up: bool,
    /// Consecutive probe results that disagree with `up`.
    pub streak: u32,
}

impl Hysteresis {
    /// A server that starts up (HAProxy's default: up until `fall` failures).
    pub const UP: Hysteresis = Hysteresis {
        up: true,
        streak: 0,
    };
}

/// Feeds one probe result; returns the new state and whether `up` flipped.
pub fn observe(h: Hysteresis, success: bool, rise: u32, fall: u32) -> (Hysteresis, bool) {
    if success == h.up {
        return (
            Hysteresis {
                up: h.up,
                streak: 0,
            },
            false,
        );
    }
    let streak = h.streak + 1;
    let needed = if h.up { fall } else { rise };
    if streak >= needed {
        (
            Hysteresis {
                up: !h.up,
                streak: 0,
            },
            true,
        )
    } else {
        (Hysteresis { up: h.up, streak }, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(h: Hysteresis, results: &str, rise: u32, fall: u32) -> (bool, usize) {
        let mut h = h;
        let mut flips = 0;
        for c in results.chars() {
            let (n, f) = observe(h, c == '+', rise, fall);
            h = n;
            flips += usize::from(f);
        }
        (h.up, flips)
    }

    /// (start, results: `+` success / `-` failure, rise, fall, (ends up, flips)).
    type Case = (Hysteresis, &'static str, u32, u32, (bool, usize));

    #[test]
    fn hysteresis_table() {
        let down = Hysteresis {
            up: false,
            streak: 0,
        };
        let cases: &[Case] = &[
            (Hysteresis::UP, "---", 2, 3, (false, 1)),
            (Hysteresis::UP, "--+--", 2, 3, (true, 0)),
            (Hysteresis::UP, "--", 2, 3, (true, 0)),
            (down, "+", 2, 3, (false, 0)),
            (down, "++", 2, 3, (true, 1)),
            (down, "+-+", 2, 3, (false, 0)),
            (Hysteresis::UP, "---++", 2, 3, (true, 2)),
            (Hysteresis::UP, "-", 1, 1, (false, 1)),
        ];
        for &(h, seq, rise, fall, want) in cases {
            assert_eq!(
                run(h, seq, rise, fall),
                want,
                "{seq} rise={rise} fall={fall}"
            );
        }
    }

    #[test]
    fn swrr_is_smooth_and_weighted() {
        let mut cur = vec![0i64; 3];
        let weights = [5u32, 1, 1];
        let picks: Vec<usize> = (0..7)
            .map(|_| swrr(&mut cur, weights.iter().copied().enumerate()).expect("candidates"))
            .collect();
        // nginx's reference sequence for {a:5, b:1, c:1}.
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn swrr_without_candidates() {
        let mut cur = vec![0i64; 2];
        assert_eq!(swrr(&mut cur, std::iter::empty()), None);
    }
}
