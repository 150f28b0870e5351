//! Synthetic utilisation series with a known truth: a linear trend, a yearly peak (a smooth
//! bump or a one-quarter plateau), a weekday pattern and seeded noise. For tests, the accuracy
//! benchmark and planning examples.
//!
//! Owns the generator and its truth (the noise-free daily peak, and the day it first reaches
//! a threshold). Must not be used by the running appliance.

use crate::day::{DAY_S, Day};
use crate::model::{Form, YEAR_DAYS};

/// The shape of the yearly peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// A raised-cosine bump of this half-width in days (45: spread over a quarter).
    Bump(f64),
    /// A plateau of about a quarter (91 days) with linear edges of this many days.
    Quarter(f64),
}

/// A series' description.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Synthetic {
    /// First day of history.
    pub start: Day,
    /// Days of history.
    pub days: i64,
    /// Trend level on `start`, utilisation.
    pub base: f64,
    /// Trend, utilisation per year.
    pub trend: f64,
    /// Size of the yearly peak: relative (0.3 = +30 %) when multiplicative, utilisation
    /// when additive.
    pub amplitude: f64,
    /// Day of the year (0-365) at the centre of the peak.
    pub peak_day: f64,
    /// The peak's shape.
    pub shape: Shape,
    /// How the peak combines with the trend.
    pub form: Form,
    /// Weekend dip, relative (0.2: Saturday and Sunday peaks 20 % lower).
    pub weekend: f64,
    /// Standard deviation of the daily peak noise, utilisation.
    pub noise: f64,
    /// Noise seed.
    pub seed: u64,
}

impl Synthetic {
    /// The seasonal factor on day `d` (0 off season, 1 at the top of the peak).
    fn season(&self, d: Day) -> f64 {
        let doy = (d.0 as f64).rem_euclid(YEAR_DAYS);
        let mut dist = (doy - self.peak_day).abs();
        dist = dist.min(YEAR_DAYS - dist);
        match self.shape {
            Shape::Bump(half) => {
                if dist >= half {
                    0.0
                } else {
                    0.5 * (1.0 + (std::f64::consts::PI * dist / half).cos())
                }
            }
            Shape::Quarter(edge) => {
                let half = 45.5;
                if dist <= half - edge / 2.0 {
                    1.0
                } else if dist >= half + edge / 2.0 {
                    0.0
                } else {
                    (half + edge / 2.0 - dist) / edge
                }
            }
        }
    }

    /// The noise-free daily peak on day `d`.
    pub fn truth(&self, d: Day) -> f64 {
        let level = self.base + self.trend * d.since(self.start) as f64 / YEAR_DAYS;
        let s = self.season(d);
        let week = if d.weekday() >= 5 {
            1.0 - self.weekend
        } else {
            1.0
        };
        match self.form {
            Form::Multiplicative => level * (1.0 + self.amplitude * s) * week,
            Form::Additive => (level + self.amplitude * s) * week,
        }
    }

    /// The day after the history: where a forecast starts.
    pub fn origin(&self) -> Day {
        self.start.plus(self.days)
    }

    /// The first day from the origin, within `horizon` days, on which the true daily peak
    /// reaches `threshold`.
    pub fn true_crossing(&self, threshold: f64, horizon: i64) -> Option<Day> {
        (0..horizon)
            .map(|i| self.origin().plus(i))
            .find(|&d| self.truth(d) >= threshold)
    }

    /// Whether the true daily peak reached `threshold` during the history.
    pub fn crossed_in_history(&self, threshold: f64) -> bool {
        (0..self.days).any(|i| self.truth(self.start.plus(i)) >= threshold)
    }

    /// One sample per day at the daily peak: `(unix seconds, utilisation)`.
    pub fn daily(&self) -> Vec<(i64, f64)> {
        let mut rng = Rng(self.seed);
        (0..self.days)
            .map(|i| {
                let d = self.start.plus(i);
                let v = (self.truth(d) + self.noise * rng.normal()).max(0.0);
                (d.start() + 15 * 3_600, v)
            })
            .collect()
    }

    /// Hourly samples: a diurnal curve peaking at 15:00 UTC, whose daily maximum is the
    /// truth plus noise.
    pub fn hourly(&self) -> Vec<(i64, f64)> {
        let mut rng = Rng(self.seed);
        let mut out = Vec::with_capacity(self.days as usize * 24);
        for i in 0..self.days {
            let d = self.start.plus(i);
            let peak = (self.truth(d) + self.noise * rng.normal()).max(0.0);
            for h in 0..24 {
                let shape = 0.55
                    + 0.45
                        * (0.5
                            + 0.5 * (2.0 * std::f64::consts::PI * (h as f64 - 15.0) / 24.0).cos());
                out.push((d.start() + h * DAY_S / 24, peak * shape));
            }
        }
        out
    }
}

/// A small seeded generator (splitmix64) with normal deviates (Box-Muller).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}
