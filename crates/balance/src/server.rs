//! Server identity and configuration as seen by the balancer: ids, weights, admin states, the
//! algorithm choice and the per-server spec a snapshot is built from.
//!
//! Owns the plain data types. It does not hold runtime state (health, active connections): that
//! lives with the caller behind [`crate::LiveView`], so that a health flip never requires a new
//! snapshot. It does not parse configuration files either (that is `tandem-config`).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::error::BalanceError;
use crate::hash::hash_parts;

/// Largest accepted server weight (HAProxy's limit).
pub const MAX_WEIGHT: u32 = 256;

/// Stable opaque server id.
///
/// Derived from the backend and server names ([`ServerId::derive`]), so it survives reloads and
/// is identical on both nodes of the pair. It is what persistence cookies and stick tables
/// store, never the address: re-addressing a server keeps its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(pub u64);

impl ServerId {
    /// Id of server `server` in backend `backend`: a 64-bit hash of both names.
    pub fn derive(backend: &str, server: &str) -> Self {
        Self(hash_parts(&[
            b"tandem-server-id-v1",
            backend.as_bytes(),
            server.as_bytes(),
        ]))
    }

    /// Encodes the id as a cookie value: 16 lowercase hex digits, no allocation.
    pub fn to_cookie(self) -> [u8; 16] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            let nibble = (self.0 >> (60 - 4 * i)) & 0xf;
            *byte = HEX[nibble as usize];
        }
        out
    }

    /// Decodes a cookie value produced by [`ServerId::to_cookie`] (hex case-insensitive).
    pub fn from_cookie(value: &str) -> Result<Self, BalanceError> {
        let invalid = || BalanceError::InvalidCookie {
            value: value.chars().take(64).collect(),
        };
        if value.len() != 16 {
            return Err(invalid());
        }
        // `from_str_radix` alone would accept a leading `+`.
        if !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        u64::from_str_radix(value, 16)
            .map(Self)
            .map_err(|_| invalid())
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for ServerId {
    type Err = BalanceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_cookie(s)
    }
}

/// Administrative state set by the operator (HAProxy's `set server state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AdminState {
    /// Normal operation.
    #[default]
    Ready,
    /// No new users; users with persistence (cookie, stick table) keep coming.
    Drain,
    /// No traffic at all, not even persistent users.
    Maint,
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ready => "ready",
            Self::Drain => "drain",
            Self::Maint => "maint",
        })
    }
}

/// Selection algorithm of a backend (HAProxy's `balance` keyword).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Balance {
    /// Smooth weighted round robin (nginx's algorithm).
    #[default]
    RoundRobin,
    /// Fewest active connections relative to weight; ties rotate.
    LeastConn,
    /// Consistent hash of the client IP.
    Source,
    /// Consistent hash of the request path (without the query string).
    Uri,
    /// Consistent hash of the value of the named header; round robin when it is absent.
    Header(String),
    /// First server in config order with a free slot below its `max_connections`.
    First,
    /// Power of two choices: two weighted random draws, the less loaded one wins.
    Random,
}

impl Balance {
    /// Name of the header the caller must extract for [`Balance::Header`], if any.
    pub fn header_name(&self) -> Option<&str> {
        match self {
            Self::Header(name) => Some(name),
            _ => None,
        }
    }
}

/// Initial health at load time (HAProxy's `init-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InitState {
    /// Up, and needs `fall` failures to go down.
    FullyUp,
    /// Up, but a single failed check takes it down (HAProxy's default behaviour).
    #[default]
    Up,
    /// Down, but a single passed check brings it up.
    Down,
    /// Down, and needs `rise` passed checks to come up.
    FullyDown,
}

