//! The `Plan`: the proxy's compiled, immutable runtime view of its configuration.
//!
//! Owns: frontends (binds, mode, routes, client timeouts, limits), backends (servers,
//! algorithm, server-side timeouts, queue limits, health check), and their validation
//! (references resolve, binds are unique, modes agree).
//! Does not own: live state (connection counts, health), which lives in [`crate::live`]
//! and is attached to a plan when the proxy installs it; nor any IO.
//! A `Plan` is a value: it is built once, never edited, and replaced whole on reload.
//! Building it also builds each backend's `tandem_balance::Backend` (the selection snapshot),
//! so a plan that compiles can always select.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use tandem_balance::{BackendSpec, BalanceError, ServerSpec};

pub use tandem_balance::{AdminState, Balance as Algorithm};

/// Default `timeout connect` (HAProxy vocabulary), in seconds.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 5;
/// Default `timeout server`: longest wait for a server's response head, in seconds.
pub const DEFAULT_SERVER_TIMEOUT_SECS: u64 = 30;
/// Default `timeout queue`: longest wait in the backend queue for a server slot, in seconds.
pub const DEFAULT_QUEUE_TIMEOUT_SECS: u64 = 5;
/// Default `timeout client` header part: longest time to receive a complete request head, in seconds.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT_SECS: u64 = 10;
/// Default `timeout client` for TCP relays and idle keep-alive, in seconds.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Default number of extra servers tried when connecting fails (`retries`).
pub const DEFAULT_RETRIES: u32 = 3;
/// Default bound on requests waiting in one backend's queue.
pub const DEFAULT_MAX_QUEUE: usize = 1024;
/// Default bound on the number of request header fields.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default bound on the request head size, in bytes (hyper's read buffer).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default health check interval, in milliseconds (`inter`).
pub const DEFAULT_CHECK_INTERVAL_MS: u64 = 2000;
/// Default health check timeout, in milliseconds.
pub const DEFAULT_CHECK_TIMEOUT_MS: u64 = 1000;
/// Default consecutive successes to mark a server up (`rise`).
pub const DEFAULT_RISE: u32 = 2;
/// Default consecutive failures to mark a server down (`fall`).
pub const DEFAULT_FALL: u32 = 3;
/// Default idle connections kept per server in the upstream pool.
pub const DEFAULT_MAX_IDLE_PER_SERVER: usize = 1024;
/// Entries in a backend's source stick table (`persistence: source`); the least recently used
/// client is evicted when full. About 100 bytes each.
pub const STICK_TABLE_CAPACITY: usize = 65_536;

/// Index of a backend inside its [`Plan`].
pub type BackendId = usize;

/// What a frontend speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// HTTP/1.1 termination and forwarding (`mode http`).
    Http,
    /// Layer-4 relay (`mode tcp`).
    Tcp,
}

/// Session persistence of a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// HAProxy `cookie NAME insert`: the response sets `NAME=<server id>` for new users.
    Cookie {
        /// Cookie name.
        name: String,
    },
    /// HAProxy `stick on src`: clients stick to a server for `expire` after their last request.
    Source {
        /// Entry lifetime after the last use.
        expire: Duration,
    },
}

/// A rate limit: at most `count` events per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Events allowed per period.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

/// Per-source abuse protection of a frontend (frontend `protect`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Protect {
    /// New connections per source: over it, tcp closes and http answers 429.
    pub connection_rate: Option<Rate>,
    /// Requests per source (http): over it, 429.
    pub request_rate: Option<Rate>,
    /// Concurrent connections per source.
    pub concurrent: Option<u32>,
}

impl Protect {
    /// Whether any limit is set.
    pub fn is_enabled(&self) -> bool {
        self.connection_rate.is_some() || self.request_rate.is_some() || self.concurrent.is_some()
    }
}

/// Client-address headers added to forwarded requests (frontend `forwarded`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Forwarded {
    /// `X-Forwarded-For` (appended), `X-Forwarded-Proto`, `X-Forwarded-Host`.
    #[default]
    XForwarded,
    /// RFC 7239 `Forwarded: for=...;proto=...;host=...` (appended).
    Rfc7239,
    /// None.
    None,
}

