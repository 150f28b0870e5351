//! The proxy runtime API (`runtime.socket`, `docs/runtime-api.md`): requests and replies.
//!
//! Owns the wire shapes: [`RawRequest`] (a request line as the proxy reads it), [`Request`]
//! (the same, one variant per command; what clients send) and the reply data ([`Frontends`],
//! [`Backends`], [`Servers`], [`ServerReply`], [`Persistence`], [`Rates`], [`Imported`],
//! [`Reloaded`]), carried in a [`crate::Reply`]. Must not run commands (the proxy's `api.rs`)
//! nor open sockets (the proxy, the supervisor and the VRRP daemon's tracking do).
//!
//! A request is read in two steps so that errors stay as documented: [`RawRequest`] checks
//! the fields (unknown ones are an error; one that a command does not use is ignored), then
//! [`Request::try_from`] names an unknown command. Values that need the running
//! configuration to be judged (a server's `state`, import `entries`) are checked by the proxy
//! when the command runs, in the order the documentation gives.

use std::marker::PhantomData;
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request line as the proxy reads it: every field optional, `cmd` says which apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequest {
    /// The command, e.g. `show servers`.
    pub cmd: String,
    /// `show servers`, `show persistence`, `import persistence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// `set server`: `BACKEND/SERVER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// `set server`: `ready`, `drain` or `maint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// `set server`: 0..=256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// `show rates`, `import rates`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend: Option<String>,
    /// `import persistence`: [`StickEntry`]s; `import rates`: [`RateEntry`]s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Value>,
}

impl RawRequest {
    /// Whether the command only reads (what group `tandem-monitor` and the probe slot may
    /// run): every `show ...`.
    pub fn is_read_only(&self) -> bool {
        self.cmd.starts_with("show ")
    }
}

/// Import entries, kept as sent until the command runs ([`Entries::parse`]): the proxy
/// checks the backend or frontend first.
#[derive(Debug, Clone, PartialEq)]
pub struct Entries<T> {
    raw: Option<Value>,
    _of: PhantomData<T>,
}

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Entries {
            raw: None,
            _of: PhantomData,
        }
    }
}

