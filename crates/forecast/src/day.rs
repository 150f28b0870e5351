//! Calendar days: a day is counted from 1970-01-01 (UTC), printed `YYYY-MM-DD`.
//!
//! Owns the conversion between unix seconds, day numbers, calendar dates and RFC 3339
//! timestamps (through the `time` crate). Must not read the clock.

use std::fmt;

use serde::{Serialize, Serializer};

/// Seconds per day.
pub const DAY_S: i64 = 86_400;
/// Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN: i64 = 2_440_588;

/// A UTC calendar day, as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i64);

impl Day {
    /// The day holding unix time `ts` (seconds).
    pub fn of(ts: i64) -> Day {
        Day(ts.div_euclid(DAY_S))
    }

    /// Midnight UTC of this day, unix seconds.
    pub fn start(self) -> i64 {
        self.0 * DAY_S
    }

    /// The day `n` days later.
    pub fn plus(self, n: i64) -> Day {
        Day(self.0 + n)
    }

    /// Days from `earlier` to this day.
    pub fn since(self, earlier: Day) -> i64 {
        self.0 - earlier.0
    }

    /// Day of the week, 0 for Monday (1970-01-01 was a Thursday).
    pub fn weekday(self) -> usize {
        (self.0 + 3).rem_euclid(7) as usize
    }

    /// The calendar date.
    pub fn date(self) -> Option<time::Date> {
        let jd = i32::try_from(self.0 + UNIX_EPOCH_JULIAN).ok()?;
        time::Date::from_julian_day(jd).ok()
    }

    /// The day of a calendar date.
    pub fn from_ymd(year: i32, month: u8, day: u8) -> Option<Day> {
        let month = time::Month::try_from(month).ok()?;
        let d = time::Date::from_calendar_date(year, month, day).ok()?;
        Some(Day(i64::from(d.to_julian_day()) - UNIX_EPOCH_JULIAN))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.date() {
            Some(d) => write!(f, "{d}"),
            None => write!(f, "day {}", self.0),
        }
    }
}

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses an RFC 3339 timestamp (`2025-11-28T18:30:00Z`, `2025-11-28T19:30:00.5+01:00`)
/// into unix seconds.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_dates_and_weekdays() {
        assert_eq!(Day(0).to_string(), "1970-01-01");
        assert_eq!(Day(0).weekday(), 3, "a Thursday");
        let d = Day::from_ymd(2024, 2, 29).unwrap();
        assert_eq!(d.to_string(), "2024-02-29");
        assert_eq!(Day::of(d.start() + 86_399), d);
        assert_eq!(Day::of(-1), Day(-1));
        assert_eq!(d.plus(1).to_string(), "2024-03-01");
        assert_eq!(Day::from_ymd(2025, 12, 1).unwrap().weekday(), 0, "a Monday");
    }

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-02T00:00:00Z"), Ok(86_400));
        assert_eq!(parse_rfc3339("1970-01-02T01:00:00.75+01:00"), Ok(86_400));
        assert!(parse_rfc3339("2025-13-01T00:00:00Z").is_err());
        assert!(parse_rfc3339("2025-01-01").is_err());
    }
}
