//! Series names: what is measured ([`Metric`]) about which thing ([`Entity`]).
//!
//! Owns the naming scheme (`frontend/web/requests_per_s`, `server/app/web1/p99_ms`,
//! `node/lb1/cpu`), which metrics exist for which kind of entity, their units, and how a
//! metric consolidates ([`Kind`]). Must not know where a series is stored.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How samples of a metric consolidate into coarser slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A number (rate, gauge, percentile): `avg` is the mean of the samples, `max` the largest,
    /// `last` the latest.
    Gauge,
    /// A state code ([`HealthState`], [`VrrpState`]; 0 is the good state, larger is worse):
    /// `avg` is the fraction of samples in state 0 (availability), `max` the worst state seen,
    /// `last` the state at the end of the slot.
    State,
}

/// A measured quantity. Rates are per second over the sampling interval; the sample producer
/// turns the proxy's counters into rates ([`crate::derive::RateMeter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// Requests (tcp mode: connections) per second.
    RequestsPerS,
    /// Concurrent sessions (open client connections at a frontend, connections to servers).
    Sessions,
    /// Requests waiting for a server (`max_connections` reached).
    Queue,
    /// Bytes per second received from clients (frontend) or servers (backend, server).
    BytesInPerS,
    /// Bytes per second sent to clients (frontend) or servers (backend, server).
    BytesOutPerS,
    /// 2xx responses per second.
    Responses2xxPerS,
    /// 3xx responses per second.
    Responses3xxPerS,
    /// 4xx responses per second.
    Responses4xxPerS,
    /// 5xx responses per second (the proxy's own 503s included at frontend and backend).
    Responses5xxPerS,
    /// Median response time over the interval, milliseconds (time to the response head).
    P50Ms,
    /// 95th percentile response time over the interval, milliseconds.
    P95Ms,
    /// 99th percentile response time over the interval, milliseconds.
    P99Ms,
    /// Health state ([`HealthState`] code).
    Health,
    /// The server's own load as it reports it (agent check), 0 to 1.
    Load,
    /// Node CPU busy fraction, 0 to 1.
    Cpu,
    /// Node memory in use, fraction 0 to 1.
    Memory,
    /// Node-wide open TCP connections (client and server sides).
    Connections,
    /// VRRP role ([`VrrpState`] code).
    VrrpRole,
}

impl Metric {
    /// Every metric, in name order of the enum.
    pub const ALL: [Metric; 18] = [
        Metric::RequestsPerS,
        Metric::Sessions,
        Metric::Queue,
        Metric::BytesInPerS,
        Metric::BytesOutPerS,
        Metric::Responses2xxPerS,
        Metric::Responses3xxPerS,
        Metric::Responses4xxPerS,
        Metric::Responses5xxPerS,
        Metric::P50Ms,
        Metric::P95Ms,
        Metric::P99Ms,
        Metric::Health,
        Metric::Load,
        Metric::Cpu,
        Metric::Memory,
        Metric::Connections,
        Metric::VrrpRole,
    ];

    /// Metrics kept per frontend (11): a frontend has no queue and no health of its own.
    pub const FRONTEND: &'static [Metric] = &[
        Metric::RequestsPerS,
        Metric::Sessions,
        Metric::BytesInPerS,
        Metric::BytesOutPerS,
        Metric::Responses2xxPerS,
        Metric::Responses3xxPerS,
        Metric::Responses4xxPerS,
        Metric::Responses5xxPerS,
        Metric::P50Ms,
        Metric::P95Ms,
        Metric::P99Ms,
    ];

    /// Metrics kept per backend (13); its health is 0 while any server is up.
    pub const BACKEND: &'static [Metric] = &[
        Metric::RequestsPerS,
        Metric::Sessions,
        Metric::Queue,
        Metric::BytesInPerS,
        Metric::BytesOutPerS,
        Metric::Responses2xxPerS,
        Metric::Responses3xxPerS,
        Metric::Responses4xxPerS,
        Metric::Responses5xxPerS,
        Metric::P50Ms,
        Metric::P95Ms,
        Metric::P99Ms,
        Metric::Health,
    ];

    /// Metrics kept per server (14): the backend's, plus the load the server reports.
    pub const SERVER: &'static [Metric] = &[
        Metric::RequestsPerS,
        Metric::Sessions,
        Metric::Queue,
        Metric::BytesInPerS,
        Metric::BytesOutPerS,
        Metric::Responses2xxPerS,
        Metric::Responses3xxPerS,
        Metric::Responses4xxPerS,
        Metric::Responses5xxPerS,
        Metric::P50Ms,
        Metric::P95Ms,
        Metric::P99Ms,
        Metric::Health,
        Metric::Load,
    ];

    /// Metrics kept per node (4).
    pub const NODE: &'static [Metric] = &[
        Metric::Cpu,
        Metric::Memory,
        Metric::Connections,
        Metric::VrrpRole,
    ];

    /// The name used in series names (`requests_per_s`).
    pub const fn name(self) -> &'static str {
        match self {
            Metric::RequestsPerS => "requests_per_s",
            Metric::Sessions => "sessions",
            Metric::Queue => "queue",
            Metric::BytesInPerS => "bytes_in_per_s",
            Metric::BytesOutPerS => "bytes_out_per_s",
            Metric::Responses2xxPerS => "responses_2xx_per_s",
            Metric::Responses3xxPerS => "responses_3xx_per_s",
            Metric::Responses4xxPerS => "responses_4xx_per_s",
            Metric::Responses5xxPerS => "responses_5xx_per_s",
            Metric::P50Ms => "p50_ms",
            Metric::P95Ms => "p95_ms",
            Metric::P99Ms => "p99_ms",
            Metric::Health => "health",
            Metric::Load => "load",
            Metric::Cpu => "cpu",
            Metric::Memory => "memory",
            Metric::Connections => "connections",
            Metric::VrrpRole => "vrrp_role",
        }
    }

    /// How this metric consolidates.
    pub const fn kind(self) -> Kind {
        match self {
            Metric::Health | Metric::VrrpRole => Kind::State,
            _ => Kind::Gauge,
        }
    }

    /// The metric called `name`.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The metrics an entity of this kind has.
    pub fn for_entity(entity: &Entity) -> &'static [Metric] {
        match entity {
            Entity::Frontend(_) => Metric::FRONTEND,
            Entity::Backend(_) => Metric::BACKEND,
            Entity::Server { .. } => Metric::SERVER,
            Entity::Node(_) => Metric::NODE,
        }
    }
}

