//! The file shape: raw serde structs mirroring the YAML keys one to one, plus the defaults.
//!
//! Every field is optional or defaulted here so that one missing or broken key never hides the
//! others; `validate` decides what is required and fills in the defaults below.
//! The doc comment of each field is the operator documentation (it lands in `tandem schema`)
//! and must give the unit and the default.
//! To add a key: add the field here with a doc comment, a default constant if it has one, the
//! typed field in `model`, the conversion in `validate`, and a row in `docs/config.md`
//! (a test fails if the row is missing).
//! This module does no checking beyond what the value types enforce.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

pub use crate::classes::{RawClass, RawClassBy};
pub use crate::network::{
    BondMode, RawBond, RawGateway, RawLink, RawNetwork, RawStaticRoute, RawVlan,
};
use crate::values::{
    Balance, CheckCount, Cidr, Count, Duration, Endpoint, HeaderName, InterfaceName, Ip, Name,
    Port, Priority, PriorityDelta, Rate, StatusRange, Vrid, Weight,
};

/// The configuration schema version this firmware reads.
pub const SUPPORTED_VERSION: u32 = 1;
/// Default VRRP advertisement interval: 1 second (keepalived `advert_int 1`).
pub const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_secs(1);
/// Default delay before a higher-priority node takes the VIPs back: 0 seconds.
pub const DEFAULT_PREEMPT_DELAY: Duration = Duration::ZERO;
/// Default most concurrent client connections per frontend: 10000 connections.
pub const DEFAULT_FRONTEND_MAX_CONNECTIONS: u32 = 10_000;
/// Default time a client has to send complete request headers: 5 seconds.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time an idle client connection is kept: 60 seconds.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default largest request header block: 16384 bytes (HAProxy `tune.bufsize`).
pub const DEFAULT_MAX_HEADER_SIZE: u32 = 16_384;
/// Default most request header fields: 100 headers (HAProxy `tune.http.maxhdr` is 101).
pub const DEFAULT_MAX_HEADERS: u32 = 100;
/// Default longest a request waits in the backend queue for a free server: 5 seconds.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time to establish a connection to a server: 5 seconds.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default longest a server may stay silent once a request is sent: 30 seconds.
pub const DEFAULT_SERVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of connection retries to another server: 3 retries.
pub const DEFAULT_RETRIES: u8 = 3;
/// Default server weight: 1.
pub const DEFAULT_WEIGHT: u16 = 1;
/// Default health-check interval: 2 seconds (HAProxy `inter 2s`).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Default health-check timeout: 1 second.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Default consecutive successful checks to mark a server up: 2 checks.
pub const DEFAULT_RISE: u8 = 2;
/// Default consecutive failed checks to mark a server down: 3 checks.
pub const DEFAULT_FALL: u8 = 3;
/// Default HTTP health-check path: `/`.
pub const DEFAULT_CHECK_PATH: &str = "/";
/// Default persistence cookie name: `SERVERID`.
pub const DEFAULT_COOKIE_NAME: &str = "SERVERID";
/// Default lifetime of a source-address stickiness entry: 30 minutes.
pub const DEFAULT_SOURCE_EXPIRE: Duration = Duration::from_secs(30 * 60);
/// Default metrics listen address: `127.0.0.1:9100`.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9100";
/// Default TCP port of config sync between the nodes: 7400.
pub const DEFAULT_SYNC_PORT: u16 = 7400;
/// Default path of the proxy runtime API unix socket: `/run/tandem/proxy.sock`.
pub const DEFAULT_RUNTIME_SOCKET: &str = "/run/tandem/proxy.sock";
/// Largest Argon2id memory cost accepted in `metrics.auth`, in KiB (64 MiB): verifying a
/// password must stay cheap for the proxy.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 64 * 1024;
/// Largest Argon2id time cost (passes) accepted in `metrics.auth`.
pub const MAX_ARGON2_PASSES: u32 = 16;
/// Largest Argon2id parallelism accepted in `metrics.auth`.
pub const MAX_ARGON2_LANES: u32 = 8;
/// Largest SHA-256-crypt `rounds` accepted in `metrics.auth` (the default is 5000).
pub const MAX_SHA_CRYPT_ROUNDS: u32 = 1_000_000;
/// File descriptors the appliance gives the proxy (`LimitNOFILE=` of its unit, soft and
/// hard; the proxy raises its soft limit to the hard one at start). `tandem check` warns
/// when the frontends' `max_connections` need more ([`file_descriptors_needed`]).
pub const APPLIANCE_NOFILE: u64 = 1_048_576;
/// File descriptors the proxy keeps besides its connections and listeners: the runtime API
/// (8 sessions and the probe slot), the handover socket, metrics (16 scrapes), the async
/// runtime (epoll, eventfd, signal pipe), standard streams and config reads.
pub const FD_RESERVE: u64 = 64;

