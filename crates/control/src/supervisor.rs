//! The supervisor control API (`supervisor.sock`, `docs/control-api.md`): requests and the
//! reply data `tandemctl` renders.
//!
//! Owns [`Request`] (one variant per `cmd`, with its fields), read leniently by the
//! supervisor ([`Request::from_value`]: a field of the wrong type counts as absent, as it
//! always did) and written by `tandemctl` (absent fields are left out); and the reply types,
//! which the supervisor builds its replies from and the CLI reads ([`Status`], [`History`],
//! [`Diff`], [`CommitReply`], ...). Must not run commands (the supervisor's `control.rs`
//! dispatches them) nor open sockets.
//!
//! Reply types read what the supervisor writes but never fail on a field they do not
//! know, and every field the CLI shows is optional: a reply from an older or newer
//! supervisor still renders, with `-` where a field is missing. Written, they give the
//! documented bytes: a field the reply carries as null is a plain `Option`, one it leaves
//! out when absent has `skip_serializing_if`. Parts that other components report and the
//! supervisor passes on stay [`Value`] on the wire (`Status::peer`/`sync`,
//! `SyncStatus::sync`, the VRRP instances, `ShowConfig::config`, `show_servers`,
//! `show_stats`); the CLI reads the first ones as [`PeerSummary`] and [`SyncState`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Every command.
pub const COMMANDS: &[&str] = &[
    "status",
    "sync_status",
    "sync_pair",
    "sync_resolve",
    "history",
    "show_config",
    "show_servers",
    "show_stats",
    "show_traffic",
    "candidate_get",
    "candidate_set",
    "candidate_clear",
    "validate",
    "diff",
    "commit",
    "confirm",
    "rollback",
    "server",
    "failover",
    "maintenance",
    "logs",
];

/// The commands of group `tandem-monitor`.
pub const READ_COMMANDS: &[&str] = &[
    "status",
    "sync_status",
    "history",
    "show_config",
    "show_servers",
    "show_stats",
    "show_traffic",
    "logs",
];

/// One request. `author` (only root may set it) and `comment` apply where a command records
/// them; [`Envelope`] carries them beside the command.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `status`.
    Status,
    /// `history`: the newest `limit` generations.
    History {
        /// Default 20, at most 1000.
        limit: Option<u64>,
    },
    /// `show_config` of a generation (default current).
    ShowConfig {
        /// Generation number.
        generation: Option<u64>,
    },
    /// `candidate_get`.
    CandidateGet,
    /// `candidate_set`.
    CandidateSet {
        /// The candidate text (required).
        text: Option<String>,
    },
    /// `candidate_clear`.
    CandidateClear,
    /// `validate` a text (default: the candidate).
    Validate {
        /// The text.
        text: Option<String>,
    },
    /// `diff` a text (default: the candidate) against a generation (default current).
    Diff {
        /// The text.
        text: Option<String>,
        /// Generation number.
        generation: Option<u64>,
    },
    /// `commit` a text (default: the candidate).
    Commit {
        /// The text.
        text: Option<String>,
        /// `commit confirmed`: revert unless confirmed within this.
        confirm_ms: Option<u64>,
    },
    /// `confirm` a pending `commit confirmed`.
    Confirm,
    /// `rollback` to a generation (required).
    Rollback {
        /// Generation number.
        generation: Option<u64>,
    },
    /// `show_servers`, live from the proxy.
    ShowServers {
        /// Only this backend's.
        backend: Option<String>,
    },
    /// `show_stats`, live from the proxy.
    ShowStats,
    /// `show_traffic`: the recorded history ([`Traffic`]).
    ShowTraffic {
        /// A frontend, backend or server (`NAME` or `BACKEND/NAME`); default every
        /// frontend and the node.
        target: Option<String>,
        /// How far back: `1h` (default), `7d`, `1y`.
        last: Option<String>,
    },
    /// `server`: forwarded to the proxy as `set server`.
    Server {
        /// The backend.
        backend: Option<String>,
        /// The server.
        server: Option<String>,
        /// `drain`, `ready`, `maint` or `weight`.
        action: Option<String>,
        /// With `weight`: forwarded as sent (the proxy judges it).
        weight: Option<Value>,
    },
    /// `failover` every (or one) VRRP instance.
    Failover {
        /// The instance.
        instance: Option<String>,
    },
    /// `maintenance` on or off (required).
    Maintenance {
        /// On or off.
        on: Option<bool>,
    },
    /// `sync_status`.
    SyncStatus,
    /// `sync_pair`: pin the peer, and say where it is for a node without configuration.
    SyncPair {
        /// Hex SHA-256, colons optional.
        peer_fingerprint: Option<String>,
        /// The peer's node name.
        peer_name: Option<String>,
        /// The peer's sync address.
        peer_address: Option<String>,
        /// This node's sync address.
        local_address: Option<String>,
    },
    /// `sync_resolve` a divergence.
    SyncResolve {
        /// `use-local` or `use-peer` (required).
        side: Option<String>,
    },
    /// `logs` of a service (all when absent).
    Logs {
        /// `proxy`, `vrrp`, `supervisor`.
        service: Option<String>,
        /// Default 50, at most 2000.
        lines: Option<u64>,
    },
    /// Anything else (`cmd` as sent; empty when missing).
    Unknown(String),
}