impl<T: Serialize> Entries<T> {
    /// Entries to send.
    pub fn of(entries: &[T]) -> Entries<T> {
        Entries {
            raw: Some(serde_json::to_value(entries).unwrap_or(Value::Null)),
            _of: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Entries<T> {
    /// The entries of import command `what`, or why not (`what needs "entries"`, `invalid
    /// entries for what: ...`).
    pub fn parse(&self, what: &str) -> Result<Vec<T>, String> {
        let raw = self
            .raw
            .clone()
            .ok_or_else(|| format!("{what} needs \"entries\""))?;
        serde_json::from_value(raw).map_err(|e| format!("invalid entries for {what}: {e}"))
    }
}

/// One request, by command.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `show frontends`.
    ShowFrontends,
    /// `show backends`.
    ShowBackends,
    /// `show servers`, of every backend or of one.
    ShowServers {
        /// Only this backend's.
        backend: Option<String>,
    },
    /// `set server`: admin state and/or weight.
    SetServer {
        /// `BACKEND/SERVER`.
        server: Option<String>,
        /// `ready`, `drain` or `maint` ([`AdminState::parse`]).
        state: Option<String>,
        /// 0..=256.
        weight: Option<u32>,
    },
    /// `reload`: re-read the configuration file, as SIGHUP does.
    Reload,
    /// `show persistence` of a backend.
    ShowPersistence {
        /// The backend.
        backend: Option<String>,
    },
    /// `import persistence` into a backend's stick table.
    ImportPersistence {
        /// The backend.
        backend: Option<String>,
        /// The entries.
        entries: Entries<StickEntry>,
    },
    /// `show rates` of a frontend.
    ShowRates {
        /// The frontend.
        frontend: Option<String>,
    },
    /// `import rates` into a frontend's per-source counters.
    ImportRates {
        /// The frontend.
        frontend: Option<String>,
        /// The entries.
        entries: Entries<RateEntry>,
    },
}

/// The commands, as `cmd` names them.
pub const COMMANDS: &[&str] = &[
    "show frontends",
    "show backends",
    "show servers",
    "set server",
    "reload",
    "show persistence",
    "import persistence",
    "show rates",
    "import rates",
];

impl TryFrom<RawRequest> for Request {
    type Error = String;

    /// The command, or the error an unknown one gets.
    fn try_from(r: RawRequest) -> Result<Request, String> {
        Ok(match r.cmd.as_str() {
            "show frontends" => Request::ShowFrontends,
            "show backends" => Request::ShowBackends,
            "show servers" => Request::ShowServers { backend: r.backend },
            "set server" => Request::SetServer {
                server: r.server,
                state: r.state,
                weight: r.weight,
            },
            "reload" => Request::Reload,
            "show persistence" => Request::ShowPersistence { backend: r.backend },
            "import persistence" => Request::ImportPersistence {
                backend: r.backend,
                entries: Entries {
                    raw: r.entries,
                    _of: PhantomData,
                },
            },
            "show rates" => Request::ShowRates {
                frontend: r.frontend,
            },
            "import rates" => Request::ImportRates {
                frontend: r.frontend,
                entries: Entries {
                    raw: r.entries,
                    _of: PhantomData,
                },
            },
            other => {
                return Err(format!(
                    "unknown command {other:?}: expected show frontends|backends|servers|persistence|rates, set server, import persistence|rates, reload"
                ));
            }
        })
    }
}

impl From<&Request> for RawRequest {
    fn from(r: &Request) -> RawRequest {
        let cmd = |c: &str| RawRequest {
            cmd: c.to_owned(),
            ..RawRequest::default()
        };
        match r {
            Request::ShowFrontends => cmd("show frontends"),
            Request::ShowBackends => cmd("show backends"),
            Request::ShowServers { backend } => RawRequest {
                backend: backend.clone(),
                ..cmd("show servers")
            },
            Request::SetServer {
                server,
                state,
                weight,
            } => RawRequest {
                server: server.clone(),
                state: state.clone(),
                weight: *weight,
                ..cmd("set server")
            },
            Request::Reload => cmd("reload"),
            Request::ShowPersistence { backend } => RawRequest {
                backend: backend.clone(),
                ..cmd("show persistence")
            },
            Request::ImportPersistence { backend, entries } => RawRequest {
                backend: backend.clone(),
                entries: entries.raw.clone(),
                ..cmd("import persistence")
            },
            Request::ShowRates { frontend } => RawRequest {
                frontend: frontend.clone(),
                ..cmd("show rates")
            },
            Request::ImportRates { frontend, entries } => RawRequest {
                frontend: frontend.clone(),
                entries: entries.raw.clone(),
                ..cmd("import rates")
            },
        }
    }
}

impl Serialize for Request {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RawRequest::from(self).serialize(s)
    }
}

impl Request {
    /// The request as one line (with the newline).
    pub fn to_line(&self) -> Vec<u8> {
        crate::to_line(self)
    }
}

/// A server's admin state (`set server` `state`, `show servers` `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Normal.
    Ready,
    /// No new users; persistent ones keep coming.
    Drain,
    /// No traffic.
    Maint,
}

impl AdminState {
    /// `ready`, `drain` or `maint`, or the documented error.
    pub fn parse(s: &str) -> Result<AdminState, String> {
        match s {
            "ready" => Ok(AdminState::Ready),
            "drain" => Ok(AdminState::Drain),
            "maint" => Ok(AdminState::Maint),
            other => Err(format!(
                "invalid state {other:?}: expected ready, drain or maint"
            )),
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

/// What health checks decided about a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Up.
    Up,
    /// Down.
    Down,
}

/// Responses by status class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Responses {
    /// 1xx.
    #[serde(rename = "1xx")]
    pub c1xx: u64,
    /// 2xx.
    #[serde(rename = "2xx")]
    pub c2xx: u64,
    /// 3xx.
    #[serde(rename = "3xx")]
    pub c3xx: u64,
    /// 4xx.
    #[serde(rename = "4xx")]
    pub c4xx: u64,
    /// 5xx.
    #[serde(rename = "5xx")]
    pub c5xx: u64,
    /// Anything else (and responses never sent).
    pub other: u64,
}

impl Responses {
    /// From counts in the order `1xx`, `2xx`, `3xx`, `4xx`, `5xx`, `other`.
    pub fn from_counts(c: [u64; 6]) -> Responses {
        let [c1xx, c2xx, c3xx, c4xx, c5xx, other] = c;
        Responses {
            c1xx,
            c2xx,
            c3xx,
            c4xx,
            c5xx,
            other,
        }
    }
}

/// `protect` refusals of a frontend by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denied {
    /// Over `connection_rate_per_source`.
    pub connection_rate: u64,
    /// Over `request_rate_per_source`.
    pub request_rate: u64,
    /// Over `concurrent_connections_per_source`.
    pub concurrent: u64,
}