/// File descriptors a proxy serving `connections` client connections at once needs: two per
/// connection (the client's and its server connection; a pooled idle server connection is
/// one a client left, so counted in that share), one per listening address (`listeners`), one
/// per health-checked server (its probe connection, `checks`), and [`FD_RESERVE`].
/// HTTP/2 streams beyond one per client connection each hold a server connection too;
/// servers' `max_connections` bound those.
pub fn file_descriptors_needed(connections: u64, listeners: u64, checks: u64) -> u64 {
    2 * connections + listeners + checks + FD_RESERVE
}

/// The node's run directory on the appliance: every Tandem socket lives directly in it.
pub const RUN_DIR: &str = "/run/tandem";
/// Socket names of the other daemons in a run directory, never the proxy's runtime API.
pub const RESERVED_SOCKET_NAMES: [&str; 3] = ["supervisor.sock", "vrrp.sock", "vrrp.sock.guardian"];

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Schema version of this file; required, and must be `1`.
    pub version: Option<u32>,
    /// The two appliance nodes sharing this file; omit for a single-node setup.
    pub cluster: Option<RawCluster>,
    /// Network interfaces of the nodes, by name; when present, every interface named elsewhere must be declared here.
    pub interfaces: Option<BTreeMap<InterfaceName, RawInterface>>,
    /// VRRP instances: each moves a set of VIPs between the nodes; omit for no failover.
    pub vrrp: Vec<RawVrrp>,
    /// SLA classes: who is served first, and who keeps a share, when every server of a backend is at `max_connections`; omit for one FIFO queue per backend.
    pub classes: Vec<RawClass>,
    /// Frontends: where client connections are accepted and routed to backends.
    pub frontends: Vec<RawFrontend>,
    /// Backends: pools of servers that frontends send traffic to.
    pub backends: Vec<RawBackend>,
    /// Prometheus metrics endpoint; omit to disable it.
    pub metrics: Option<RawMetrics>,
    /// Config sync between the two nodes.
    pub sync: Option<RawSync>,
    /// Proxy runtime API (drain, maint, weight changes without reload).
    pub runtime: Option<RawRuntime>,
    /// Network settings shared by the nodes: gateways, routes, DNS, NTP, MTUs, VLANs, bonds; a node's `network` overrides them.
    pub network: Option<RawNetwork>,
}

/// The pair of nodes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawCluster {
    /// Name of the cluster, shown in logs and metrics; required.
    pub name: Option<Name>,
    /// The nodes by node name (the host name each node runs with); at most two.
    pub nodes: BTreeMap<Name, RawNode>,
}

/// One node of the pair.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawNode {
    /// The node's own address on the LAN, used for unicast VRRP; required.
    pub lan_address: Option<Ip>,
    /// The node's address on the sync link, used by config sync; required.
    pub sync_address: Option<Ip>,
    /// VRRP priority of this node, 1 to 254; the highest live priority holds the VIPs; required.
    pub priority: Option<Priority>,
    /// This node's network settings where they differ from the shared `network` section: a list or a gateway family given here replaces the shared one, interface, VLAN and bond entries are merged by name.
    pub network: Option<RawNetwork>,
}

/// A network interface of the nodes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawInterface {
    /// What the interface is for: `lan`, `wan`, `sync` or `mgmt`; optional, informational.
    pub role: Option<InterfaceRole>,
}

/// What an interface is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InterfaceRole {
    /// Client-facing network carrying the VIPs.
    Lan,
    /// Upstream or internet-facing network.
    Wan,
    /// Dedicated link between the two nodes for config sync.
    Sync,
    /// Management network.
    Mgmt,
}

