//! Typed scalar values of the configuration file: durations, rates, status ranges, balance
//! algorithms, addresses, names and range-checked integers.
//!
//! Each type parses from the string an operator writes (`100ms`, `100/10s`, `200-399`,
//! `header(X-User)`, `198.18.0.100/24`) and serializes back to the same canonical text, so a
//! value that exists is valid: the rest of the crate never re-checks it.
//! This module owns the text format and the error text of each value; it does not know where a
//! value sits in the file (the deserializer adds the position) and does no IO.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a scalar value could not be parsed; the text is the operator-facing message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The text is not a duration such as `5s`.
    #[error("expected a duration like `100ms`, `5s`, `30m` or `1h`, found `{0}`")]
    Duration(String),
    /// The text is not a rate such as `100/10s`.
    #[error("expected a rate like `100/10s` (count per duration), found `{0}`")]
    Rate(String),
    /// The text is not an HTTP status or status range such as `200-399`.
    #[error("expected an HTTP status from 100 to 599 or a range like `200-399`, found `{0}`")]
    StatusRange(String),
    /// The text is not one of the balance algorithms.
    #[error(
        "expected one of `roundrobin`, `leastconn`, `source`, `uri`, `header(NAME)`, `first`, `random`, found `{0}`"
    )]
    Balance(String),
    /// The text is not an HTTP header name.
    #[error("expected an HTTP header name (letters, digits and `-`), found `{0}`")]
    HeaderName(String),
    /// The text is not an IP address with an optional prefix length.
    #[error("expected an IP address with a prefix length like `198.18.0.100/24`, found `{0}`")]
    Cidr(String),
    /// The text is not an IP address.
    #[error("expected an IP address like `198.18.0.11`, found `{0}`")]
    Ip(String),
    /// The text is not an address with a port.
    #[error("expected an address and port like `198.18.0.21:8080`, found `{0}`")]
    Endpoint(String),
    /// The address has port 0, which cannot be bound or connected to.
    #[error("expected a port from 1 to 65535, found 0 in `{0}`")]
    EndpointPortZero(String),
    /// The text is not a valid object name.
    #[error(
        "expected a name of letters, digits, `-`, `_` or `.` starting with a letter or digit (at most 63 characters), found `{0}`"
    )]
    Name(String),
    /// The text is not a valid network interface name.
    #[error(
        "expected a network interface name of 1 to 15 characters without `/`, `:` or spaces, found `{0}`"
    )]
    InterfaceName(String),
    /// The text is not a host name or an IP address.
    #[error("expected a host name like `ntp.example.com` or an IP address, found `{0}`")]
    Host(String),
}

/// Implements `Deserialize` (from a string, or from a number for serde readers that type
/// scalars), `Serialize` (canonical `Display`) and a string `JsonSchema` for a `FromStr` type.
macro_rules! string_value {
    ($ty:ty, $schema_name:literal, $description:literal, $pattern:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($description)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                }
                d.deserialize_str(V)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($schema_name)
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let pattern: Option<&str> = $pattern;
                match pattern {
                    Some(p) => json_schema!({
                        "type": "string", "description": $description, "pattern": p
                    }),
                    None => json_schema!({ "type": "string", "description": $description }),
                }
            }
        }
    };
}

/// A duration written as an integer and a unit: `ms`, `s`, `m`, `h` or `d` (`100ms`, `5s`).
///
/// Millisecond resolution; serializes with the largest unit that divides it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration {
    millis: u64,
}

impl Duration {
    /// The zero duration (`0s`).
    pub const ZERO: Duration = Duration { millis: 0 };

    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Duration {
        Duration { millis }
    }

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Duration {
        Duration {
            millis: secs * 1000,
        }
    }

    /// The length in milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.millis
    }

    /// Whether this is the zero duration.
    pub const fn is_zero(self) -> bool {
        self.millis == 0
    }

    /// The same length as a `std::time::Duration`.
    pub const fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.millis)
    }
}

/// Units accepted in durations, largest first, with their length in milliseconds.
const DURATION_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl FromStr for Duration {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let err = || ValueError::Duration(s.to_owned());
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits_end == 0 {
            return Err(err());
        }
        let count: u64 = s[..digits_end].parse().map_err(|_| err())?;
        let unit = &s[digits_end..];
        let per = DURATION_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, ms)| *ms)
            .ok_or_else(err)?;
        let millis = count.checked_mul(per).ok_or_else(err)?;
        Ok(Duration { millis })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis == 0 {
            return f.write_str("0s");
        }
        let (unit, per) = DURATION_UNITS
            .iter()
            .find(|(_, per)| self.millis.is_multiple_of(*per))
            .copied()
            .unwrap_or(("ms", 1));
        write!(f, "{}{}", self.millis / per, unit)
    }
}