/// A request with the fields every command may carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The command.
    pub request: Request,
    /// Commit on someone else's behalf (root only).
    pub author: Option<String>,
    /// The commit comment.
    pub comment: Option<String>,
}

impl From<Request> for Envelope {
    fn from(request: Request) -> Envelope {
        Envelope {
            request,
            author: None,
            comment: None,
        }
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn num(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

impl Request {
    /// The command's name.
    pub fn cmd(&self) -> &str {
        match self {
            Request::Status => "status",
            Request::History { .. } => "history",
            Request::ShowConfig { .. } => "show_config",
            Request::CandidateGet => "candidate_get",
            Request::CandidateSet { .. } => "candidate_set",
            Request::CandidateClear => "candidate_clear",
            Request::Validate { .. } => "validate",
            Request::Diff { .. } => "diff",
            Request::Commit { .. } => "commit",
            Request::Confirm => "confirm",
            Request::Rollback { .. } => "rollback",
            Request::ShowServers { .. } => "show_servers",
            Request::ShowStats => "show_stats",
            Request::ShowTraffic { .. } => "show_traffic",
            Request::Server { .. } => "server",
            Request::Failover { .. } => "failover",
            Request::Maintenance { .. } => "maintenance",
            Request::SyncStatus => "sync_status",
            Request::SyncPair { .. } => "sync_pair",
            Request::SyncResolve { .. } => "sync_resolve",
            Request::Logs { .. } => "logs",
            Request::Unknown(c) => c,
        }
    }

    /// Whether group `tandem-monitor` may run it.
    pub fn is_read(&self) -> bool {
        READ_COMMANDS.contains(&self.cmd())
    }

    /// The request in a line the supervisor read (fields of the wrong type count as absent).
    pub fn from_value(v: &Value) -> Request {
        match v.get("cmd").and_then(Value::as_str).unwrap_or("") {
            "status" => Request::Status,
            "history" => Request::History {
                limit: num(v, "limit"),
            },
            "show_config" => Request::ShowConfig {
                generation: num(v, "generation"),
            },
            "candidate_get" => Request::CandidateGet,
            "candidate_set" => Request::CandidateSet {
                text: text(v, "text"),
            },
            "candidate_clear" => Request::CandidateClear,
            "validate" => Request::Validate {
                text: text(v, "text"),
            },
            "diff" => Request::Diff {
                text: text(v, "text"),
                generation: num(v, "generation"),
            },
            "commit" => Request::Commit {
                text: text(v, "text"),
                confirm_ms: num(v, "confirm_ms"),
            },
            "confirm" => Request::Confirm,
            "rollback" => Request::Rollback {
                generation: num(v, "generation"),
            },
            "show_servers" => Request::ShowServers {
                backend: text(v, "backend"),
            },
            "show_stats" => Request::ShowStats,
            "show_traffic" => Request::ShowTraffic {
                target: text(v, "target"),
                last: text(v, "last"),
            },
            "server" => Request::Server {
                backend: text(v, "backend"),
                server: text(v, "server"),
                action: text(v, "action"),
                weight: v.get("weight").cloned(),
            },
            "failover" => Request::Failover {
                instance: text(v, "instance"),
            },
            "maintenance" => Request::Maintenance {
                on: v.get("on").and_then(Value::as_bool),
            },
            "sync_status" => Request::SyncStatus,
            "sync_pair" => Request::SyncPair {
                peer_fingerprint: text(v, "peer_fingerprint"),
                peer_name: text(v, "peer_name"),
                peer_address: text(v, "peer_address"),
                local_address: text(v, "local_address"),
            },
            "sync_resolve" => Request::SyncResolve {
                side: text(v, "side"),
            },
            "logs" => Request::Logs {
                service: text(v, "service"),
                lines: num(v, "lines"),
            },
            other => Request::Unknown(other.to_owned()),
        }
    }

    /// The request as a JSON object; absent fields are left out.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("cmd".into(), Value::String(self.cmd().to_owned()));
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        };
        let s = |v: &Option<String>| v.clone().map(Value::String);
        let n = |v: &Option<u64>| v.map(Value::from);
        match self {
            Request::History { limit } => put("limit", n(limit)),
            Request::ShowConfig { generation } | Request::Rollback { generation } => {
                put("generation", n(generation));
            }
            Request::CandidateSet { text } | Request::Validate { text } => put("text", s(text)),
            Request::Diff { text, generation } => {
                put("text", s(text));
                put("generation", n(generation));
            }
            Request::Commit { text, confirm_ms } => {
                put("text", s(text));
                put("confirm_ms", n(confirm_ms));
            }
            Request::ShowServers { backend } => put("backend", s(backend)),
            Request::ShowTraffic { target, last } => {
                put("target", s(target));
                put("last", s(last));
            }
            Request::Server {
                backend,
                server,
                action,
                weight,
            } => {
                put("backend", s(backend));
                put("server", s(server));
                put("action", s(action));
                put("weight", weight.clone());
            }
            Request::Failover { instance } => put("instance", s(instance)),
            Request::Maintenance { on } => put("on", on.map(Value::Bool)),
            Request::SyncPair {
                peer_fingerprint,
                peer_name,
                peer_address,
                local_address,
            } => {
                put("peer_fingerprint", s(peer_fingerprint));
                put("peer_name", s(peer_name));
                put("peer_address", s(peer_address));
                put("local_address", s(local_address));
            }
            Request::SyncResolve { side } => put("side", s(side)),
            Request::Logs { service, lines } => {
                put("service", s(service));
                put("lines", n(lines));
            }
            Request::Status
            | Request::CandidateGet
            | Request::CandidateClear
            | Request::Confirm
            | Request::ShowStats
            | Request::SyncStatus
            | Request::Unknown(_) => {}
        }
        Value::Object(m)
    }
}

impl Envelope {
    /// The request and the common fields of a line the supervisor read.
    pub fn from_value(v: &Value) -> Envelope {
        Envelope {
            request: Request::from_value(v),
            author: text(v, "author"),
            comment: text(v, "comment"),
        }
    }