/// Access log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// No access log.
    #[default]
    Off,
    /// HAProxy-like text line.
    Text,
    /// One JSON object (structured tracing fields).
    Json,
}

/// Process-wide settings that are not reloaded (a change needs a restart).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Runtime API Unix socket.
    pub runtime_socket: Option<PathBuf>,
    /// Prometheus `/metrics` listen address.
    pub metrics_listen: Option<SocketAddr>,
    /// Scrapers allowed on `/metrics` (user name, password hash); `None`: anyone.
    pub metrics_auth: Option<Vec<(String, String)>>,
}

/// Errors found while building a [`Plan`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// Two frontends or two backends have the same name.
    #[error("duplicate {kind} name {name:?}")]
    DuplicateName {
        /// `frontend` or `backend`.
        kind: &'static str,
        /// The repeated name.
        name: String,
    },
    /// Two frontends (or one twice) bind the same address.
    #[error("address {addr} is bound by both frontend {first:?} and frontend {second:?}")]
    DuplicateBind {
        /// The address bound twice.
        addr: SocketAddr,
        /// The frontend that binds it first.
        first: String,
        /// The frontend that binds it again.
        second: String,
    },
    /// A frontend refers to a backend that does not exist.
    #[error("frontend {frontend:?} refers to unknown backend {backend:?}")]
    UnknownBackend {
        /// The referring frontend.
        frontend: String,
        /// The missing backend name.
        backend: String,
    },
    /// A frontend uses a backend of another mode.
    #[error(
        "frontend {frontend:?} (mode {frontend_mode:?}) uses backend {backend:?} of mode {backend_mode:?}"
    )]
    ModeMismatch {
        /// The frontend.
        frontend: String,
        /// Its mode.
        frontend_mode: Mode,
        /// The backend.
        backend: String,
        /// The backend's mode.
        backend_mode: Mode,
    },
    /// A tcp frontend has routes or no default backend.
    #[error("tcp frontend {frontend:?} needs exactly a default backend and no routes")]
    TcpRouting {
        /// The frontend.
        frontend: String,
    },
    /// A frontend has no bind address.
    #[error("frontend {frontend:?} has no bind address")]
    NoBind {
        /// The frontend.
        frontend: String,
    },
    /// Two servers of one backend share a name.
    #[error("backend {backend:?} has two servers named {server:?}")]
    DuplicateServer {
        /// The backend.
        backend: String,
        /// The repeated server name.
        server: String,
    },
    /// The balancer refused a backend (weight above 256, empty header name, id collision).
    #[error("{0}")]
    Balance(#[from] BalanceError),
    /// TLS material of a frontend or backend could not be loaded.
    #[error("{kind} {owner:?}: {source}")]
    Tls {
        /// `frontend` or `backend`.
        kind: &'static str,
        /// Its name.
        owner: String,
        /// What failed.
        source: crate::tls::TlsError,
    },
    /// A number that must be positive is zero.
    #[error("{what} must be positive in {owner:?}")]
    Zero {
        /// The field, e.g. `rise`, `max_connections`.
        what: &'static str,
        /// The frontend, backend or server name.
        owner: String,
    },
}

/// A rule sending matching HTTP requests to a backend; all set conditions must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Exact host (lowercase, without port); `None` matches any.
    pub host: Option<String>,
    /// Path prefix, e.g. `/api/`; `None` matches any.
    pub path_prefix: Option<String>,
    /// A header that must be present, with exactly this value when one is given.
    pub header: Option<(HeaderName, Option<HeaderValue>)>,
    /// Name of the target backend.
    pub backend: String,
}

/// Client-side timeouts of a frontend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// Longest time to receive a whole request head (slowloris defence).
    pub header: Duration,
    /// Longest inactivity on a client connection (keep-alive idle, TCP relay idle).
    pub idle: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        Self {
            header: Duration::from_secs(DEFAULT_CLIENT_HEADER_TIMEOUT_SECS),
            idle: Duration::from_secs(DEFAULT_CLIENT_IDLE_TIMEOUT_SECS),
        }
    }
}