string_value!(
    Duration,
    "Duration",
    "a duration like `100ms`, `5s`, `30m` or `1h`",
    Some("^[0-9]+(ms|s|m|h|d)$")
);

/// A rate: at most `count` events per `per` (`100/10s`; `100/s` means per one second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Events allowed in one period; at least 1.
    pub count: u32,
    /// Length of the period; never zero.
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let err = || ValueError::Rate(s.to_owned());
        let (count, per) = s.split_once('/').ok_or_else(err)?;
        let count: u32 = count.trim().parse().map_err(|_| err())?;
        let per = per.trim();
        let per: Duration = if per.starts_with(|c: char| c.is_ascii_digit()) {
            per.parse().map_err(|_| err())?
        } else {
            format!("1{per}").parse().map_err(|_| err())?
        };
        if count == 0 || per.is_zero() {
            return Err(err());
        }
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.per)
    }
}

string_value!(
    Rate,
    "Rate",
    "a rate like `100/10s`: a count per duration",
    Some("^[0-9]+/[0-9]*(ms|s|m|h|d)$")
);

/// An inclusive range of HTTP status codes, `200-399`, or a single status, `200`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusRange {
    /// Lowest accepted status, from 100 to 599.
    pub first: u16,
    /// Highest accepted status, from `first` to 599.
    pub last: u16,
}

impl StatusRange {
    /// Whether `status` lies in the range.
    pub fn contains(&self, status: u16) -> bool {
        (self.first..=self.last).contains(&status)
    }
}

impl FromStr for StatusRange {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let err = || ValueError::StatusRange(s.to_owned());
        let status = |t: &str| -> Result<u16, ValueError> {
            let v: u16 = t.trim().parse().map_err(|_| err())?;
            if (100..=599).contains(&v) {
                Ok(v)
            } else {
                Err(err())
            }
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (status(a)?, status(b)?),
            None => (status(s)?, status(s)?),
        };
        if first > last {
            return Err(err());
        }
        Ok(StatusRange { first, last })
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

string_value!(
    StatusRange,
    "StatusRange",
    "an HTTP status like `200` or an inclusive range like `200-399`",
    Some("^[1-5][0-9][0-9](-[1-5][0-9][0-9])?$")
);

/// An HTTP header name (RFC 9110 token restricted to letters, digits and `-`), as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HeaderName(String);

impl HeaderName {
    /// The name as written in the file.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HeaderName {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        if !s.is_empty()
            && s.len() <= 128
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            Ok(HeaderName(s.to_owned()))
        } else {
            Err(ValueError::HeaderName(s.to_owned()))
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_value!(
    HeaderName,
    "HeaderName",
    "an HTTP header name such as `X-User`",
    Some("^[A-Za-z0-9-]+$")
);

/// How a backend picks a server for a new connection or request (HAProxy `balance`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Balance {
    /// Each server in turn, in proportion to its weight.
    #[default]
    RoundRobin,
    /// The server with the fewest active connections relative to its weight.
    LeastConn,
    /// A hash of the client source address, so a client sticks to one server.
    Source,
    /// A hash of the request path (http mode only).
    Uri,
    /// A hash of the named request header (http mode only).
    Header(HeaderName),
    /// The first server with a free connection slot (needs server `max_connections`).
    First,
    /// A random server, weighted (power of two choices).
    Random,
}

impl Balance {
    /// Whether the algorithm reads HTTP requests and so needs an http-mode backend.
    pub fn needs_http(&self) -> bool {
        matches!(self, Balance::Uri | Balance::Header(_))
    }
}

impl FromStr for Balance {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Ok(match s {
            "roundrobin" => Balance::RoundRobin,
            "leastconn" => Balance::LeastConn,
            "source" => Balance::Source,
            "uri" => Balance::Uri,
            "first" => Balance::First,
            "random" => Balance::Random,
            _ => {
                let inner = s
                    .strip_prefix("header(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| ValueError::Balance(s.to_owned()))?;
                Balance::Header(inner.parse()?)
            }
        })
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Balance::RoundRobin => f.write_str("roundrobin"),
            Balance::LeastConn => f.write_str("leastconn"),
            Balance::Source => f.write_str("source"),
            Balance::Uri => f.write_str("uri"),
            Balance::Header(h) => write!(f, "header({h})"),
            Balance::First => f.write_str("first"),
            Balance::Random => f.write_str("random"),
        }
    }
}

