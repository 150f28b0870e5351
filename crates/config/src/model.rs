//! The validated configuration: what the proxy, VRRP daemon and config sync consume.
//!
//! Every default is filled in and every cross-reference has been checked, so consumers never
//! handle a missing value or an undefined name.
//! Field names equal the YAML keys, and `Serialize` writes the file shape back, so
//! `Config::to_yaml` output parses to an equal `Config` (a property test holds this).
//! `Clone + Eq` make configs comparable for config sync.
//! This module only defines types; construction is `validate`'s job.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

pub use crate::classes::{Class, ClassBy};
pub use crate::network::{Bond, Gateway, Link, Network, StaticRoute, Vlan};
pub use crate::raw::{
    CheckMethod, ForwardedMode, InterfaceRole, LogFormat, Mode, SendProxy, ServerState,
};
use crate::values::{
    Balance, CheckCount, Cidr, Count, Duration, Endpoint, HeaderName, InterfaceName, Name, Port,
    Priority, PriorityDelta, Rate, StatusRange, Vrid, Weight,
};

/// A complete, valid configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// Schema version; always [`crate::SUPPORTED_VERSION`].
    pub version: u32,
    /// The node pair, absent in a single-node setup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
    /// Declared interfaces; when present every interface used elsewhere is among them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<BTreeMap<InterfaceName, Interface>>,
    /// VRRP instances, in file order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vrrp: Vec<VrrpInstance>,
    /// SLA classes, in file order; unique names, distinct priorities, shares at most 100%.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<Class>,
    /// Frontends, in file order; names are unique.
    pub frontends: Vec<Frontend>,
    /// Backends, in file order; names are unique.
    pub backends: Vec<Backend>,
    /// Metrics endpoint, absent when disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// Config sync settings (defaults apply even without a cluster).
    pub sync: Sync,
    /// Proxy runtime API settings.
    pub runtime: Runtime,
    /// Network settings shared by the nodes (each node's own are in its [`Node::network`]).
    #[serde(skip_serializing_if = "Network::is_empty")]
    pub network: Network,
}

impl Config {
    /// The backend named `name`.
    pub fn backend(&self, name: &Name) -> Option<&Backend> {
        self.backends.iter().find(|b| &b.name == name)
    }

    /// The frontend named `name`.
    pub fn frontend(&self, name: &Name) -> Option<&Frontend> {
        self.frontends.iter().find(|f| &f.name == name)
    }

    /// The network settings of node `node` (the shared ones with the node's merged over
    /// them), or the shared ones for `None` or a node not in the cluster.
    pub fn network_of(&self, node: Option<&Name>) -> Network {
        let own = node
            .and_then(|n| self.cluster.as_ref()?.nodes.get(n))
            .map(|n| &n.network);
        match own {
            Some(own) => self.network.merged(own),
            None => self.network.clone(),
        }
    }

    /// The class named `name`.
    pub fn class(&self, name: &Name) -> Option<&Class> {
        self.classes.iter().find(|c| &c.name == name)
    }

    /// The file shape as YAML, with every default written out; parses back to an equal config.
    pub fn to_yaml(&self) -> String {
        // Serializing plain structs, strings and integers to a String cannot fail.
        serde_norway::to_string(self).unwrap_or_else(|e| format!("# cannot serialize: {e}\n"))
    }
}

/// The pair of nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cluster {
    /// Cluster name.
    pub name: Name,
    /// One or two nodes, by node name.
    pub nodes: BTreeMap<Name, Node>,
}

/// One appliance node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Address on the LAN (unicast VRRP peer address).
    pub lan_address: std::net::IpAddr,
    /// Address on the sync link (config sync peer address).
    pub sync_address: std::net::IpAddr,
    /// Base VRRP priority; nodes have distinct priorities.
    pub priority: Priority,
    /// This node's network overrides (see [`Config::network_of`]).
    #[serde(skip_serializing_if = "Network::is_empty")]
    pub network: Network,
}