/// One frontend: where clients connect and how their traffic is routed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontend {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// Listening addresses.
    pub binds: Vec<SocketAddr>,
    /// What the frontend speaks.
    pub mode: Mode,
    /// Routes, tried in order (http only).
    pub routes: Vec<Route>,
    /// Backend used when no route matches.
    pub default_backend: Option<String>,
    /// Client-side timeouts.
    pub timeouts: ClientTimeouts,
    /// Most concurrent client connections (`maxconn`); `None` is unbounded.
    pub max_connections: Option<u32>,
    /// Most request header fields.
    pub max_headers: usize,
    /// Most bytes of a request head.
    pub max_header_bytes: usize,
    /// Per-source limits.
    pub protect: Protect,
    /// Access log format.
    pub log_format: LogFormat,
    /// Client-address headers added to requests.
    pub forwarded: Forwarded,
    /// TLS termination on every bind (`tls`); `None` is plain text.
    pub tls: Option<crate::tls::FrontendTls>,
    /// Binds that expect a PROXY protocol header (v1 or v2) before anything else.
    pub accept_proxy: Vec<SocketAddr>,
    /// Resolved route targets, filled by [`Plan::new`].
    route_ids: Vec<BackendId>,
    /// Resolved default backend, filled by [`Plan::new`].
    default_id: Option<BackendId>,
}

impl Frontend {
    /// A frontend with defaults, bound to `bind`, sending everything to `default_backend`.
    pub fn new(name: &str, mode: Mode, bind: SocketAddr, default_backend: &str) -> Self {
        Self {
            name: name.to_owned(),
            binds: vec![bind],
            mode,
            routes: Vec::new(),
            default_backend: Some(default_backend.to_owned()),
            timeouts: ClientTimeouts::default(),
            max_connections: None,
            max_headers: DEFAULT_MAX_HEADERS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            protect: Protect::default(),
            log_format: LogFormat::Off,
            forwarded: Forwarded::XForwarded,
            tls: None,
            accept_proxy: Vec::new(),
            route_ids: Vec::new(),
            default_id: None,
        }
    }

    /// Resolved `(route, backend)` pairs.
    pub(crate) fn resolved_routes(&self) -> impl Iterator<Item = (&Route, BackendId)> {
        self.routes.iter().zip(self.route_ids.iter().copied())
    }

    /// Resolved default backend.
    pub(crate) fn default_id(&self) -> Option<BackendId> {
        self.default_id
    }
}

/// How a server's health is probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connect succeeds.
    Tcp,
    /// An HTTP request for `path` answers a status in `expect`.
    Http {
        /// Request method, e.g. `GET`.
        method: &'static str,
        /// Request path, e.g. `/healthz`.
        path: String,
        /// Host header to send; the server address when `None`.
        host: Option<String>,
        /// Healthy statuses, inclusive range (HAProxy default: 200 to 399).
        expect: (u16, u16),
    },
}

/// Active health check of a backend's servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// The probe.
    pub kind: CheckKind,
    /// Time between probes (`inter`).
    pub interval: Duration,
    /// Longest time one probe may take.
    pub timeout: Duration,
    /// Consecutive successes to mark a down server up.
    pub rise: u32,
    /// Consecutive failures to mark an up server down.
    pub fall: u32,
    /// Passive detection: consecutive connect failures on real traffic that mark a server down.
    pub passive_connect_failures: Option<u32>,
    /// Passive detection: consecutive 5xx responses on real traffic that mark a server down.
    pub passive_5xx: Option<u32>,
}

impl CheckKind {
    /// An http check of `path` with `GET`, any host, and 2xx/3xx healthy.
    pub fn http(path: &str) -> Self {
        CheckKind::Http {
            method: "GET",
            path: path.to_owned(),
            host: None,
            expect: (200, 399),
        }
    }
}

impl HealthCheck {
    /// A check with default interval, timeout, rise and fall.
    pub fn new(kind: CheckKind) -> Self {
        Self {
            kind,
            interval: Duration::from_millis(DEFAULT_CHECK_INTERVAL_MS),
            timeout: Duration::from_millis(DEFAULT_CHECK_TIMEOUT_MS),
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            passive_connect_failures: None,
            passive_5xx: None,
        }
    }
}