string_value!(
    Balance,
    "Balance",
    "one of `roundrobin`, `leastconn`, `source`, `uri`, `header(NAME)`, `first`, `random`",
    Some("^(roundrobin|leastconn|source|uri|first|random|header\\([A-Za-z0-9-]+\\))$")
);

/// An IP address with a prefix length, `198.18.0.100/24`; a bare address means a host
/// prefix (`/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// A CIDR, or `None` when `prefix` is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// The address (host bits kept: this is an interface address, not a network).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// This CIDR with its host bits cleared (`198.18.0.11/24` is in `198.18.0.0/24`).
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }

    /// Whether `ip` lies in this CIDR's network (same family, same prefix bits).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && Cidr {
                addr: ip,
                prefix: self.prefix,
            }
            .network()
                == self.network()
    }
}

impl FromStr for Cidr {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let err = || ValueError::Cidr(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => {
                let addr: IpAddr = a.parse().map_err(|_| err())?;
                let prefix: u8 = p.parse().map_err(|_| err())?;
                (addr, prefix)
            }
            None => {
                let addr: IpAddr = s.parse().map_err(|_| err())?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        };
        Cidr::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

string_value!(
    Cidr,
    "Cidr",
    "an IP address with a prefix length like `198.18.0.100/24`",
    None
);

/// An IP address as written in the file (`198.18.0.11`, `2001:db8::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ip(pub IpAddr);

impl FromStr for Ip {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        s.parse().map(Ip).map_err(|_| ValueError::Ip(s.to_owned()))
    }
}

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

string_value!(Ip, "IpAddress", "an IP address like `198.18.0.11`", None);

/// An IP address and a non-zero port (`198.18.0.21:8080`, `[2001:db8::1]:443`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint(SocketAddr);

impl Endpoint {
    /// An endpoint, or `None` when the port is 0.
    pub fn new(addr: SocketAddr) -> Option<Endpoint> {
        (addr.port() != 0).then_some(Endpoint(addr))
    }

    /// The socket address; its port is never 0.
    pub fn socket_addr(&self) -> SocketAddr {
        self.0
    }

    /// The IP address part.
    pub fn ip(&self) -> IpAddr {
        self.0.ip()
    }

