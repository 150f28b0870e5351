//! `tandem-forecast`: the capacity model of the appliance.
//!
//! Owns two things, both pure (no clock: `now` is an argument; no IO):
//! - [`capacity`]: what a backend and its servers can carry, their utilisation, the
//!   active/passive rule (utilisation against what ONE node carries after a failover) and the
//!   servers needed under a threshold;
//! - [`forecast()`]: from a utilisation history at any resolution, the date its daily peak is
//!   expected to cross the threshold, with an uncertainty band, the next seasonal peak, and a
//!   plain "too little history" when there is not enough to say anything.
//!
//! Must not read the history store, the configuration or the clock: the supervisor queries
//! `tandem-history` (hourly maxima of a backend's sessions divided by its current capacity),
//! and `tandem forecast` reads a CSV file ([`csv`]); both call [`forecast()`] and print
//! [`Forecast::render`].
//!
//! # Method
//!
//! 1. Reduce to daily peaks (the maximum of each UTC day); keep the last 3 years.
//! 2. Fewer than [`MIN_DAYS`] days with data, or nothing in the last 30 days: no forecast.
//! 3. With a year or more covering at least 90 % of the year's weeks: trend, yearly profile
//!    and weekday effect, multiplicative or additive, whichever fits better ([`model`]).
//!    With less: trend and weekday effect only, and the answer says so.
//! 4. Crossing: the first day from the origin, within [`HORIZON_DAYS`], whose expected peak is
//!    at or above the threshold. Band: the first days where the expected peak plus or minus
//!    [`BAND_Z`] standard deviations (residual noise, trend and profile uncertainty) is.
//! 5. Peak: the highest expected daily peak within the horizon, with the same band.

pub mod capacity;
pub mod csv;
pub mod day;
pub mod model;
pub mod synthetic;

use std::fmt::Write as _;

use serde::Serialize;

pub use crate::day::Day;
pub use crate::model::{Form, daily_peaks};

/// `capacity.threshold` default: utilisation the peak should stay under (70 %).
pub const DEFAULT_THRESHOLD: f64 = 0.70;
/// `capacity.warn_ahead` default, days: alarm when the crossing is nearer than this.
pub const DEFAULT_WARN_AHEAD_DAYS: i64 = 60;
/// How far ahead the forecast looks, days.
pub const HORIZON_DAYS: i64 = 365;
/// Fewest days with data for any forecast.
pub const MIN_DAYS: usize = 30;
/// Shortest history for a yearly seasonal model, days.
pub const SEASONAL_DAYS: i64 = 365;
/// Fraction of the year's weeks the history must cover for a seasonal model.
pub const MIN_COVERAGE: f64 = 0.9;
/// History used for the fit, days (older data describes another farm).
pub const FIT_WINDOW_DAYS: i64 = 3 * 365 + 1;
/// Half-width of the band in standard deviations: 1.2816 gives an 80 % band.
pub const BAND_Z: f64 = 1.2816;
/// Newest data older than this many days before the origin: no forecast.
pub const STALE_DAYS: i64 = 30;

/// What a forecast is asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Utilisation to stay under (`capacity.threshold`), 0 to 1.
    pub threshold: f64,
    /// Days ahead to look.
    pub horizon_days: i64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            threshold: DEFAULT_THRESHOLD,
            horizon_days: HORIZON_DAYS,
        }
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A forecast.
    Forecast(Forecast),
    /// Not enough history to say anything.
    TooLittle(TooLittle),
}

impl Outcome {
    /// The forecast, if there is one.
    pub fn forecast(&self) -> Option<&Forecast> {
        match self {
            Outcome::Forecast(f) => Some(f),
            Outcome::TooLittle(_) => None,
        }
    }

    /// The operator's text (see [`Forecast::render`]).
    pub fn render(&self) -> String {
        match self {
            Outcome::Forecast(f) => f.render(),
            Outcome::TooLittle(t) => format!("{t}\n"),
        }
    }
}

/// Why there is no forecast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TooLittle {
    /// Days with data.
    pub days: usize,
    /// First day with data.
    pub first: Option<Day>,
    /// Last day with data.
    pub last: Option<Day>,
    /// The sentence for the operator.
    pub reason: String,
}

impl std::fmt::Display for TooLittle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Which model was fitted.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Model {
    /// Trend, yearly profile and weekday effect.
    Seasonal {
        /// How the seasonality combines with the trend.
        form: Form,
    },
    /// Trend and weekday effect: not enough history for a yearly profile.
    TrendOnly {
        /// Why, for the operator.
        reason: String,
    },
}

/// When the expected peak crosses the threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Crossing {
    /// On `day`; the band runs from `earliest` to `latest` (`None`: beyond the horizon).
    At {
        /// First day the expected peak is at or above the threshold.
        day: Day,
        /// First day the band's upper edge is.
        earliest: Day,
        /// First day the band's lower edge is, if within the horizon.
        latest: Option<Day>,
        /// Already at or above on the first day.
        already: bool,
    },
    /// Not within the horizon; the band's upper edge may cross from `earliest`.
    None {
        /// First day the band's upper edge is at or above the threshold, if any.
        earliest: Option<Day>,
    },
}