/// One server as configured: the input to [`crate::Backend::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Name, unique within the backend; also the input of the derived [`ServerId`].
    pub name: String,
    /// Explicit id (HAProxy's `cookie <value>`-like override); derived from the names when `None`.
    pub id: Option<ServerId>,
    /// Where to connect.
    pub address: SocketAddr,
    /// Relative weight, 0..=256; 0 means "no new traffic" (persistent users still come).
    pub weight: u32,
    /// Concurrent connection limit; `None` means unlimited.
    pub max_connections: Option<u32>,
    /// Backup servers take traffic only when every primary is unavailable.
    pub backup: bool,
    /// Duration of the linear weight ramp after the server comes back up; zero disables it.
    pub slow_start: Duration,
    /// Admin state at load time (HAProxy's `disabled` is [`AdminState::Maint`]).
    pub initial_admin: AdminState,
    /// Health state at load time (HAProxy's `init-state`).
    pub init_state: InitState,
}

impl ServerSpec {
    /// A ready primary server with weight 1, no limits, no slow start, initially up.
    pub fn new(name: impl Into<String>, address: SocketAddr) -> Self {
        Self {
            name: name.into(),
            id: None,
            address,
            weight: 1,
            max_connections: None,
            backup: false,
            slow_start: Duration::ZERO,
            initial_admin: AdminState::Ready,
            init_state: InitState::Up,
        }
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the connection limit.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// Marks the server as a backup.
    pub fn backup(mut self) -> Self {
        self.backup = true;
        self
    }

    /// Sets the slow-start ramp duration.
    pub fn slow_start(mut self, ramp: Duration) -> Self {
        self.slow_start = ramp;
        self
    }
}

/// One server inside an immutable [`crate::Backend`] snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Position in config order; the index used by [`crate::LiveView`] and `exclude` lists.
    pub index: usize,
    /// Stable id (persistence, logs, replication).
    pub id: ServerId,
    /// Name as configured.
    pub name: String,
    /// Where to connect.
    pub address: SocketAddr,
    /// Configured weight, 0..=256.
    pub weight: u32,
    /// Concurrent connection limit; `None` means unlimited.
    pub max_connections: Option<u32>,
    /// Whether this is a backup server.
    pub backup: bool,
    /// Slow-start ramp duration; zero disables it.
    pub slow_start: Duration,
    /// Admin state at load time.
    pub initial_admin: AdminState,
    /// Health state at load time.
    pub init_state: InitState,
    /// Pre-mixed hash of `id`, the server's input to rendezvous scoring.
    pub(crate) hash: u64,
}

/// A backend as configured: the input to [`crate::Backend::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Backend name (part of every derived server id).
    pub name: String,
    /// Selection algorithm.
    pub balance: Balance,
    /// Servers in config order.
    pub servers: Vec<ServerSpec>,
    /// Balance over all usable backups (HAProxy's `option allbackups`) instead of only the first.
    pub all_backups: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_round_trip() {
        for raw in [0, 1, 0xdead_beef, u64::MAX] {
            let id = ServerId(raw);
            let cookie = id.to_cookie();
            let text = std::str::from_utf8(&cookie).unwrap();
            assert_eq!(text, id.to_string());
            assert_eq!(ServerId::from_cookie(text), Ok(id));
            assert_eq!(ServerId::from_cookie(&text.to_uppercase()), Ok(id));
        }
    }

    #[test]
    fn cookie_rejects_garbage() {
        for bad in [
            "",
            "abc",
            "+123456789abcdef",
            "0123456789abcdeg",
            "0123456789abcdef0",
            "é123456789abcde",
        ] {
            assert!(ServerId::from_cookie(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn derived_ids_are_pinned() {
        // Cookies in browsers and stick tables on the peer hold these values: changing the
        // derivation logs every persistent user out. Change only with a migration plan.
        assert_eq!(
            ServerId::derive("web", "s1").to_string(),
            "54d8501ec308aa74"
        );
    }

    #[test]
    fn derived_ids_are_stable_and_scoped_by_backend() {
        let a = ServerId::derive("web", "s1");
        assert_eq!(a, ServerId::derive("web", "s1"));
        assert_ne!(a, ServerId::derive("api", "s1"));
        assert_ne!(a, ServerId::derive("web", "s2"));
        assert_ne!(ServerId::derive("ab", "c"), ServerId::derive("a", "bc"));
    }
}