    /// The port, from 1 to 65535.
    pub fn port(&self) -> u16 {
        self.0.port()
    }
}

impl FromStr for Endpoint {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let addr: SocketAddr = s.parse().map_err(|_| ValueError::Endpoint(s.to_owned()))?;
        Endpoint::new(addr).ok_or_else(|| ValueError::EndpointPortZero(s.to_owned()))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

string_value!(
    Endpoint,
    "Endpoint",
    "an IP address and port like `198.18.0.21:8080`",
    None
);

/// The name of a frontend, backend, server, VRRP instance, node or cluster: 1 to 63
/// letters, digits, `-`, `_` or `.`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Name(s.to_owned()))
        } else {
            Err(ValueError::Name(s.to_owned()))
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_value!(
    Name,
    "Name",
    "a name of letters, digits, `-`, `_` or `.`, starting with a letter or digit",
    Some("^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
);

/// A Linux network interface name (`eth1`, `bond0.42`): 1 to 15 bytes, no `/`, `:` or spaces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceName(String);

impl InterfaceName {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for InterfaceName {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let ok = !s.is_empty()
            && s.len() <= 15
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if ok {
            Ok(InterfaceName(s.to_owned()))
        } else {
            Err(ValueError::InterfaceName(s.to_owned()))
        }
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_value!(
    InterfaceName,
    "InterfaceName",
    "a network interface name such as `eth1`",
    Some("^[^/: ]{1,15}$")
);

/// A host name (`ntp.example.com`: dot-separated labels of letters, digits and `-`, at most
/// 253 characters) or an IP address, as an NTP server is written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Host(String);

impl Host {
    /// The name or address as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Host {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if s.parse::<IpAddr>().is_ok() || (s.len() <= 253 && s.split('.').all(label)) {
            Ok(Host(s.to_owned()))
        } else {
            Err(ValueError::Host(s.to_owned()))
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_value!(
    Host,
    "Host",
    "a host name like `ntp.example.com` or an IP address",
    None
);

/// Declares a range-checked integer newtype that deserializes with the message
/// "expected an integer from MIN to MAX, found X".
macro_rules! ranged {
    ($(#[$meta:meta])* $name:ident, $inner:ty, $min:expr, $max:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name($inner);

        impl $name {
            /// Smallest allowed value.
            pub const MIN: $inner = $min;
            /// Largest allowed value.
            pub const MAX: $inner = $max;

            /// The value, or `None` when it is out of range.
            pub const fn new(v: $inner) -> Option<Self> {
                if v >= Self::MIN && v <= Self::MAX { Some(Self(v)) } else { None }
            }

            /// The value, within `MIN..=MAX`.
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_u64(u64::from(self.0))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "an integer from {} to {}", $name::MIN, $name::MAX)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$name, E> {
                        <$inner>::try_from(v)
                            .ok()
                            .and_then($name::new)
                            .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &self))
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$name, E> {
                        match u64::try_from(v) {
                            Ok(u) => self.visit_u64(u),
                            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                        }
                    }
                }
                d.deserialize_u64(V)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "integer", "minimum": $name::MIN, "maximum": $name::MAX })
            }
        }
    };
}

ranged!(
    /// A server weight, 0 to 256 (HAProxy range); 0 takes no new traffic.
    Weight, u16, 0, 256
);
ranged!(
    /// A TCP or UDP port, 1 to 65535.
    Port, u16, 1, 65535
);
ranged!(
    /// A VRRP virtual router id, 1 to 255, unique per interface on the LAN.
    Vrid, u8, 1, 255
);
ranged!(
    /// A VRRP priority, 1 to 254 (255 is reserved for the address owner).
    Priority, u8, 1, 254
);
ranged!(
    /// How much a tracked failure lowers a node's VRRP priority, 1 to 254.
    PriorityDelta, u8, 1, 254
);
ranged!(
    /// A health-check threshold (`rise`, `fall`), 1 to 255 consecutive checks.
    CheckCount, u8, 1, 255
);
ranged!(
    /// An 802.1Q VLAN id, 1 to 4094 (0 and 4095 are reserved).
    VlanId, u16, 1, 4094
);
ranged!(
    /// An interface MTU in bytes, 68 (the IPv4 minimum) to 9216 (jumbo frames).
    Mtu, u16, 68, 9216
);
ranged!(
    /// A positive count (connections, bytes, headers), 1 to 4294967295.
    Count, u32, 1, u32::MAX
);

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: FromStr + fmt::Display>(input: &str, canonical: &str)
    where
        T::Err: fmt::Debug,
    {
        let v: T = input.parse().unwrap();
        assert_eq!(v.to_string(), canonical, "{input}");
    }

    #[test]
    fn values_parse_to_canonical_text() {
        check::<Duration>("100ms", "100ms");
        check::<Duration>("1000ms", "1s");
        check::<Duration>("90s", "90s");
        check::<Duration>("120s", "2m");
        check::<Duration>("0ms", "0s");
        check::<Rate>("100/10s", "100/10s");
        check::<Rate>("5/s", "5/1s");
        check::<StatusRange>("200-399", "200-399");
        check::<StatusRange>("204", "204");
        check::<Balance>("header(X-User)", "header(X-User)");
        check::<Cidr>("198.18.0.100", "198.18.0.100/32");
        check::<Cidr>("2001:db8::1/64", "2001:db8::1/64");
        check::<Endpoint>("[2001:db8::1]:443", "[2001:db8::1]:443");
    }

    #[test]
    fn bad_values_name_the_input() {
        let cases: [(&str, String); 5] = [
            ("5", "5".parse::<Duration>().unwrap_err().to_string()),
            ("0/10s", "0/10s".parse::<Rate>().unwrap_err().to_string()),
            (
                "399-200",
                "399-200".parse::<StatusRange>().unwrap_err().to_string(),
            ),
            (
                "10.0.0.1/33",
                "10.0.0.1/33".parse::<Cidr>().unwrap_err().to_string(),
            ),
            (
                "1.2.3.4:0",
                "1.2.3.4:0".parse::<Endpoint>().unwrap_err().to_string(),
            ),
        ];
        for (input, message) in cases {
            assert!(message.contains(&format!("`{input}`")), "{message}");
        }
        assert_eq!(
            "header()".parse::<Balance>().unwrap_err().to_string(),
            "expected an HTTP header name (letters, digits and `-`), found ``"
        );
    }
}