    /// The same request with `comment` and `author`.
    #[must_use]
    pub fn with(mut self, comment: Option<String>, author: Option<String>) -> Envelope {
        self.comment = comment;
        self.author = author;
        self
    }

    /// The request as a JSON object.
    pub fn to_value(&self) -> Value {
        let mut v = self.request.to_value();
        if let Value::Object(m) = &mut v {
            if let Some(a) = &self.author {
                m.insert("author".into(), Value::String(a.clone()));
            }
            if let Some(c) = &self.comment {
                m.insert("comment".into(), Value::String(c.clone()));
            }
        }
        v
    }
}

impl Serialize for Request {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

/// One generation in `history`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryEntry {
    /// Its number.
    pub number: Option<u64>,
    /// The generation it was committed on.
    pub parent: Option<u64>,
    /// That one's fingerprint.
    pub parent_fingerprint: Option<String>,
    /// Its configuration's fingerprint.
    pub fingerprint: Option<String>,
    /// Who committed it.
    pub author: Option<String>,
    /// Where.
    pub node: Option<String>,
    /// When, ms since the Unix epoch.
    pub time_ms: Option<u64>,
    /// The commit comment.
    pub comment: Option<String>,
    /// Its config schema version.
    pub schema_version: Option<u64>,
    /// The generation it restores (rollbacks).
    pub restores: Option<u64>,
}

/// `history`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct History {
    /// The current generation's number.
    pub current: Option<u64>,
    /// Newest first.
    pub generations: Vec<HistoryEntry>,
}

/// One change in `diff` and `commit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Change {
    /// `added`, `removed` or `changed`.
    pub kind: Option<String>,
    /// The key path.
    pub path: Option<String>,
    /// Before (absent for `added`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    /// After (absent for `removed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

/// `diff`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Diff {
    /// The generation compared against.
    pub against: Option<Value>,
    /// The changes.
    pub changes: Vec<Change>,
    /// One line per change.
    pub text: Option<String>,
}

/// A diagnostic of an invalid candidate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Diagnostic {
    /// `error` or `warning`.
    pub severity: Option<String>,
    /// `candidate`.
    pub origin: Option<String>,
    /// From 1.
    pub line: Option<u64>,
    /// From 1.
    pub column: Option<u64>,
    /// The key path.
    pub path: Option<String>,
    /// What is wrong.
    pub message: Option<String>,
}

/// A server of `show_servers` (the proxy runtime API's `show servers`, passed through; see
/// [`crate::runtime::ServerInfo`]). Every field optional: the proxy's data is passed on as
/// it comes, so a proxy of another version still renders.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerRow {
    /// Its backend.
    pub backend: Option<String>,
    /// Its name.
    pub name: Option<String>,
    /// `IP:PORT`.
    pub address: Option<String>,
    /// A backup server.
    pub backup: Option<bool>,
    /// `ready`, `drain`, `maint`.
    pub state: Option<String>,
    /// `up`, `down`.
    pub health: Option<String>,
    /// The weight in use.
    pub weight: Option<u64>,
    /// After slow start.
    pub effective_weight: Option<u64>,
    /// In flight.
    pub sessions_current: Option<u64>,
    /// Since start.
    pub sessions_total: Option<u64>,
    /// Waiting in the backend queue.
    pub queue: Option<u64>,
    /// Responses by class (`2xx`, ...).
    pub responses: std::collections::BTreeMap<String, u64>,
}

/// `show_servers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShowServers {
    /// Backend by backend, in the proxy's order.
    pub servers: Vec<ServerRow>,
}

/// A frontend or backend of `show_stats` (the proxy's `show frontends` / `show backends`,
/// passed through; see [`crate::runtime::FrontendInfo`], [`crate::runtime::BackendInfo`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsRow {
    /// Its name.
    pub name: Option<String>,
    /// Frontends: `http` or `tcp`.
    pub mode: Option<String>,
    /// In flight.
    pub sessions_current: Option<u64>,
    /// Since start.
    pub sessions_total: Option<u64>,
    /// Backends: waiting in the queue.
    pub queue: Option<u64>,
    /// Bytes in.
    pub bytes_in: Option<u64>,
    /// Bytes out.
    pub bytes_out: Option<u64>,
    /// Responses by class.
    pub responses: std::collections::BTreeMap<String, u64>,
    /// Backends: servers.
    pub servers_total: Option<u64>,
    /// Backends: servers taking new users.
    pub servers_accepting: Option<u64>,
}