/// One server of a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// Name, unique in its backend.
    pub name: String,
    /// Address to connect to.
    pub addr: SocketAddr,
    /// Relative share of traffic, 0..=256 (0 receives no new users).
    pub weight: u32,
    /// Most concurrent requests (http) or connections (tcp) (`maxconn`); `None` is unbounded.
    pub max_connections: Option<u32>,
    /// Used only when no primary server is up.
    pub backup: bool,
    /// Admin state from the configuration (`ready`, `drain`, `maint`).
    pub admin: AdminState,
}

impl Server {
    /// A primary server of weight 1 with no connection limit.
    pub fn new(name: &str, addr: SocketAddr) -> Self {
        Self {
            name: name.to_owned(),
            addr,
            weight: 1,
            max_connections: None,
            backup: false,
            admin: AdminState::Ready,
        }
    }
}

/// Server-side timeouts of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerTimeouts {
    /// Longest TCP connect to a server.
    pub connect: Duration,
    /// Longest wait for a server's response head (http) or inactivity (tcp).
    pub server: Duration,
    /// Longest wait in the backend queue.
    pub queue: Duration,
}

impl Default for ServerTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
            server: Duration::from_secs(DEFAULT_SERVER_TIMEOUT_SECS),
            queue: Duration::from_secs(DEFAULT_QUEUE_TIMEOUT_SECS),
        }
    }
}

/// One backend: a set of servers and how to use them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Unique name.
    pub name: String,
    /// What the backend speaks; must match its frontends.
    pub mode: Mode,
    /// Server selection.
    pub algorithm: Algorithm,
    /// Servers, primaries and backups.
    pub servers: Vec<Server>,
    /// Server-side timeouts.
    pub timeouts: ServerTimeouts,
    /// Extra servers tried when connecting fails.
    pub retries: u32,
    /// Most requests waiting in the queue; more get 503 at once.
    pub max_queue: usize,
    /// Idle keep-alive connections kept per server (http).
    pub max_idle_per_server: usize,
    /// Active health check; `None` means servers are always considered up.
    pub health_check: Option<HealthCheck>,
    /// PROXY protocol header sent first on each new server connection (`send_proxy`).
    pub send_proxy: Option<crate::proxy_protocol::Version>,
    /// TLS to the servers; `None` is plain text.
    pub tls: Option<crate::tls::UpstreamTls>,
    /// Session persistence.
    pub persistence: Option<Persistence>,
    /// Weight ramp after a server comes back (`slowstart`); zero disables it.
    pub slow_start: Duration,
}

impl Backend {
    /// A round-robin backend with defaults.
    pub fn new(name: &str, mode: Mode, servers: Vec<Server>) -> Self {
        Self {
            name: name.to_owned(),
            mode,
            algorithm: Algorithm::RoundRobin,
            servers,
            timeouts: ServerTimeouts::default(),
            retries: DEFAULT_RETRIES,
            max_queue: DEFAULT_MAX_QUEUE,
            max_idle_per_server: DEFAULT_MAX_IDLE_PER_SERVER,
            health_check: None,
            send_proxy: None,
            tls: None,
            persistence: None,
            slow_start: Duration::ZERO,
        }
    }
}

/// The compiled proxy configuration; see the module doc.
#[derive(Clone, Debug)]
pub struct Plan {
    frontends: Vec<Frontend>,
    backends: Vec<Backend>,
    /// Selection snapshots, same order as `backends`; shared by clones of this plan.
    balancers: Vec<Arc<tandem_balance::Backend>>,
    /// Parsed header name of `balance header(NAME)` backends, same order as `backends`.
    hash_headers: Vec<Option<HeaderName>>,
    /// Bind address to frontend index.
    binds: HashMap<SocketAddr, usize>,
    /// Process-wide settings.
    pub settings: Settings,
}