impl Denied {
    /// From counts in the order `connection_rate`, `request_rate`, `concurrent`.
    pub fn from_counts(c: [u64; 3]) -> Denied {
        let [connection_rate, request_rate, concurrent] = c;
        Denied {
            connection_rate,
            request_rate,
            concurrent,
        }
    }
}

/// One frontend in `show frontends`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontendInfo {
    /// Its name.
    pub name: String,
    /// `http` or `tcp`.
    pub mode: String,
    /// Its listening addresses.
    pub binds: Vec<String>,
    /// Connections open now.
    pub sessions_current: u64,
    /// Connections since start.
    pub sessions_total: u64,
    /// Its connection limit.
    pub max_connections: Option<u32>,
    /// Bytes from clients.
    pub bytes_in: u64,
    /// Bytes to clients.
    pub bytes_out: u64,
    /// Responses sent to clients (the proxy's own included).
    pub responses: Responses,
    /// `protect` refusals.
    pub denied: Denied,
}

/// `show frontends`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frontends {
    /// Every frontend, in configuration order.
    pub frontends: Vec<FrontendInfo>,
}

/// One backend in `show backends`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// Its name.
    pub name: String,
    /// Its balancing algorithm (`roundrobin`, `header(X-User)`, ...).
    pub algorithm: String,
    /// Requests (http) or connections (tcp) in flight on its servers.
    pub sessions_current: u64,
    /// Since start.
    pub sessions_total: u64,
    /// Requests waiting in its queue.
    pub queue: u64,
    /// Bytes to the servers.
    pub bytes_in: u64,
    /// Bytes from the servers.
    pub bytes_out: u64,
    /// Responses from its servers.
    pub responses: Responses,
    /// Its servers.
    pub servers_total: u64,
    /// Those taking new users.
    pub servers_accepting: u64,
}

/// `show backends`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backends {
    /// Every backend, in configuration order.
    pub backends: Vec<BackendInfo>,
}

/// One server in `show servers` (see `docs/runtime-api.md` for each field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Its backend.
    pub backend: String,
    /// Its name.
    pub name: String,
    /// The opaque id of persistence cookies and stick tables.
    pub id: String,
    /// `IP:PORT`.
    pub address: String,
    /// A backup server.
    pub backup: bool,
    /// Admin state.
    pub state: AdminState,
    /// What checks decided.
    pub health: Health,
    /// Both, HAProxy style (`UP`, `DRAIN (down)`, ...).
    pub status: String,
    /// Consecutive check results in the current direction.
    pub check_streak: u32,
    /// The weight in use.
    pub weight: u32,
    /// The configured weight.
    pub config_weight: u32,
    /// `weight` after slow start; 0 when it takes no new users.
    pub effective_weight: u32,
    /// Its connection limit.
    pub max_connections: Option<u32>,
    /// In flight.
    pub sessions_current: u64,
    /// Since start.
    pub sessions_total: u64,
    /// Requests waiting in the backend queue.
    pub queue: u64,
    /// Bytes to it.
    pub bytes_in: u64,
    /// Bytes from it.
    pub bytes_out: u64,
    /// Its responses by class.
    pub responses: Responses,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Health transitions.
    pub transitions: u64,
}

/// `show servers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Servers {
    /// The servers, backend by backend.
    pub servers: Vec<ServerInfo>,
}

/// `set server`: the server after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerReply {
    /// As `show servers` prints it.
    pub server: ServerInfo,
}

/// A stick-table entry to import (`import persistence`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickEntry {
    /// The client address.
    pub client: IpAddr,
    /// Opaque server id (16 hex digits), never the address.
    pub server_id: String,
    /// Remaining lifetime.
    pub expires_in_ms: u64,
}

/// A stick-table entry as `show persistence` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StickEntryInfo {
    /// The client address.
    pub client: IpAddr,
    /// Opaque server id.
    pub server_id: String,
    /// The server's name; null when no server has that id.
    pub server: Option<String>,
    /// Remaining lifetime.
    pub expires_in_ms: u64,
}

