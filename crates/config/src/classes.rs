//! SLA classes in the file: the `classes` section and the per-frontend class keys
//! (`frontends[].class`, `frontends[].class_by`, `frontends[].routes[].class`).
//!
//! Owns, for these keys only, what the crate otherwise spreads over `values` (the scalar
//! types [`ClassPriority`] and [`Share`] with their text format and messages), `raw` (the file
//! shape, [`RawClass`] and [`RawClassBy`], whose doc comments land in `tandem schema`) and
//! `model` (the validated [`Class`] and [`ClassBy`]); kept together so the feature is one
//! file, and re-exported where the others are. The checks are in `validate::classes`.
//! Does no IO and knows nothing of queues: the balancer's class queue consumes the model.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::values::{Cidr, Duration, HeaderName, Name};

/// Why a class value could not be parsed; the text is the operator-facing message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassValueError {
    /// The text is not a whole percentage from 0% to 100%.
    #[error("expected a percentage from `0%` to `100%` like `20%`, found `{0}`")]
    Share(String),
}

/// A class priority, -2047 to 2047 (HAProxy's `set-priority-class` range): when every server
/// is full, the class with the **lower** number is served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClassPriority(i16);

impl ClassPriority {
    /// Smallest allowed value (served first).
    pub const MIN: i16 = -2047;
    /// Largest allowed value (served last).
    pub const MAX: i16 = 2047;

    /// The priority, or `None` when out of range.
    pub const fn new(v: i16) -> Option<Self> {
        if v >= Self::MIN && v <= Self::MAX {
            Some(Self(v))
        } else {
            None
        }
    }

    /// The value, within `MIN..=MAX`.
    pub const fn get(self) -> i16 {
        self.0
    }
}

impl fmt::Display for ClassPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for ClassPriority {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(i64::from(self.0))
    }
}

impl<'de> Deserialize<'de> for ClassPriority {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ClassPriority;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "an integer from {} to {}",
                    ClassPriority::MIN,
                    ClassPriority::MAX
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ClassPriority, E> {
                i16::try_from(v)
                    .ok()
                    .and_then(ClassPriority::new)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ClassPriority, E> {
                match i64::try_from(v) {
                    Ok(i) => self.visit_i64(i),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }
        }
        d.deserialize_i64(V)
    }
}

impl JsonSchema for ClassPriority {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("ClassPriority")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "minimum": ClassPriority::MIN,
            "maximum": ClassPriority::MAX,
            "description": "lower is served first"
        })
    }
}

/// A whole percentage of a backend's capacity, `0%` to `100%`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Share(u8);

impl Share {
    /// No guaranteed share.
    pub const ZERO: Share = Share(0);

    /// The share, or `None` above 100.
    pub const fn new(percent: u8) -> Option<Self> {
        if percent <= 100 {
            Some(Self(percent))
        } else {
            None
        }
    }

    /// The percentage, 0 to 100.
    pub const fn percent(self) -> u8 {
        self.0
    }
}

impl FromStr for Share {
    type Err = ClassValueError;
    fn from_str(s: &str) -> Result<Self, ClassValueError> {
        let err = || ClassValueError::Share(s.to_owned());
        let digits = s.strip_suffix('%').ok_or_else(err)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        digits
            .parse::<u8>()
            .ok()
            .and_then(Share::new)
            .ok_or_else(err)
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl Serialize for Share {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Share;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage like `20%`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Share, E> {
                v.parse().map_err(E::custom)
            }
            // A bare number is refused with the same message: `20` could be a fraction.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Share, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Share, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Share, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_str(V)
    }
}

impl JsonSchema for Share {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Share")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "a percentage like `20%`",
            "pattern": "^(100|[1-9]?[0-9])%$"
        })
    }
}

/// An SLA class (file shape).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawClass {
    /// Name of the class; required, unique; what `frontends[].class`, route `class` and `class_by` name.
    pub name: Option<Name>,
    /// When every server is full, the class with the lower number is served first (HAProxy `set-priority-class`), -2047 to 2047; required, distinct.
    pub priority: Option<ClassPriority>,
    /// Longest a request of this class waits for a free server, then 503 with `Retry-After`; default the backend's `queue_timeout`.
    pub max_queue_time: Option<Duration>,
    /// Part of each backend's capacity (its servers' `max_connections`) kept for this class while it has waiting requests, `0%` to `100%`; all shares add up to at most `100%`; default `0%`.
    pub share: Option<Share>,
}

/// How a frontend classifies requests (file shape).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawClassBy {
    /// Client networks and their class, e.g. `"198.18.0.0/24": gold`; the longest matching prefix wins.
    pub sources: BTreeMap<String, Name>,
    /// Request header whose value is a class name (http mode); unknown values are ignored.
    pub header: Option<HeaderName>,
}

/// A validated SLA class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Class {
    /// Unique class name.
    pub name: Name,
    /// Lower is served first; distinct among classes.
    pub priority: ClassPriority,
    /// Longest queue wait; `None` means the backend's `queue_timeout`. Non-zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queue_time: Option<Duration>,
    /// Guaranteed share of each backend's capacity; all shares add up to at most 100%.
    pub share: Share,
}

/// Validated request classification of a frontend; at least one of the two is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassBy {
    /// Client networks (no host bits set, no duplicates) and their classes.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<Cidr, Name>,
    /// Header whose value names the class (http mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderName>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_parse_whole_percentages_only() {
        for (text, percent) in [("0%", 0), ("7%", 7), ("100%", 100), ("020%", 20)] {
            assert_eq!(
                text.parse::<Share>().map(Share::percent),
                Ok(percent),
                "{text}"
            );
        }
        for bad in ["20", "101%", "-5%", "12.5%", "%", " 5%", "five%", "256%"] {
            assert_eq!(
                bad.parse::<Share>(),
                Err(ClassValueError::Share(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(Share::new(20).unwrap().to_string(), "20%");
    }

    #[test]
    fn priorities_are_bounded_like_haproxy() {
        assert!(ClassPriority::new(-2047).is_some());
        assert!(ClassPriority::new(2047).is_some());
        assert!(ClassPriority::new(2048).is_none());
        assert!(ClassPriority::new(-2048).is_none());
    }
}