impl Plan {
    /// Validates and compiles frontends and backends; returns every problem found.
    pub fn new(
        mut frontends: Vec<Frontend>,
        backends: Vec<Backend>,
    ) -> Result<Plan, Vec<PlanError>> {
        let mut errors = Vec::new();
        let mut by_name = HashMap::new();
        for (i, b) in backends.iter().enumerate() {
            if by_name.insert(b.name.clone(), i).is_some() {
                errors.push(PlanError::DuplicateName {
                    kind: "backend",
                    name: b.name.clone(),
                });
            }
            let mut names = std::collections::HashSet::new();
            for s in &b.servers {
                if !names.insert(s.name.as_str()) {
                    errors.push(PlanError::DuplicateServer {
                        backend: b.name.clone(),
                        server: s.name.clone(),
                    });
                }
                if s.max_connections == Some(0) {
                    errors.push(PlanError::Zero {
                        what: "max_connections",
                        owner: s.name.clone(),
                    });
                }
            }
            if let Some(hc) = &b.health_check {
                if hc.rise == 0 {
                    errors.push(PlanError::Zero {
                        what: "rise",
                        owner: b.name.clone(),
                    });
                }
                if hc.fall == 0 {
                    errors.push(PlanError::Zero {
                        what: "fall",
                        owner: b.name.clone(),
                    });
                }
                if hc.interval.is_zero() {
                    errors.push(PlanError::Zero {
                        what: "interval",
                        owner: b.name.clone(),
                    });
                }
            }
        }
        let mut binds: HashMap<SocketAddr, usize> = HashMap::new();
        let mut fe_names = std::collections::HashSet::new();
        for fi in 0..frontends.len() {
            let fe = &frontends[fi];
            if !fe_names.insert(fe.name.clone()) {
                errors.push(PlanError::DuplicateName {
                    kind: "frontend",
                    name: fe.name.clone(),
                });
            }
            if fe.binds.is_empty() {
                errors.push(PlanError::NoBind {
                    frontend: fe.name.clone(),
                });
            }
            if fe.max_connections == Some(0) {
                errors.push(PlanError::Zero {
                    what: "max_connections",
                    owner: fe.name.clone(),
                });
            }
            for addr in &fe.binds {
                if let Some(&other) = binds.get(addr) {
                    errors.push(PlanError::DuplicateBind {
                        addr: *addr,
                        first: frontends[other].name.clone(),
                        second: fe.name.clone(),
                    });
                } else {
                    binds.insert(*addr, fi);
                }
            }
            if fe.mode == Mode::Tcp && (!fe.routes.is_empty() || fe.default_backend.is_none()) {
                errors.push(PlanError::TcpRouting {
                    frontend: fe.name.clone(),
                });
            }
            let resolve = |name: &str, errors: &mut Vec<PlanError>| -> Option<BackendId> {
                let Some(&id) = by_name.get(name) else {
                    errors.push(PlanError::UnknownBackend {
                        frontend: fe.name.clone(),
                        backend: name.to_owned(),
                    });
                    return None;
                };
                if backends[id].mode != fe.mode {
                    errors.push(PlanError::ModeMismatch {
                        frontend: fe.name.clone(),
                        frontend_mode: fe.mode,
                        backend: name.to_owned(),
                        backend_mode: backends[id].mode,
                    });
                }
                Some(id)
            };
            let route_ids: Vec<BackendId> = fe
                .routes
                .iter()
                .filter_map(|r| resolve(&r.backend, &mut errors))
                .collect();
            let default_id = fe
                .default_backend
                .as_deref()
                .and_then(|n| resolve(n, &mut errors));
            let fe = &mut frontends[fi];
            fe.route_ids = route_ids;
            fe.default_id = default_id;
        }
        let hash_headers = backends
            .iter()
            .map(|b| {
                b.algorithm
                    .header_name()
                    .and_then(|n| HeaderName::try_from(n.to_ascii_lowercase()).ok())
            })
            .collect();
        let mut balancers = Vec::with_capacity(backends.len());
        for b in &backends {
            match balancer(b) {
                Ok(sel) => balancers.push(Arc::new(sel)),
                Err(e) => errors.push(PlanError::Balance(e)),
            }
        }
        if errors.is_empty() {
            Ok(Plan {
                frontends,
                backends,
                balancers,
                hash_headers,
                binds,
                settings: Settings::default(),
            })
        } else {
            Err(errors)
        }
    }