/// Health state codes of the [`Metric::Health`] series (0 is good, larger is worse, so the
/// consolidated `max` is the worst state seen in the slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Up and taking traffic.
    Up = 0,
    /// Up but draining (no new sessions).
    Drain = 1,
    /// In maintenance (taken out by the operator).
    Maint = 2,
    /// Failing its health checks.
    Down = 3,
}

impl HealthState {
    /// The value recorded.
    pub fn code(self) -> f64 {
        f64::from(self as u8)
    }
}

/// VRRP role codes of the [`Metric::VrrpRole`] series (0 is master; `avg` over a slot is the
/// fraction of time the node was master).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VrrpState {
    /// Holding the VIPs.
    Master = 0,
    /// Standing by.
    Backup = 1,
    /// Starting, or held back (maintenance, split-brain guard).
    Init = 2,
    /// The VRRP interface is down.
    Fault = 3,
}

impl VrrpState {
    /// The value recorded.
    pub fn code(self) -> f64 {
        f64::from(self as u8)
    }
}

/// The thing a series is about. Names follow the configuration's rule: 1 to 63 letters,
/// digits, `-`, `_` or `.`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entity {
    /// A frontend.
    Frontend(String),
    /// A backend.
    Backend(String),
    /// A server of a backend.
    Server {
        /// The backend.
        backend: String,
        /// The server.
        server: String,
    },
    /// A node of the pair (each node's series carry its name, so both nodes' histories live
    /// side by side on both stores).
    Node(String),
}

/// A series: a metric of an entity. Written and parsed as `frontend/NAME/METRIC`,
/// `backend/NAME/METRIC`, `server/BACKEND/SERVER/METRIC` or `node/NAME/METRIC`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesName {
    entity: Entity,
    metric: Metric,
}

/// Why a series name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad series name `{name}`: {reason}")]
pub struct SeriesNameError {
    /// The name as given.
    pub name: String,
    /// What is wrong, lowercase.
    pub reason: String,
}

impl SeriesName {
    /// The series of `metric` about `entity`; refused when a name component is not a valid
    /// configuration name or the entity has no such metric (a frontend has no `queue`).
    pub fn new(entity: Entity, metric: Metric) -> Result<SeriesName, SeriesNameError> {
        let s = SeriesName { entity, metric };
        let parts: Vec<&str> = match &s.entity {
            Entity::Frontend(n) | Entity::Backend(n) | Entity::Node(n) => vec![n],
            Entity::Server { backend, server } => vec![backend, server],
        };
        for p in parts {
            if !valid_name(p) {
                return Err(SeriesNameError {
                    name: s.to_string(),
                    reason: format!(
                        "`{p}` is not a name (1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit)"
                    ),
                });
            }
        }
        if !Metric::for_entity(&s.entity).contains(&metric) {
            return Err(SeriesNameError {
                name: s.to_string(),
                reason: format!(
                    "a {} has no metric `{}` (it has: {})",
                    s.entity_kind(),
                    metric.name(),
                    metric_names(Metric::for_entity(&s.entity))
                ),
            });
        }
        Ok(s)
    }