/// `show_stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShowStats {
    /// Every frontend.
    pub frontends: Vec<StatsRow>,
    /// Every backend.
    pub backends: Vec<StatsRow>,
}

/// A failure reply as `tandemctl` reads it (`crate::Failure` with the extra fields the
/// supervisor documents).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailureReply {
    /// What failed.
    pub error: Option<String>,
    /// What to do next.
    pub hint: Option<String>,
    /// An invalid candidate's diagnostics.
    pub diagnostics: Vec<Diagnostic>,
    /// A failed apply: the generation now running (the previous configuration, restored).
    pub restored: Option<u64>,
}

/// `candidate_set` (`config edit`, `config load`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CandidateSaved {
    /// Saved (also when invalid).
    pub saved: Option<bool>,
    /// Whether it validates.
    pub valid: Option<bool>,
    /// Warnings of a valid candidate (absent for an invalid one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
    /// Errors of an invalid one (absent for a valid one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_count: Option<u64>,
    /// Their diagnostics (absent for a valid candidate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Vec<Diagnostic>>,
}

/// `logs`: the newest lines, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logs {
    /// One log line each.
    pub lines: Vec<String>,
}

/// `candidate_clear`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cleared {
    /// Always true.
    pub cleared: bool,
}

/// `validate` of a valid text (an invalid one is a failure with `diagnostics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validated {
    /// Always true.
    pub valid: bool,
    /// The warnings.
    pub warnings: Vec<String>,
}

/// `candidate_get`: the text to edit, by where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum Candidate {
    /// The candidate being edited.
    Candidate {
        /// Its text.
        text: String,
    },
    /// No candidate: the running generation's text.
    Running {
        /// Its number.
        generation: u64,
        /// Its text.
        text: String,
    },
    /// Nothing committed yet.
    Empty {
        /// Always empty.
        text: String,
    },
}

/// `failover`: the VRRP daemon's reply to `switchover`, passed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverReply {
    /// As the daemon answered (`crate::vrrp::FanOut`).
    pub vrrp: Value,
}

/// `server`: the proxy runtime API's reply to `set server`, passed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerCommandReply {
    /// As the proxy answered (`crate::runtime::ServerReply`).
    pub proxy: Value,
}

/// A pending `commit confirmed`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PendingConfirm {
    /// The generation that reverts unless confirmed.
    pub generation: Option<u64>,
    /// The generation it reverts to.
    pub restore: Option<u64>,
    /// When, ms since the Unix epoch.
    pub deadline_ms: Option<u64>,
    /// Who committed it.
    pub author: Option<String>,
}

/// `commit` and `rollback`.
///
/// A commit that changed nothing has only `committed` (false), `message`, `confirmed` and
/// `generation`; the fields it leaves out are `None` here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommitReply {
    /// False when there was nothing to commit.
    pub committed: Option<bool>,
    /// Why nothing was committed; where the generation runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The new generation (or the current one when nothing was committed).
    pub generation: Option<u64>,
    /// The new generation's configuration fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The changes from the previous generation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<Change>>,
    /// Applied and checked on this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<bool>,
    /// The pending confirm this commit confirmed (null when none was pending).
    pub confirmed: Option<u64>,
    /// Where it runs (`lb1`, `lb2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    /// Warnings of the configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
    /// A `commit confirmed`: when it reverts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_confirm: Option<PendingConfirm>,
    /// Why the peer does not run it (yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// A rollback: the generation whose text it committed again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restores: Option<u64>,
}

/// Where the peer is while this node has no configuration (`sync_pair`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bootstrap {
    /// The peer's node name.
    pub peer: Option<String>,
    /// This node's sync address.
    pub local: Option<String>,
    /// The peer's.
    pub remote: Option<String>,
}

/// `sync_pair`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PairReply {
    /// This node's certificate fingerprint (`AB:CD:...`).
    pub fingerprint: Option<String>,
    /// The pinned peer's.
    pub peer_fingerprint: Option<String>,
    /// Whether a peer is pinned.
    pub paired: Option<bool>,
    /// Where the peer is, for a node without configuration.
    pub bootstrap: Option<Bootstrap>,
}

/// The current generation in `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationSummary {
    /// Its number.
    pub number: Option<u64>,
    /// Its configuration's fingerprint.
    pub fingerprint: Option<String>,
    /// Who committed it.
    pub author: Option<String>,
    /// When, ms since the Unix epoch.
    pub time_ms: Option<u64>,
    /// The commit comment.
    pub comment: Option<String>,
}