/// A VRRP instance (keepalived `vrrp_instance`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawVrrp {
    /// Name of the instance; required, unique.
    pub name: Option<Name>,
    /// Interface the VRRP adverts are sent on and the VIPs are added to; required.
    pub interface: Option<InterfaceName>,
    /// Virtual router id, 1 to 255, unique per interface; required.
    pub vrid: Option<Vrid>,
    /// Interval between adverts of the master; default `1s`, at least `10ms`.
    pub advert_interval: Option<Duration>,
    /// Whether a node with higher priority takes the VIPs back from a live master; default `true`.
    pub preempt: Option<bool>,
    /// How long a higher-priority node waits after start-up before preempting; default `0s`.
    pub preempt_delay: Option<Duration>,
    /// Whether the master accepts packets addressed to the VIPs (needed to proxy them); default `true`.
    pub accept: Option<bool>,
    /// Send adverts to the peer's `lan_address` instead of multicast; default `false`; needs `cluster`.
    pub unicast: Option<bool>,
    /// The VIPs with prefix length, e.g. `198.18.0.100/24`; at least one.
    pub addresses: Vec<Cidr>,
    /// What lowers this node's priority while unhealthy; default: nothing tracked.
    pub track: Option<RawTrack>,
}

/// Tracked health that lowers a node's VRRP priority.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawTrack {
    /// Priority decrease, 1 to 254, while the local proxy is not running or not healthy.
    pub proxy: Option<PriorityDelta>,
    /// Priority decrease, 1 to 254, per interface name while that interface is down.
    pub interfaces: BTreeMap<InterfaceName, PriorityDelta>,
}

/// Whether a frontend or backend speaks HTTP or forwards raw TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// HTTP/1.1 and HTTP/2: requests are parsed, routed and logged one by one.
    #[default]
    Http,
    /// Plain TCP: bytes are forwarded, no routing by request content.
    Tcp,
}

/// A frontend (HAProxy `frontend`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawFrontend {
    /// Name of the frontend; required, unique.
    pub name: Option<Name>,
    /// `http` or `tcp`; default `http`.
    pub mode: Option<Mode>,
    /// Addresses to listen on: `"IP:PORT"` or `{ address, proxy_protocol }`; at least one.
    pub bind: Vec<RawBind>,
    /// TLS termination on every bind of this frontend; omit for plain text.
    pub tls: Option<RawFrontendTls>,
    /// Most concurrent client connections; default 10000 connections.
    pub max_connections: Option<Count>,
    /// Client-side timeouts.
    pub timeouts: Option<RawFrontendTimeouts>,
    /// Per-source-address abuse protection; omit for none.
    pub protect: Option<RawProtect>,
    /// Request routes, tried in order; the first match picks the backend (http mode only).
    pub routes: Vec<RawRoute>,
    /// Backend for connections or requests no route matches.
    pub default_backend: Option<Name>,
    /// Request size limits (http mode).
    pub limits: Option<RawLimits>,
    /// Which client-address headers are added to requests: `x-forwarded`, `forwarded` or `none`; default `x-forwarded`.
    pub forwarded: Option<ForwardedMode>,
    /// Access log of this frontend; omit to disable it.
    pub access_log: Option<RawAccessLog>,
    /// Class of requests no route, header or source assigns; default the lowest-priority class (the largest `priority`).
    pub class: Option<Name>,
    /// How requests get their class: by client network and by a request header.
    pub class_by: Option<RawClassBy>,
}

/// One listening address, as a string or as a mapping with options.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawBind {
    /// `"IP:PORT"`.
    Address(Endpoint),
    /// `{ address: "IP:PORT", proxy_protocol: true }`.
    Full(RawBindFull),
}

/// A listening address with options.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawBindFull {
    /// `IP:PORT` to listen on; required.
    pub address: Option<Endpoint>,
    /// Expect a PROXY protocol (v1 or v2) header from a load balancer in front; default `false`.
    pub proxy_protocol: Option<bool>,
}

impl<'de> Deserialize<'de> for RawBind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawBind;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an address like `198.18.0.100:80` or a mapping with `address`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawBind, E> {
                v.parse().map(RawBind::Address).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawBind, A::Error> {
                RawBindFull::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawBind::Full)
            }
        }
        d.deserialize_any(V)
    }
}

/// TLS termination settings of a frontend.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawFrontendTls {
    /// PEM files, each with a certificate chain and its private key; relative paths are relative to the config file's directory; at least one.
    pub certificates: Vec<PathBuf>,
    /// ALPN protocols offered, in preference order, e.g. `[h2, http/1.1]`; default none (HTTP/1.1).
    pub alpn: Vec<String>,
}

/// Client-side timeouts of a frontend.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawFrontendTimeouts {
    /// Time to receive a complete request header block (HAProxy `timeout http-request`); default `5s`.
    pub client_header: Option<Duration>,
    /// Time an idle client connection is kept open (HAProxy `timeout client`); default `60s`.
    pub client_idle: Option<Duration>,
}