/// The highest expected daily peak within the horizon.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Peak {
    /// Its day.
    pub day: Day,
    /// Expected utilisation.
    pub value: f64,
    /// Lower edge of the band.
    pub low: f64,
    /// Upper edge of the band.
    pub high: f64,
}

/// A forecast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    /// First forecast day.
    pub origin: Day,
    /// The threshold.
    pub threshold: f64,
    /// First day with data used.
    pub first: Day,
    /// Last day with data used.
    pub last: Day,
    /// Days with data used.
    pub days: usize,
    /// The model.
    pub model: Model,
    /// Trend, utilisation per year.
    pub trend_per_year: f64,
    /// Standard deviation of the daily peaks around the model.
    pub sigma: f64,
    /// Expected peak on the origin day.
    pub today: f64,
    /// The crossing.
    pub crossing: Crossing,
    /// The highest expected peak within the horizon.
    pub peak: Peak,
    /// Days looked ahead.
    pub horizon_days: i64,
}

impl Forecast {
    /// Whether the model has a yearly profile (so [`Forecast::peak`] is a seasonal peak).
    pub fn seasonal(&self) -> bool {
        matches!(self.model, Model::Seasonal { .. })
    }

    /// Days from the origin to the crossing.
    pub fn days_to_crossing(&self) -> Option<i64> {
        match &self.crossing {
            Crossing::At { day, .. } => Some(day.since(self.origin)),
            Crossing::None { .. } => None,
        }
    }

    /// The alarm text when the crossing is less than `warn_ahead_days` away (or already
    /// reached), else `None`.
    pub fn alarm(&self, warn_ahead_days: i64) -> Option<String> {
        let pct = self.threshold * 100.0;
        match &self.crossing {
            Crossing::At { already: true, .. } => Some(format!(
                "peak utilisation is at or above {pct:.0}% (expected {:.2} today)",
                self.today
            )),
            Crossing::At {
                day,
                earliest,
                latest,
                ..
            } if day.since(self.origin) < warn_ahead_days => Some(format!(
                "peak utilisation expected to reach {pct:.0}% on {day}, in {} days (band {earliest} to {})",
                day.since(self.origin),
                latest.map_or_else(|| "beyond a year".to_owned(), |d| d.to_string())
            )),
            _ => None,
        }
    }

    /// How many servers like the current `servers` keep the peak under the threshold through
    /// the horizon: for the expected peak and for the band's upper edge.
    pub fn servers_needed(&self, servers: u32) -> (u32, u32) {
        (
            capacity::servers_needed(servers, self.peak.value, self.threshold),
            capacity::servers_needed(servers, self.peak.high, self.threshold),
        )
    }

    fn horizon_text(&self) -> String {
        if self.horizon_days == HORIZON_DAYS {
            "1 year".to_owned()
        } else {
            format!("{} days", self.horizon_days)
        }
    }

    /// The operator's text: a `history:` line, then `crossing: YYYY-MM-DD` and `band: ...`
    /// (or `crossing: none within 1 year`), then `peak: YYYY-MM-DD VALUE (LOW to HIGH)`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let model = match &self.model {
            Model::Seasonal { form } => format!(
                "trend, yearly and weekly seasonality ({})",
                match form {
                    Form::Multiplicative => "proportional",
                    Form::Additive => "additive",
                }
            ),
            Model::TrendOnly { .. } => "trend and weekly seasonality".to_owned(),
        };
        // Writing to a String cannot fail; the results are ignored on purpose.
        let _ = writeln!(
            out,
            "history: {} to {}, {} days with data; model: {model}; trend {:+.3}/year",
            self.first, self.last, self.days, self.trend_per_year
        );
        if let Model::TrendOnly { reason } = &self.model {
            let _ = writeln!(out, "note: {reason}");
        }
        let pct = (BAND_Z_PCT * 100.0).round();
        match &self.crossing {
            Crossing::At {
                day,
                earliest,
                latest,
                already,
            } => {
                if *already {
                    let _ = writeln!(
                        out,
                        "crossing: {day} (already at or above {:.0}%)",
                        self.threshold * 100.0
                    );
                } else {
                    let _ = writeln!(out, "crossing: {day}");
                }
                let latest = latest.map_or_else(
                    || format!("after {}", self.origin.plus(self.horizon_days)),
                    |d| d.to_string(),
                );
                let _ = writeln!(out, "band: {earliest} to {latest} ({pct:.0}% band)");
            }
            Crossing::None { earliest } => {
                let _ = writeln!(out, "crossing: none within {}", self.horizon_text());
                if let Some(e) = earliest {
                    let _ = writeln!(out, "band: possible from {e} ({pct:.0}% band)");
                }
            }
        }
        if self.seasonal() {
            let _ = writeln!(
                out,
                "peak: {} {:.3} ({:.3} to {:.3})",
                self.peak.day, self.peak.value, self.peak.low, self.peak.high
            );
        } else {
            let _ = writeln!(
                out,
                "peak: unknown (no seasonal forecast; highest expected within {}: {} {:.3})",
                self.horizon_text(),
                self.peak.day,
                self.peak.value
            );
        }
        out
    }
}