/// A supervised service in `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceRow {
    /// `proxy`, `vrrp`.
    pub name: Option<String>,
    /// `stopped`, `starting`, `running`, `backoff`, `stopping`.
    pub state: Option<String>,
    /// While running.
    pub pid: Option<u64>,
    /// Restarts since the supervisor started.
    pub restarts: Option<u64>,
    /// In this state since, ms since the Unix epoch.
    pub since_ms: Option<u64>,
    /// How it last ended.
    pub last_exit: Option<String>,
    /// The health check's verdict, when it has one.
    pub healthy: Option<bool>,
    /// Restarting too often.
    pub flapping: Option<bool>,
}

/// An alarm in `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlarmRow {
    /// Stable id (`proxy-down`, `maintenance`, ...).
    pub id: Option<String>,
    /// `critical`, `warning`, `info`.
    pub severity: Option<String>,
    /// Raised at, ms since the Unix epoch.
    pub since_ms: Option<u64>,
    /// What is wrong.
    pub message: Option<String>,
}

/// The VRRP roles in `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VrrpRoles {
    /// Whether the VRRP daemon answered.
    pub available: Option<bool>,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// As the VRRP daemon reports them (`name`, `vrid`, `state`, `vips`, `master`, ...),
    /// passed on.
    pub instances: Vec<Value>,
}

/// `status`.
///
/// `peer` and `sync` are the config sync's view, passed on as it reports them (their
/// fields depend on whether the link is up; `docs/control-api.md` lists them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    /// The node's name (null without `--node`).
    pub node: Option<String>,
    /// The firmware version.
    pub version: Option<String>,
    /// Since the supervisor started.
    pub uptime_s: Option<u64>,
    /// The supervisor's clock, ms since the Unix epoch.
    pub now_ms: Option<u64>,
    /// The current generation; null before the first commit.
    pub generation: Option<GenerationSummary>,
    /// A `commit confirmed` waiting.
    pub pending_confirm: Option<PendingConfirm>,
    /// Whether the node is in maintenance.
    pub maintenance: Option<bool>,
    /// Since when (null unless in maintenance).
    pub maintenance_since_ms: Option<u64>,
    /// Who set it (null unless in maintenance).
    pub maintenance_by: Option<String>,
    /// The supervised services.
    pub services: Vec<ServiceRow>,
    /// The VRRP roles.
    pub vrrp: VrrpRoles,
    /// The peer: `name`, `state`, `link`, `relation`, `generation`, ... (or `state` and
    /// `detail` while the link is not up); `tandemctl` reads it as [`PeerSummary`].
    pub peer: Value,
    /// As `sync_status`' `sync` ([`SyncState`]); null when config sync is not running.
    pub sync: Value,
    /// The raised alarms.
    pub alarms: Vec<AlarmRow>,
}

/// `show_config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShowConfig {
    /// Its number.
    pub generation: Option<u64>,
    /// As in `history`.
    pub meta: HistoryEntry,
    /// The text as committed.
    pub text: Option<String>,
    /// The validated model, every default written out.
    pub config: Value,
}

/// A generation named by number and configuration fingerprint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationRef {
    /// Its number.
    pub number: Option<u64>,
    /// Its configuration's fingerprint.
    pub fingerprint: Option<String>,
}

/// `sync_status` → `divergence`: from this node's configuration to the peer's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Divergence {
    /// This node's current generation.
    pub local: Option<GenerationRef>,
    /// The peer's.
    pub peer: Option<GenerationRef>,
    /// Who committed the peer's.
    pub peer_author: Option<String>,
    /// When, ms since the Unix epoch.
    pub peer_time_ms: Option<u64>,
    /// The changes.
    pub changes: Vec<Change>,
    /// One line per change.
    pub text: Option<String>,
}

/// `sync_status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncStatus {
    /// The config sync's state as it reports it (`state`, `detail`, `fingerprint`,
    /// `peer_fingerprint`, `remote`, `core` {...}, `last_exchange_ms`, `errors`,
    /// `last_error`), passed on; `tandemctl` reads it as [`SyncState`].
    pub sync: Value,
    /// When diverged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence: Option<Divergence>,
}

/// `maintenance`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MaintenanceReply {
    /// Now on or off.
    pub maintenance: Option<bool>,
    /// Set at, ms since the Unix epoch.
    pub since_ms: Option<u64>,
    /// Who set it.
    pub by: Option<String>,
    /// What the VRRP daemon did: its reply to `hold` (on), `{"released": [...]}` (off), or
    /// `{"skipped": why}`; passed on.
    pub switchover: Value,
}

/// The config sync's relation to the peer (`sync` → `core` → `relation`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncRelation {
    /// `in_sync`, `peer_behind`, `local_behind`, `diverged`, `blocked`, `unknown`.
    pub state: Option<String>,
    /// `blocked`: the refusal's kind.
    pub kind: Option<String>,
    /// `blocked`: why.
    pub reason: Option<String>,
}