/// `show persistence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Persistence {
    /// A stick table on the client address.
    Source {
        /// The backend.
        backend: String,
        /// The configured `expire`.
        expire_ms: u64,
        /// The table's capacity.
        capacity: u64,
        /// Least recently used first.
        entries: Vec<StickEntryInfo>,
    },
    /// A cookie: the table lives in the clients.
    Cookie {
        /// The backend.
        backend: String,
        /// The cookie name.
        cookie: String,
        /// Always empty.
        entries: Vec<StickEntryInfo>,
    },
}

/// `import persistence`, `import rates`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    /// Entries merged.
    pub imported: u64,
}

/// A rate limit: `count` events per `per_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Events per period.
    pub count: u32,
    /// The period.
    pub per_ms: u64,
}

/// One rate counter, relative to the answer (HAProxy's sliding window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counter {
    /// Events in the current period.
    pub current: u32,
    /// Events in the previous one.
    pub previous: u32,
    /// How far into the current period.
    pub elapsed_ms: u64,
    /// The limit's period.
    pub period_ms: u64,
}

/// A source's rate state (`show rates`, `import rates`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateEntry {
    /// The client address.
    pub client: IpAddr,
    /// For `connection_rate_per_source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Counter>,
    /// For `request_rate_per_source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Counter>,
}

/// `show rates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// The frontend.
    pub frontend: String,
    /// Its `connection_rate_per_source`.
    pub connection_rate: Option<RateLimit>,
    /// Its `request_rate_per_source`.
    pub request_rate: Option<RateLimit>,
    /// One entry per source with a rate, tracked longest ago first.
    pub entries: Vec<RateEntry>,
}