/// A declared network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    /// What the interface is for, if said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<InterfaceRole>,
}

/// A VRRP instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VrrpInstance {
    /// Unique instance name.
    pub name: Name,
    /// Interface for adverts and VIPs.
    pub interface: InterfaceName,
    /// Virtual router id, unique on its interface.
    pub vrid: Vrid,
    /// Advert interval of the master, at least 10 ms.
    pub advert_interval: Duration,
    /// Whether a higher-priority node takes over from a live master.
    pub preempt: bool,
    /// Delay before preempting after start-up.
    pub preempt_delay: Duration,
    /// Whether the master accepts traffic addressed to the VIPs.
    pub accept: bool,
    /// Unicast adverts to the peer's `lan_address` (implies a two-node cluster).
    pub unicast: bool,
    /// The VIPs, at least one, no duplicates.
    pub addresses: Vec<Cidr>,
    /// Priority decreases while unhealthy.
    pub track: Track,
}

/// Tracked health lowering a node's priority.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Track {
    /// Decrease while the local proxy is unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<PriorityDelta>,
    /// Decrease per interface while it is down.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub interfaces: BTreeMap<InterfaceName, PriorityDelta>,
}

/// A frontend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frontend {
    /// Unique frontend name.
    pub name: Name,
    /// Protocol mode.
    pub mode: Mode,
    /// Listening addresses, at least one; no address:port is bound twice in the config.
    pub bind: Vec<Bind>,
    /// TLS termination, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<FrontendTls>,
    /// Most concurrent client connections.
    pub max_connections: Count,
    /// Client-side timeouts.
    pub timeouts: FrontendTimeouts,
    /// Per-source abuse protection, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protect: Option<Protect>,
    /// Routes in order (http mode only); every backend exists and has the same mode.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Backend for unmatched traffic; exists and has the same mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<Name>,
    /// Request size limits.
    pub limits: Limits,
    /// Client-address header mode.
    pub forwarded: ForwardedMode,
    /// Access log, if enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
    /// Default class: a defined class; filled in (the lowest-priority class) whenever
    /// `classes` is not empty, `None` only without classes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<Name>,
    /// Classification by source and header; every class named is defined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_by: Option<ClassBy>,
}

/// A listening address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bind {
    /// Address and port.
    pub address: Endpoint,
    /// Whether a PROXY protocol header is expected.
    pub proxy_protocol: bool,
}

/// TLS termination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FrontendTls {
    /// Certificate+key PEM files as written (see [`crate::Loaded::resolve`]); at least one.
    pub certificates: Vec<PathBuf>,
    /// ALPN protocols in preference order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
}

/// Client-side timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FrontendTimeouts {
    /// Time to receive the request headers; non-zero.
    pub client_header: Duration,
    /// Idle client connection lifetime; non-zero.
    pub client_idle: Duration,
}

/// Per-source abuse protection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Protect {
    /// New connections per source limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_rate_per_source: Option<Rate>,
    /// Requests per source limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_rate_per_source: Option<Rate>,
    /// Concurrent connections per source limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrent_connections_per_source: Option<Count>,
}

/// A route; at least one condition is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Host to match (lowercased).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix to match, starts with `/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Header condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderMatch>,
    /// Target backend.
    pub backend: Name,
    /// Class of matching requests, a defined class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<Name>,
}

/// A header condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderMatch {
    /// Header name.
    pub name: HeaderName,
    /// Exact value, or any value when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Request size limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Bytes of request line and headers.
    pub max_header_size: Count,
    /// Number of header fields.
    pub max_headers: Count,
}

/// Access log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessLog {
    /// Line format.
    pub format: LogFormat,
}