/// The config sync's protocol state while the link is up (`sync` → `core`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncCore {
    /// This node.
    pub node: Option<String>,
    /// The peer.
    pub peer: Option<String>,
    /// `down`, `handshake`, `up`.
    pub link: Option<String>,
    /// Where the two configurations stand.
    pub relation: SyncRelation,
    /// This node's current generation.
    pub local: Option<GenerationRef>,
    /// The peer's.
    pub peer_current: Option<GenerationRef>,
    /// The peer's firmware version.
    pub peer_firmware: Option<String>,
    /// This node's.
    pub firmware: Option<String>,
    /// Generation numbers waiting to be pushed.
    pub queued: Vec<Value>,
    /// The peer's last refusal.
    pub last_refusal: Option<String>,
}

/// `sync_status` → `sync` (and `status` → `sync`) as `tandemctl` reads it. The supervisor
/// passes the config sync's state on as that reports it ([`SyncStatus::sync`]); this reads
/// the fields `tandemctl` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncState {
    /// `idle`, `unpaired`, `connecting`, `running`.
    pub state: Option<String>,
    /// Why it is in that state.
    pub detail: Option<String>,
    /// This node's certificate fingerprint.
    pub fingerprint: Option<String>,
    /// The pinned peer's.
    pub peer_fingerprint: Option<String>,
    /// The peer's sync address.
    pub remote: Option<String>,
    /// While connected.
    pub core: Option<SyncCore>,
    /// The last exchange with the peer, ms since the Unix epoch.
    pub last_exchange_ms: Option<u64>,
    /// Errors since start.
    pub errors: Option<u64>,
    /// The last one.
    pub last_error: Option<String>,
}

/// `status` → `peer` as `tandemctl` reads it ([`Status::peer`] is passed on as the
/// supervisor builds it from the config sync's state).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerSummary {
    /// The peer's node name; absent while the link is not up.
    pub name: Option<String>,
    /// The config sync's state.
    pub state: Option<String>,
    /// Why, while the link is not up.
    pub detail: Option<String>,
    /// `down`, `handshake`, `up`.
    pub link: Option<String>,
    /// Where the two configurations stand.
    pub relation: SyncRelation,
    /// The peer's current generation.
    pub generation: Option<GenerationRef>,
    /// The peer's firmware version.
    pub firmware: Option<String>,
    /// The last exchange, ms since the Unix epoch.
    pub last_exchange_ms: Option<u64>,
    /// Generation numbers waiting to be pushed.
    pub queued: Vec<Value>,
}

/// `confirm`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Confirmed {
    /// The generation confirmed.
    pub confirmed: Option<u64>,
}

/// `sync_resolve`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resolved {
    /// Always true.
    pub resolved: Option<bool>,
    /// The generation committed above both sides.
    pub generation: Option<u64>,
    /// Its commit comment (which side was taken).
    pub comment: Option<String>,
}

/// `show_traffic`: the recorded traffic history of a target, about 72 points per series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Traffic {
    /// The target asked for; none for every frontend and the node.
    pub target: Option<String>,
    /// Start of the range, unix seconds.
    pub from: Option<i64>,
    /// End of the range, unix seconds.
    pub to: Option<i64>,
    /// The archive read (`10s`, `1m`, `15m`, `1h`).
    pub resolution: Option<String>,
    /// Seconds each point covers (a multiple of the archive's step).
    pub step_s: Option<i64>,
    /// The series, in name order.
    pub series: Vec<TrafficSeries>,
}

/// One series of [`Traffic`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrafficSeries {
    /// Its name (`frontend/web/requests_per_s`).
    pub name: String,
    /// The metric (`requests_per_s`).
    pub metric: String,
    /// Points with data, oldest first (gaps are missing points).
    pub points: Vec<TrafficPoint>,
}