/// Probability inside the band of [`BAND_Z`].
const BAND_Z_PCT: f64 = 0.80;

/// Forecasts the daily peak of `samples` (`(unix seconds, utilisation)`, any resolution,
/// any order) from the day of `now`. Days from the day of `now` on are ignored (today is not
/// over: its peak may be to come).
pub fn forecast(samples: &[(i64, f64)], params: &Params, now: i64) -> Outcome {
    let origin = Day::of(now);
    let peaks: Vec<(Day, f64)> = daily_peaks(samples)
        .into_iter()
        .filter(|&(d, _)| d < origin && origin.since(d) <= FIT_WINDOW_DAYS)
        .collect();
    let days = peaks.len();
    let first = peaks.first().map(|p| p.0);
    let last = peaks.last().map(|p| p.0);
    let (Some(first), Some(last)) = (first, last) else {
        return Outcome::TooLittle(TooLittle {
            days,
            first,
            last,
            reason: format!(
                "too little history: no data in the {FIT_WINDOW_DAYS} days before {origin}; a forecast needs at least {MIN_DAYS} days"
            ),
        });
    };
    if days < MIN_DAYS {
        return Outcome::TooLittle(TooLittle {
            days,
            first: Some(first),
            last: Some(last),
            reason: format!(
                "too little history: {days} day{} of data ({first} to {last}); a forecast needs at least {MIN_DAYS}",
                if days == 1 { "" } else { "s" }
            ),
        });
    }
    if origin.since(last) > STALE_DAYS {
        return Outcome::TooLittle(TooLittle {
            days,
            first: Some(first),
            last: Some(last),
            reason: format!(
                "too little recent history: the newest data is from {last}, more than {STALE_DAYS} days before {origin}"
            ),
        });
    }
    let span = last.since(first) + 1;
    let all_days: Vec<Day> = peaks.iter().map(|p| p.0).collect();
    let coverage = model::coverage(&all_days);
    let (fit, model) = if span >= SEASONAL_DAYS && coverage >= MIN_COVERAGE {
        let mult = model::fit(&peaks, origin, Form::Multiplicative, true);
        let add = model::fit(&peaks, origin, Form::Additive, true);
        let best = if mult.abs_residuals <= add.abs_residuals {
            mult
        } else {
            add
        };
        let form = best.form;
        (best, Model::Seasonal { form })
    } else {
        let reason = if span < SEASONAL_DAYS {
            format!(
                "no yearly seasonality: {span} days of history, a seasonal forecast needs {SEASONAL_DAYS}; the forecast follows the trend"
            )
        } else {
            format!(
                "no yearly seasonality: the history covers {:.0}% of the year's weeks, a seasonal forecast needs {:.0}%; the forecast follows the trend",
                coverage * 100.0,
                MIN_COVERAGE * 100.0
            )
        };
        (
            model::fit(&peaks, origin, Form::Additive, false),
            Model::TrendOnly { reason },
        )
    };

    let thr = params.threshold;
    let horizon = params.horizon_days.max(1);
    let mut crossing_day = None;
    let mut earliest = None;
    let mut latest = None;
    let mut peak = Peak {
        day: origin,
        value: f64::NEG_INFINITY,
        low: 0.0,
        high: 0.0,
    };
    for i in 0..horizon {
        let d = origin.plus(i);
        let y = fit.predict(d);
        let band = BAND_Z * fit.sd(d);
        if crossing_day.is_none() && y >= thr {
            crossing_day = Some(d);
        }
        if earliest.is_none() && y + band >= thr {
            earliest = Some(d);
        }
        if latest.is_none() && y - band >= thr {
            latest = Some(d);
        }
        if y > peak.value {
            peak = Peak {
                day: d,
                value: y,
                low: y - band,
                high: y + band,
            };
        }
    }
    let crossing = match crossing_day {
        Some(day) => Crossing::At {
            day,
            earliest: earliest.unwrap_or(day).min(day),
            latest,
            already: day == origin,
        },
        None => Crossing::None { earliest },
    };
    Outcome::Forecast(Forecast {
        origin,
        threshold: thr,
        first,
        last,
        days,
        model,
        trend_per_year: fit.slope_per_year(),
        sigma: fit.sigma,
        today: fit.predict(origin),
        crossing,
        peak,
        horizon_days: horizon,
    })
}