/// Per-source-address abuse protection (HAProxy stick-table rate limits).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawProtect {
    /// Most new connections per client address, e.g. `100/10s`; default unlimited.
    pub connection_rate_per_source: Option<Rate>,
    /// Most HTTP requests per client address, e.g. `500/10s`; default unlimited.
    pub request_rate_per_source: Option<Rate>,
    /// Most simultaneous connections per client address; default unlimited.
    pub concurrent_connections_per_source: Option<Count>,
}

/// A request route; every given condition must match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawRoute {
    /// Exact `Host` header to match, without port, case-insensitive.
    pub host: Option<String>,
    /// Request path prefix to match, starting with `/`.
    pub path_prefix: Option<String>,
    /// Request header to match.
    pub header: Option<RawHeaderMatch>,
    /// Backend that serves matching requests; required.
    pub backend: Option<Name>,
    /// Class of matching requests; overrides `class_by` and the frontend's `class`.
    pub class: Option<Name>,
}

/// A request-header condition.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawHeaderMatch {
    /// Header name, case-insensitive; required.
    pub name: Option<HeaderName>,
    /// Exact header value; omit to match any request that has the header.
    pub value: Option<String>,
}

/// Request size limits.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Largest request line and header block, in bytes; default 16384 bytes.
    pub max_header_size: Option<Count>,
    /// Most header fields in a request; default 100 headers.
    pub max_headers: Option<Count>,
}

/// Which headers carry the client address to servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
pub enum ForwardedMode {
    /// `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host`.
    #[default]
    #[serde(rename = "x-forwarded")]
    XForwarded,
    /// The standard `Forwarded` header (RFC 7239).
    #[serde(rename = "forwarded")]
    Forwarded,
    /// No client-address header.
    #[serde(rename = "none")]
    None,
}

/// Access log settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawAccessLog {
    /// Line format: `haproxy` (HAProxy's httplog/tcplog) or `json`; default `haproxy`.
    pub format: Option<LogFormat>,
}

/// Access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// HAProxy's `httplog` / `tcplog` layout, familiar to existing log tooling.
    #[default]
    Haproxy,
    /// One JSON object per line.
    Json,
}

/// A backend (HAProxy `backend`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawBackend {
    /// Name of the backend; required, unique.
    pub name: Option<Name>,
    /// `http` or `tcp`; default `http`; must match the frontends that use it.
    pub mode: Option<Mode>,
    /// Server selection: `roundrobin`, `leastconn`, `source`, `uri`, `header(NAME)`, `first` or `random`; default `roundrobin`.
    pub balance: Option<Balance>,
    /// Session persistence: `{ cookie: { name } }` or `{ source: { expire } }`; default none.
    pub persistence: Option<RawPersistence>,
    /// Active (and passive) health checks; omit to consider every server always up.
    pub health_check: Option<RawHealthCheck>,
    /// Longest a request waits in the queue when all servers are at `max_connections`; default `5s`.
    pub queue_timeout: Option<Duration>,
    /// Server-side timeouts.
    pub timeouts: Option<RawBackendTimeouts>,
    /// Connection attempts to another server after a failed connect; default 3 retries.
    pub retries: Option<u8>,
    /// Time over which a server coming up ramps from 0 to its full weight; default `0s` (off).
    pub slow_start: Option<Duration>,
    /// PROXY protocol header sent to servers: `none`, `v1` or `v2`; default `none`.
    pub send_proxy: Option<SendProxy>,
    /// TLS to the servers; omit for plain text.
    pub tls: Option<RawBackendTls>,
    /// The servers; at least one.
    pub servers: Vec<RawServer>,
}

/// Session persistence; give exactly one of `cookie` or `source`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawPersistence {
    /// Insert a cookie naming the server (http mode only).
    pub cookie: Option<RawCookie>,
    /// Stick each client address to a server.
    pub source: Option<RawSourcePersistence>,
}

/// Cookie persistence.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawCookie {
    /// Cookie name; default `SERVERID`.
    pub name: Option<String>,
}

/// Source-address persistence.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawSourcePersistence {
    /// Time after the last connection that a client stays stuck to its server; default `30m`.
    pub expire: Option<Duration>,
}

/// Health checks; the active check is `http` when given, otherwise a TCP connect.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawHealthCheck {
    /// HTTP check: send a request, expect a status.
    pub http: Option<RawHttpCheck>,
    /// TCP connect check (the default check kind); takes no options yet.
    pub tcp: Option<RawTcpCheck>,
    /// Time between two checks of a server; default `2s`.
    pub interval: Option<Duration>,
    /// Time a check may take before it counts as failed; default `1s`; at most `interval`.
    pub timeout: Option<Duration>,
    /// Consecutive successful checks to mark a down server up, 1 to 255; default 2.
    pub rise: Option<CheckCount>,
    /// Consecutive failed checks to mark an up server down, 1 to 255; default 3.
    pub fall: Option<CheckCount>,
    /// Mark a server down from live traffic errors, before the active check notices; default off.
    pub passive: Option<RawPassiveCheck>,
}