/// A backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// Unique backend name.
    pub name: Name,
    /// Protocol mode.
    pub mode: Mode,
    /// Server selection; `uri` and `header` only in http mode.
    pub balance: Balance,
    /// Persistence, if any; `cookie` only in http mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistence: Option<Persistence>,
    /// Health checks, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Queue wait limit.
    pub queue_timeout: Duration,
    /// Server-side timeouts.
    pub timeouts: BackendTimeouts,
    /// Connect retries.
    pub retries: u8,
    /// Weight ramp-up time, zero when off.
    pub slow_start: Duration,
    /// PROXY protocol to servers.
    pub send_proxy: SendProxy,
    /// TLS to servers, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTls>,
    /// Servers, at least one, unique names.
    pub servers: Vec<Server>,
}

/// Session persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persistence {
    /// Cookie naming the server.
    Cookie {
        /// Cookie name.
        name: String,
    },
    /// Client address stickiness.
    Source {
        /// Entry lifetime after the last connection.
        expire: Duration,
    },
}

impl Serialize for Persistence {
    /// Writes the file shape `{ cookie: { name } }` or `{ source: { expire } }`; a derived
    /// impl would make serde_norway emit a YAML tag (`!cookie`), which the file does not use.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        #[derive(Serialize)]
        struct Cookie<'a> {
            name: &'a str,
        }
        #[derive(Serialize)]
        struct Source {
            expire: Duration,
        }
        let mut map = s.serialize_map(Some(1))?;
        match self {
            Persistence::Cookie { name } => map.serialize_entry("cookie", &Cookie { name })?,
            Persistence::Source { expire } => {
                map.serialize_entry("source", &Source { expire: *expire })?
            }
        }
        map.end()
    }
}

/// Health checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    /// The active check.
    #[serde(flatten)]
    pub kind: CheckKind,
    /// Time between checks; non-zero.
    pub interval: Duration,
    /// Check timeout; non-zero, at most `interval`.
    pub timeout: Duration,
    /// Successes to mark up.
    pub rise: CheckCount,
    /// Failures to mark down.
    pub fall: CheckCount,
    /// Passive health, if enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveCheck>,
}

/// The kind of active check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// TCP connect.
    Tcp {},
    /// HTTP request.
    Http(HttpCheck),
}

/// HTTP check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpCheck {
    /// Method.
    pub method: CheckMethod,
    /// Path, starts with `/`.
    pub path: String,
    /// Host header, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Healthy statuses.
    pub expect_status: StatusRange,
}

/// Passive health thresholds; at least one is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassiveCheck {
    /// Consecutive connection failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<Count>,
    /// Consecutive 5xx responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Option<Count>,
}

/// Server-side timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendTimeouts {
    /// Connect timeout; non-zero.
    pub connect: Duration,
    /// Server silence timeout; non-zero.
    pub server: Duration,
}

/// TLS to servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendTls {
    /// Verify server certificates.
    pub verify: bool,
    /// SNI name, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// CA bundle path as written, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// A server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Server {
    /// Name, unique in the backend.
    pub name: Name,
    /// Address and port.
    pub address: Endpoint,
    /// Relative weight.
    pub weight: Weight,
    /// Connection limit, unlimited when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<Count>,
    /// Backup server.
    pub backup: bool,
    /// Administrative state.
    pub state: ServerState,
}

/// Metrics endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metrics {
    /// Listen address.
    pub listen: Endpoint,
    /// Basic authentication of scrapers, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<MetricsAuth>,
}

/// Basic authentication of the metrics endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricsAuth {
    /// At least one user, unique names.
    pub users: Vec<MetricsUser>,
}

/// One scraper account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricsUser {
    /// User name, without `:`.
    pub name: String,
    /// Argon2id PHC string or SHA-256-crypt string, checked for shape and cost.
    pub password_hash: String,
}

/// Config sync settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sync {
    /// TCP port on each node's sync address.
    pub port: Port,
}

/// Proxy runtime API settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Runtime {
    /// Absolute unix socket path.
    pub socket: PathBuf,
}