/// `reload`: the plan generation now serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// The proxy's internal plan generation (1 at start, +1 per reload).
    pub generation: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Failure, Reply};
    use serde_json::json;

    fn line(r: &Request) -> String {
        String::from_utf8(r.to_line()).unwrap()
    }

    fn parse(line: &str) -> Result<Request, String> {
        let raw: RawRequest = serde_json::from_str(line).map_err(|e| e.to_string())?;
        Request::try_from(raw)
    }

    #[test]
    fn requests_are_the_documented_lines_and_round_trip() {
        let cases = [
            (Request::ShowFrontends, r#"{"cmd":"show frontends"}"#),
            (Request::ShowBackends, r#"{"cmd":"show backends"}"#),
            (
                Request::ShowServers {
                    backend: Some("shop".into()),
                },
                r#"{"backend":"shop","cmd":"show servers"}"#,
            ),
            (
                Request::SetServer {
                    server: Some("shop/web1".into()),
                    state: Some("drain".into()),
                    weight: None,
                },
                r#"{"cmd":"set server","server":"shop/web1","state":"drain"}"#,
            ),
            (
                Request::SetServer {
                    server: Some("shop/web1".into()),
                    state: None,
                    weight: Some(50),
                },
                r#"{"cmd":"set server","server":"shop/web1","weight":50}"#,
            ),
            (Request::Reload, r#"{"cmd":"reload"}"#),
            (
                Request::ShowPersistence {
                    backend: Some("shop".into()),
                },
                r#"{"backend":"shop","cmd":"show persistence"}"#,
            ),
            (
                Request::ImportPersistence {
                    backend: Some("shop".into()),
                    entries: Entries::of(&[StickEntry {
                        client: "192.0.2.7".parse().unwrap(),
                        server_id: "54d8501ec308aa74".into(),
                        expires_in_ms: 60000,
                    }]),
                },
                r#"{"backend":"shop","cmd":"import persistence","entries":[{"client":"192.0.2.7","expires_in_ms":60000,"server_id":"54d8501ec308aa74"}]}"#,
            ),
            (
                Request::ShowRates {
                    frontend: Some("web".into()),
                },
                r#"{"cmd":"show rates","frontend":"web"}"#,
            ),
            (
                Request::ImportRates {
                    frontend: Some("web".into()),
                    entries: Entries::of(&[RateEntry {
                        client: "192.0.2.7".parse().unwrap(),
                        connections: None,
                        requests: Some(Counter {
                            current: 5,
                            previous: 0,
                            elapsed_ms: 3120,
                            period_ms: 60000,
                        }),
                    }]),
                },
                r#"{"cmd":"import rates","entries":[{"client":"192.0.2.7","requests":{"current":5,"elapsed_ms":3120,"period_ms":60000,"previous":0}}],"frontend":"web"}"#,
            ),
        ];
        for (req, want) in cases {
            assert_eq!(line(&req), format!("{want}\n"));
            assert_eq!(parse(want), Ok(req.clone()), "{want}");
        }
        assert_eq!(COMMANDS.len(), 9);
    }

    #[test]
    fn request_errors_are_the_documented_ones() {
        let e = parse("").unwrap_err();
        assert_eq!(e, "EOF while parsing a value at line 1 column 0");
        assert!(parse(r#"{"cmd":"show servers","bogus":1}"#).is_err());
        // A field another command uses is ignored.
        assert_eq!(
            parse(r#"{"cmd":"show frontends","backend":"x"}"#),
            Ok(Request::ShowFrontends)
        );
        assert!(
            parse(r#"{"cmd":"frobnicate"}"#)
                .unwrap_err()
                .starts_with("unknown command \"frobnicate\": expected show")
        );
        let Ok(Request::ImportRates { entries, .. }) = parse(r#"{"cmd":"import rates"}"#) else {
            panic!("import rates");
        };
        assert_eq!(
            entries.parse("import rates"),
            Err("import rates needs \"entries\"".into())
        );
        assert_eq!(
            AdminState::parse("sleepy"),
            Err("invalid state \"sleepy\": expected ready, drain or maint".into())
        );
        assert!(
            RawRequest {
                cmd: "show nothing".into(),
                ..RawRequest::default()
            }
            .is_read_only()
        );
    }

    fn round_trip<T>(doc: Value)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let reply: Reply<T> =
            Reply::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}: {doc}"));
        assert_eq!(reply.to_value(), doc);
        assert_eq!(Reply::<T>::from_value(reply.to_value()).unwrap(), reply);
    }

    #[test]
    fn replies_match_the_documented_examples() {
        let server = json!({
            "backend":"shop","name":"web1","id":"54d8501ec308aa74","address":"10.0.0.11:8080",
            "backup":false,"state":"ready","health":"up","status":"UP","check_streak":0,
            "weight":10,"config_weight":10,"effective_weight":4,"max_connections":200,
            "sessions_current":3,"sessions_total":1520,"queue":0,
            "bytes_in":10240,"bytes_out":5242880,
            "responses":{"1xx":0,"2xx":1500,"3xx":10,"4xx":8,"5xx":2,"other":0},
            "connect_failures":0,"transitions":2});
        round_trip::<Servers>(json!({"ok":true,"servers":[server]}));
        round_trip::<ServerReply>(json!({"ok":true,"server":server}));
        round_trip::<Frontends>(json!({"ok":true,"frontends":[{"name":"web","mode":"http",
            "binds":["0.0.0.0:80"], "sessions_current":12,"sessions_total":9000,
            "max_connections":10000, "bytes_in":0,"bytes_out":123456,
            "responses":{"1xx":0,"2xx":8800,"3xx":0,"4xx":150,"5xx":50,"other":0},
            "denied":{"connection_rate":0,"request_rate":140,"concurrent":0}}]}));
        round_trip::<Backends>(json!({"ok":true,"backends":[{"name":"shop",
            "algorithm":"roundrobin","sessions_current":3, "sessions_total":9000,"queue":0,
            "bytes_in":0,"bytes_out":123456,
            "responses":{"1xx":0,"2xx":8800,"3xx":0,"4xx":10,"5xx":50,"other":0},
            "servers_total":2,"servers_accepting":2}]}));
        round_trip::<Persistence>(json!({"ok":true,"backend":"shop","kind":"source",
            "expire_ms":1800000,"capacity":65536, "entries":[{"client":"192.0.2.7",
            "server_id":"54d8501ec308aa74","server":"web1","expires_in_ms":1799000}]}));
        round_trip::<Persistence>(
            json!({"ok":true,"backend":"shop","kind":"cookie","cookie":"SRV","entries":[]}),
        );
        round_trip::<Imported>(json!({"ok":true,"imported":1}));
        round_trip::<Rates>(json!({"ok":true,"frontend":"web","connection_rate":null,
            "request_rate":{"count":5,"per_ms":60000}, "entries":[{"client":"192.0.2.7",
            "requests":{"current":5,"previous":0,"elapsed_ms":3120,"period_ms":60000}}]}));
        round_trip::<Reloaded>(json!({"ok":true,"generation":7}));
        round_trip::<Reloaded>(json!({"ok":false,"error":"reload refused: no such file"}));
        assert_eq!(
            Reply::<Servers>::from_value(json!({"ok":false,"error":"no backend shop"})).unwrap(),
            Reply::Err(Failure::new("no backend shop"))
        );
    }
}