/// HTTP health check.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttpCheck {
    /// Request method: `GET`, `HEAD` or `OPTIONS`; default `GET`.
    pub method: Option<CheckMethod>,
    /// Request path, starting with `/`; default `/`.
    pub path: Option<String>,
    /// `Host` header sent; default the server address.
    pub host: Option<String>,
    /// Status or status range that counts as healthy, e.g. `200-399`; default `200-399`.
    pub expect_status: Option<StatusRange>,
}

/// HTTP method of a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum CheckMethod {
    /// `GET`.
    #[default]
    Get,
    /// `HEAD`.
    Head,
    /// `OPTIONS`.
    Options,
}

/// TCP connect check; no options yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawTcpCheck {}

/// Passive health: live traffic errors that mark a server down until active checks pass `rise` times.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawPassiveCheck {
    /// Consecutive connection failures or timeouts that mark a server down; default off.
    pub consecutive_failures: Option<Count>,
    /// Consecutive 5xx responses that mark a server down (http mode); default off.
    pub consecutive_5xx: Option<Count>,
}

/// Server-side timeouts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawBackendTimeouts {
    /// Time to establish a TCP connection to a server (HAProxy `timeout connect`); default `5s`.
    pub connect: Option<Duration>,
    /// Longest a server may stay silent while a response is due (HAProxy `timeout server`); default `30s`.
    pub server: Option<Duration>,
}

/// PROXY protocol header sent to servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SendProxy {
    /// No header.
    #[default]
    None,
    /// Text header, version 1.
    V1,
    /// Binary header, version 2.
    V2,
}

/// TLS from the proxy to the servers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawBackendTls {
    /// Verify the server certificate chain and name; default `true`.
    pub verify: Option<bool>,
    /// Server name sent in TLS SNI and verified; default none (the address is verified).
    pub sni: Option<String>,
    /// PEM file of CA certificates to verify servers with; relative to the config file's directory; default the firmware's root store.
    pub ca: Option<PathBuf>,
}

/// Administrative state of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Takes traffic when healthy.
    #[default]
    Ready,
    /// Takes no new connections; existing ones and persistent clients finish.
    Drain,
    /// Takes no traffic at all; health checks stop.
    Maint,
}

/// A server (HAProxy `server`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Name of the server, unique in its backend; required.
    pub name: Option<Name>,
    /// `IP:PORT` of the server; required.
    pub address: Option<Endpoint>,
    /// Share of traffic relative to the other servers, 0 to 256; default 1.
    pub weight: Option<Weight>,
    /// Most concurrent connections to this server, extra requests queue; default unlimited.
    pub max_connections: Option<Count>,
    /// Used only when no non-backup server is up; default `false`.
    pub backup: Option<bool>,
    /// `ready`, `drain` or `maint`; default `ready`.
    pub state: Option<ServerState>,
}

/// Prometheus metrics endpoint.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// `IP:PORT` serving `/metrics`; default `127.0.0.1:9100`.
    pub listen: Option<Endpoint>,
    /// HTTP basic authentication of scrapers; omit to serve anyone who reaches `listen`.
    pub auth: Option<RawMetricsAuth>,
}

/// Basic authentication of the metrics endpoint.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetricsAuth {
    /// Who may scrape; at least one user, names unique.
    pub users: Vec<RawMetricsUser>,
}

/// One scraper account.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetricsUser {
    /// User name sent by the scraper; required, no `:`.
    pub name: Option<String>,
    /// Hash of the password: Argon2id (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) or
    /// SHA-256-crypt (`$5$[rounds=N$]salt$hash`, as `mkpasswd -m sha-256` prints); required.
    pub password_hash: Option<String>,
}

/// Config sync settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawSync {
    /// TCP port config sync listens on, on each node's `sync_address`; default 7400.
    pub port: Option<Port>,
}

/// Proxy runtime API settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawRuntime {
    /// Absolute path of the unix socket of the runtime API, directly in the run directory
    /// `/run/tandem` (or, off the appliance, in a directory named `tandem-*`); default
    /// `/run/tandem/proxy.sock`.
    pub socket: Option<PathBuf>,
}