    /// `frontend/NAME/METRIC`.
    pub fn frontend(name: &str, metric: Metric) -> Result<SeriesName, SeriesNameError> {
        SeriesName::new(Entity::Frontend(name.to_owned()), metric)
    }

    /// `backend/NAME/METRIC`.
    pub fn backend(name: &str, metric: Metric) -> Result<SeriesName, SeriesNameError> {
        SeriesName::new(Entity::Backend(name.to_owned()), metric)
    }

    /// `server/BACKEND/SERVER/METRIC`.
    pub fn server(
        backend: &str,
        server: &str,
        metric: Metric,
    ) -> Result<SeriesName, SeriesNameError> {
        SeriesName::new(
            Entity::Server {
                backend: backend.to_owned(),
                server: server.to_owned(),
            },
            metric,
        )
    }

    /// `node/NAME/METRIC`.
    pub fn node(name: &str, metric: Metric) -> Result<SeriesName, SeriesNameError> {
        SeriesName::new(Entity::Node(name.to_owned()), metric)
    }

    /// What the series is about.
    pub fn entity(&self) -> &Entity {
        &self.entity
    }

    /// What it measures.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// How it consolidates.
    pub fn kind(&self) -> Kind {
        self.metric.kind()
    }

    fn entity_kind(&self) -> &'static str {
        match self.entity {
            Entity::Frontend(_) => "frontend",
            Entity::Backend(_) => "backend",
            Entity::Server { .. } => "server",
            Entity::Node(_) => "node",
        }
    }
}

fn metric_names(metrics: &[Metric]) -> String {
    metrics
        .iter()
        .map(|m| m.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The configuration's name rule (`tandem_config::Name`), repeated here so the store does not
/// depend on the configuration crate.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl fmt::Display for SeriesName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.entity {
            Entity::Frontend(n) => write!(f, "frontend/{n}/{}", self.metric.name()),
            Entity::Backend(n) => write!(f, "backend/{n}/{}", self.metric.name()),
            Entity::Server { backend, server } => {
                write!(f, "server/{backend}/{server}/{}", self.metric.name())
            }
            Entity::Node(n) => write!(f, "node/{n}/{}", self.metric.name()),
        }
    }
}

impl FromStr for SeriesName {
    type Err = SeriesNameError;

    fn from_str(s: &str) -> Result<SeriesName, SeriesNameError> {
        let bad = |reason: &str| SeriesNameError {
            name: s.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        let (entity, metric) = match parts.as_slice() {
            ["frontend", n, m] => (Entity::Frontend((*n).to_owned()), *m),
            ["backend", n, m] => (Entity::Backend((*n).to_owned()), *m),
            ["server", b, n, m] => (
                Entity::Server {
                    backend: (*b).to_owned(),
                    server: (*n).to_owned(),
                },
                *m,
            ),
            ["node", n, m] => (Entity::Node((*n).to_owned()), *m),
            _ => {
                return Err(bad(
                    "expected frontend/NAME/METRIC, backend/NAME/METRIC, server/BACKEND/SERVER/METRIC or node/NAME/METRIC",
                ));
            }
        };
        let metric = Metric::from_name(metric).ok_or_else(|| {
            bad(&format!(
                "unknown metric `{metric}` (known: {})",
                metric_names(&Metric::ALL)
            ))
        })?;
        SeriesName::new(entity, metric)
    }
}

impl Serialize for SeriesName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SeriesName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SeriesName, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_say_why() {
        for s in [
            "frontend/web/requests_per_s",
            "backend/app/queue",
            "server/app/web1/p99_ms",
            "node/lb1/vrrp_role",
        ] {
            let n: SeriesName = s.parse().unwrap();
            assert_eq!(n.to_string(), s);
        }
        let e = "frontend/web/queue".parse::<SeriesName>().unwrap_err();
        assert!(
            e.to_string().contains("a frontend has no metric `queue`"),
            "{e}"
        );
        let e = "server/app/p99_ms".parse::<SeriesName>().unwrap_err();
        assert!(
            e.to_string().contains("expected frontend/NAME/METRIC"),
            "{e}"
        );
        let e = "backend/app/rps".parse::<SeriesName>().unwrap_err();
        assert!(e.to_string().contains("unknown metric `rps`"), "{e}");
        let e = "backend/-x/queue".parse::<SeriesName>().unwrap_err();
        assert!(e.to_string().contains("`-x` is not a name"), "{e}");
    }

    #[test]
    fn state_metrics_consolidate_as_states() {
        assert_eq!(Metric::Health.kind(), Kind::State);
        assert_eq!(Metric::VrrpRole.kind(), Kind::State);
        assert_eq!(Metric::P99Ms.kind(), Kind::Gauge);
        assert_eq!(
            Metric::FRONTEND.len() + Metric::BACKEND.len() + Metric::SERVER.len(),
            38
        );
    }
}