    /// This plan with `settings`.
    pub fn with_settings(mut self, settings: Settings) -> Plan {
        self.settings = settings;
        self
    }

    /// Selection snapshots, same order as [`Plan::backends`].
    pub fn balancers(&self) -> &[Arc<tandem_balance::Backend>] {
        &self.balancers
    }

    /// The header hashed by a `balance header(NAME)` backend.
    pub(crate) fn hash_header(&self, backend: BackendId) -> Option<&HeaderName> {
        self.hash_headers[backend].as_ref()
    }

    /// Index of the backend named `name`.
    pub fn backend_index(&self, name: &str) -> Option<BackendId> {
        self.backends.iter().position(|b| b.name == name)
    }

    /// All frontends.
    pub fn frontends(&self) -> &[Frontend] {
        &self.frontends
    }

    /// All backends.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The frontend listening on `addr`, with its index.
    pub fn frontend_for_bind(&self, addr: SocketAddr) -> Option<usize> {
        self.binds.get(&addr).copied()
    }

    /// Every bind address of every frontend.
    pub fn bind_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.binds.keys().copied()
    }
}

/// Builds the selection snapshot of `b`; the seed (for `random`) is derived from its name.
fn balancer(b: &Backend) -> Result<tandem_balance::Backend, BalanceError> {
    let spec = BackendSpec {
        name: b.name.clone(),
        balance: b.algorithm.clone(),
        servers: b
            .servers
            .iter()
            .map(|s| {
                let mut spec = ServerSpec::new(s.name.clone(), s.addr)
                    .weight(s.weight)
                    .slow_start(b.slow_start);
                spec.max_connections = s.max_connections;
                spec.backup = s.backup;
                spec.initial_admin = s.admin;
                spec
            })
            .collect(),
        all_backups: false,
    };
    let seed = tandem_balance::ServerId::derive(&b.name, "").0;
    tandem_balance::Backend::new(spec, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn resolves_routes_and_default() {
        let mut fe = Frontend::new("web", Mode::Http, addr(80), "app");
        fe.routes.push(Route {
            host: None,
            path_prefix: Some("/api".into()),
            header: None,
            backend: "api".into(),
        });
        let plan = Plan::new(
            vec![fe],
            vec![
                Backend::new("app", Mode::Http, vec![Server::new("a", addr(1))]),
                Backend::new("api", Mode::Http, vec![Server::new("b", addr(2))]),
            ],
        )
        .expect("valid plan");
        let fe = &plan.frontends()[0];
        assert_eq!(fe.default_id(), Some(0));
        assert_eq!(
            fe.resolved_routes().map(|(_, id)| id).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(plan.frontend_for_bind(addr(80)), Some(0));
    }

    #[test]
    fn reports_every_error() {
        let mut tcp = Frontend::new("t", Mode::Tcp, addr(80), "app");
        tcp.routes.push(Route {
            host: None,
            path_prefix: None,
            header: None,
            backend: "app".into(),
        });
        let errs = Plan::new(
            vec![Frontend::new("web", Mode::Http, addr(80), "nope"), tcp],
            vec![Backend::new("app", Mode::Http, vec![])],
        )
        .expect_err("invalid plan");
        assert_eq!(
            errs,
            vec![
                PlanError::UnknownBackend {
                    frontend: "web".into(),
                    backend: "nope".into()
                },
                PlanError::DuplicateBind {
                    addr: addr(80),
                    first: "web".into(),
                    second: "t".into()
                },
                PlanError::TcpRouting {
                    frontend: "t".into()
                },
                PlanError::ModeMismatch {
                    frontend: "t".into(),
                    frontend_mode: Mode::Tcp,
                    backend: "app".into(),
                    backend_mode: Mode::Http,
                },
                PlanError::ModeMismatch {
                    frontend: "t".into(),
                    frontend_mode: Mode::Tcp,
                    backend: "app".into(),
                    backend_mode: Mode::Http,
                },
            ]
        );
    }
}