/// One point of a [`TrafficSeries`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrafficPoint {
    /// Start, unix seconds.
    pub ts: i64,
    /// Mean (states: fraction of the time in the good state).
    pub avg: f64,
    /// Maximum (states: the worst).
    pub max: f64,
    /// The latest value.
    pub last: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reply;
    use serde_json::json;

    #[test]
    fn requests_read_back_as_they_are_written() {
        let cases = [
            json!({"cmd":"status"}),
            json!({"cmd":"history","limit":5}),
            json!({"cmd":"show_config","generation":3}),
            json!({"cmd":"candidate_get"}),
            json!({"cmd":"candidate_set","text":"version: 1\n"}),
            json!({"cmd":"candidate_clear"}),
            json!({"cmd":"validate"}),
            json!({"cmd":"diff","generation":2}),
            json!({"cmd":"commit","comment":"c","author":"alice","confirm_ms":60000}),
            json!({"cmd":"confirm"}),
            json!({"cmd":"rollback","generation":2,"comment":"back"}),
            json!({"cmd":"show_servers","backend":"shop"}),
            json!({"cmd":"show_stats"}),
            json!({"cmd":"show_traffic","target":"web","last":"7d"}),
            json!({"cmd":"server","backend":"shop","server":"web1","action":"weight","weight":5}),
            json!({"cmd":"failover","instance":"www"}),
            json!({"cmd":"maintenance","on":true}),
            json!({"cmd":"sync_status"}),
            json!({"cmd":"sync_pair","peer_name":"lb1","peer_address":"198.18.1.1","local_address":"198.18.1.2"}),
            json!({"cmd":"sync_resolve","side":"use-peer"}),
            json!({"cmd":"logs","service":"proxy","lines":10}),
        ];
        for doc in cases {
            let e = Envelope::from_value(&doc);
            assert_eq!(e.to_value(), doc);
            assert_ne!(e.request, Request::Unknown(String::new()), "{doc}");
        }
        assert_eq!(COMMANDS.len(), 21);
        let all: Vec<&str> = COMMANDS.to_vec();
        for r in READ_COMMANDS {
            assert!(all.contains(r));
        }
    }

    #[test]
    fn nulls_and_wrong_types_count_as_absent() {
        let e = Envelope::from_value(&json!({"cmd":"failover","instance":null}));
        assert_eq!(e.request, Request::Failover { instance: None });
        assert_eq!(e.to_value(), json!({"cmd":"failover"}));
        let e = Envelope::from_value(&json!({"cmd":"history","limit":"all","author":7}));
        assert_eq!(e.request, Request::History { limit: None });
        assert_eq!(e.author, None);
        assert_eq!(
            Request::from_value(&json!({"cmd":"bogus"})),
            Request::Unknown("bogus".into())
        );
        assert!(Request::Status.is_read() && !Request::Confirm.is_read());
    }

    #[test]
    fn fixed_replies_are_the_documented_objects() {
        let cases = [
            (
                serde_json::to_value(Reply::Ok(Logs {
                    lines: vec!["a".into()],
                }))
                .unwrap(),
                json!({"ok":true,"lines":["a"]}),
            ),
            (
                Reply::Ok(Cleared { cleared: true }).to_value(),
                json!({"ok":true,"cleared":true}),
            ),
            (
                Reply::Ok(Validated {
                    valid: true,
                    warnings: vec![],
                })
                .to_value(),
                json!({"ok":true,"valid":true,"warnings":[]}),
            ),
            (
                Reply::Ok(Candidate::Running {
                    generation: 3,
                    text: "t".into(),
                })
                .to_value(),
                json!({"ok":true,"source":"running","generation":3,"text":"t"}),
            ),
            (
                Reply::Ok(Candidate::Empty {
                    text: String::new(),
                })
                .to_value(),
                json!({"ok":true,"source":"empty","text":""}),
            ),
            (
                Reply::Ok(FailoverReply {
                    vrrp: json!({"ok":true}),
                })
                .to_value(),
                json!({"ok":true,"vrrp":{"ok":true}}),
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        let c: Reply<Candidate> =
            Reply::from_value(json!({"ok":true,"source":"candidate","text":"x"})).unwrap();
        assert_eq!(c, Reply::Ok(Candidate::Candidate { text: "x".into() }));
    }

    #[test]
    fn history_replies_read_with_missing_fields() {
        let h: History = serde_json::from_value(json!({"ok":true,"current":2,
            "generations":[{"number":2,"parent":1,"author":"alice","time_ms":1,"comment":"x",
            "fingerprint":"ab","node":"lb1","schema_version":1,"restores":null,"extra":true},
            {"number":1}]}))
        .unwrap();
        assert_eq!(h.current, Some(2));
        assert_eq!(h.generations[1].number, Some(1));
        assert_eq!(h.generations[1].author, None);
    }
    /// Reads `doc` as `T`, writes it back and compares: the documented reply survives.
    fn round_trip<T: serde::de::DeserializeOwned + Serialize>(doc: Value) {
        let r: Reply<T> = Reply::from_value(doc.clone()).unwrap();
        assert_eq!(r.to_value(), doc);
    }

    #[test]
    fn status_peer_reads_both_shapes() {
        let p: PeerSummary = serde_json::from_value(json!({"name":"lb2","state":"running",
            "link":"up","relation":{"state":"in_sync"},"generation":{"number":3,
            "fingerprint":"ab"},"firmware":null,"last_exchange_ms":null,"queued":[4]}))
        .unwrap();
        assert_eq!(p.relation.state.as_deref(), Some("in_sync"));
        assert_eq!(p.generation.and_then(|g| g.number), Some(3));
        let p: PeerSummary = serde_json::from_value(
            json!({"state":"unknown","detail":"config sync is not running"}),
        )
        .unwrap();
        assert_eq!(p.name, None);
        assert_eq!(p.detail.as_deref(), Some("config sync is not running"));
    }

    #[test]
    fn status_round_trips() {
        round_trip::<Status>(
            json!({"ok":true,"node":"lb1","version":"0.1.0","uptime_s":5,
            "now_ms":1000,"generation":{"number":3,"fingerprint":"ab","author":"alice",
            "time_ms":900,"comment":""},
            "pending_confirm":{"generation":3,"restore":2,"deadline_ms":2000,"author":"alice"},
            "maintenance":false,"maintenance_since_ms":null,"maintenance_by":null,
            "services":[{"name":"proxy","state":"running","pid":42,"restarts":0,
                "since_ms":10,"last_exit":null,"healthy":true,"flapping":false}],
            "vrrp":{"available":true,"instances":[{"name":"www","vrid":51,"state":"master",
                "vips":["198.18.0.10/24"],"master":"lb1","hold_ms":0}]},
            "peer":{"name":"lb2","state":"running","link":"up",
                "relation":{"state":"in_sync","kind":null,"reason":null},
                "generation":{"number":3,"fingerprint":"ab"},"firmware":"0.1.0",
                "last_exchange_ms":5,"queued":[]},
            "sync":{"state":"running","detail":null},
            "alarms":[{"id":"maintenance","severity":"info","since_ms":1,"message":"m"}]}),
        );
        round_trip::<Status>(json!({"ok":true,"node":null,"version":"0.1.0","uptime_s":0,
            "now_ms":1,"generation":null,"pending_confirm":null,"maintenance":true,
            "maintenance_since_ms":1,"maintenance_by":"root","services":[],
            "vrrp":{"available":false,"reason":"no vrrp daemon","instances":[]},
            "peer":{"state":"unknown","detail":"config sync is not running"},"sync":null,
            "alarms":[]}));
    }

    #[test]
    fn show_config_history_and_diff_round_trip() {
        let meta = json!({"number":2,"parent":1,"parent_fingerprint":"aa","fingerprint":"ab",
            "author":"alice","node":"lb1","time_ms":1,"comment":"c","schema_version":1,
            "restores":null});
        round_trip::<ShowConfig>(json!({"ok":true,"generation":2,"meta":meta,
            "text":"version: 1\n","config":{"version":1,"frontends":[]}}));
        round_trip::<History>(json!({"ok":true,"current":2,"generations":[meta]}));
        round_trip::<History>(json!({"ok":true,"current":null,"generations":[]}));
        round_trip::<Diff>(json!({"ok":true,"against":2,"changes":[
            {"kind":"added","path":"backends[b]","new":"{name: b}"},
            {"kind":"removed","path":"backends[a]","old":"{name: a}"},
            {"kind":"changed","path":"backends[c].balance","old":"roundrobin","new":"leastconn"}],
            "text":"+ backends[b]\n"}));
        round_trip::<Diff>(json!({"ok":true,"against":null,"changes":[],"text":""}));
    }

    #[test]
    fn sync_status_and_pair_round_trip() {
        round_trip::<SyncStatus>(json!({"ok":true,"sync":{"state":"running","detail":null,
            "core":{"node":"lb1","peer":"lb2","link":"up"}}}));
        round_trip::<SyncStatus>(json!({"ok":true,"sync":{"state":"running"},
            "divergence":{"local":{"number":4,"fingerprint":"aa"},
                "peer":{"number":4,"fingerprint":"bb"},"peer_author":"bob","peer_time_ms":7,
                "changes":[{"kind":"changed","path":"x","old":"1","new":"2"}],"text":"~ x"}}));
        round_trip::<PairReply>(
            json!({"ok":true,"fingerprint":"AB:CD","peer_fingerprint":null,
            "paired":false,"bootstrap":null}),
        );
        round_trip::<PairReply>(
            json!({"ok":true,"fingerprint":"AB:CD","peer_fingerprint":"EF",
            "paired":true,"bootstrap":{"peer":"lb1","local":"198.18.1.2:7400",
            "remote":"198.18.1.1:7400"}}),
        );
    }

    #[test]
    fn commit_rollback_and_maintenance_round_trip() {
        round_trip::<CommitReply>(json!({"ok":true,"committed":false,
            "message":"no changes; nothing committed","confirmed":null,"generation":3}));
        round_trip::<CommitReply>(json!({"ok":true,"committed":true,"generation":4,
            "fingerprint":"ab","changes":[{"kind":"added","path":"backends[b]","new":"b"}],
            "applied":true,"confirmed":3,"nodes":["lb1","lb2"],"warnings":["w"],
            "message":"committed on lb1 and lb2 (generation 4)","peer":"lb2 runs generation 4",
            "pending_confirm":{"generation":4,"restore":3,"deadline_ms":9,"author":"alice"}}));
        round_trip::<CommitReply>(json!({"ok":true,"committed":true,"generation":5,
            "fingerprint":"ab","changes":[],"applied":true,"confirmed":null,"nodes":["lb1"],
            "warnings":[],"message":"committed on lb1 (generation 5)",
            "peer":"config sync is not running; the peer was not updated","restores":2}));
        round_trip::<Confirmed>(json!({"ok":true,"confirmed":4}));
        round_trip::<CandidateSaved>(json!({"ok":true,"saved":true,"valid":true,
            "warnings":["w"]}));
        round_trip::<CandidateSaved>(json!({"ok":true,"saved":true,"valid":false,
            "error_count":1,"diagnostics":[{"severity":"error","origin":"candidate","line":3,
            "column":5,"path":"backends[a].balance","message":"unknown balance `x`"}]}));
        round_trip::<Resolved>(json!({"ok":true,"resolved":true,"generation":6,
            "comment":"divergence resolved: keep lb1's generation 5"}));
        round_trip::<MaintenanceReply>(json!({"ok":true,"maintenance":true,"since_ms":1,
            "by":"alice","switchover":{"ok":true,"instances":[]}}));
        round_trip::<MaintenanceReply>(json!({"ok":true,"maintenance":false,"since_ms":2,
            "by":"alice","switchover":{"skipped":"no vrrp daemon runs on this node"}}));
    }
}
