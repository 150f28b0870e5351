//! The shape of a control request's outcome: [`Reply`] (the reply object without `ok`) or a
//! [`Failure`] (what failed, what to do next, extra fields), and the failures made from store
//! errors and config diagnostics.
//!
//! Owns only the JSON shapes `docs/control-api.md` documents for failures; must not touch the
//! store, the children or the socket.

use serde_json::{Value, json};
use tandem_config::Report;
use tandem_control::supervisor as wire;
use tandem_store::{GenerationMeta, StoreError};

use crate::state::{Alarm, ServiceStatus, VrrpView};

/// A failed request: what went wrong, what to do next, and the config diagnostics if any.
#[derive(Debug, Default)]
pub struct Failure {
    /// What failed, lowercase.
    pub error: String,
    /// What the operator should do next.
    pub hint: Option<String>,
    /// Extra fields merged into the reply (`diagnostics`, `generation`, `restored`, ...).
    pub extra: serde_json::Map<String, Value>,
}

impl Failure {
    /// A failure with a hint.
    pub fn new(error: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure {
            error: error.into(),
            hint: Some(hint.into()),
            extra: serde_json::Map::new(),
        }
    }

    pub(crate) fn with(mut self, key: &str, value: Value) -> Failure {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// The reply object: `{"ok":false,"error":...,"hint":...,...}`.
    pub fn to_json(&self) -> Value {
        let mut m = self.extra.clone();
        m.insert("ok".into(), Value::Bool(false));
        m.insert("error".into(), Value::String(self.error.clone()));
        if let Some(h) = &self.hint {
            m.insert("hint".into(), Value::String(h.clone()));
        }
        Value::Object(m)
    }
}

/// A request's outcome: the reply object (without `ok`) or a failure.
pub type Reply = Result<Value, Failure>;

/// The reply of a command whose data is a `tandem_control::supervisor` type.
pub fn data<T: serde::Serialize>(reply: T) -> Reply {
    serde_json::to_value(reply).map_err(|e| {
        Failure::new(
            format!("reply not serializable: {e}"),
            "report this as a bug",
        )
    })
}

/// A unit enum's wire name (`running`, `critical`, `added`).
fn wire_name<T: serde::Serialize>(v: &T) -> Option<String> {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// A generation's metadata as `history` and `show_config` show it.
pub(crate) fn history_entry(m: &GenerationMeta) -> wire::HistoryEntry {
    wire::HistoryEntry {
        number: Some(m.number),
        parent: m.parent,
        parent_fingerprint: m.parent_fingerprint.clone(),
        fingerprint: Some(m.fingerprint.clone()),
        author: Some(m.author.clone()),
        node: m.node.clone(),
        time_ms: Some(m.time_ms),
        comment: Some(m.comment.clone()),
        schema_version: Some(u64::from(m.schema_version)),
        restores: m.restores,
    }
}

/// Config changes as `diff`, `commit` and `sync_status` show them.
pub(crate) fn wire_changes(changes: &[tandem_config::diff::Change]) -> Vec<wire::Change> {
    changes
        .iter()
        .map(|c| wire::Change {
            kind: wire_name(&c.kind),
            path: Some(c.path.clone()),
            old: c.old.clone().map(Value::String),
            new: c.new.clone().map(Value::String),
        })
        .collect()
}

/// A pending `commit confirmed` as `status` and `commit` show it.
pub(crate) fn wire_pending(p: tandem_store::PendingConfirm) -> wire::PendingConfirm {
    wire::PendingConfirm {
        generation: Some(p.generation),
        restore: Some(p.restore),
        deadline_ms: Some(p.deadline_ms),
        author: Some(p.author),
    }
}

/// A supervised service as `status` shows it.
pub(crate) fn service_row(s: ServiceStatus) -> wire::ServiceRow {
    wire::ServiceRow {
        state: wire_name(&s.state),
        name: Some(s.name),
        pid: s.pid.map(u64::from),
        restarts: Some(s.restarts),
        since_ms: Some(s.since_ms),
        last_exit: s.last_exit,
        healthy: s.healthy,
        flapping: Some(s.flapping),
    }
}

/// An alarm as `status` shows it.
pub(crate) fn alarm_row(a: Alarm) -> wire::AlarmRow {
    wire::AlarmRow {
        severity: wire_name(&a.severity),
        id: Some(a.id),
        since_ms: Some(a.since_ms),
        message: Some(a.message),
    }
}

/// The VRRP roles as `status` shows them.
pub(crate) fn vrrp_roles(v: VrrpView) -> wire::VrrpRoles {
    wire::VrrpRoles {
        available: Some(v.available),
        reason: v.reason,
        instances: v.instances,
    }
}

/// Diagnostics as `tandemctl` prints them, with line and column.
pub(crate) fn wire_diagnostics(report: &Report) -> Vec<wire::Diagnostic> {
    report
        .diagnostics
        .iter()
        .map(|d| wire::Diagnostic {
            severity: Some(d.severity.to_string()),
            origin: Some(d.origin.clone()),
            line: Some(u64::from(d.line)),
            column: Some(u64::from(d.column)),
            path: Some(d.path.clone()),
            message: Some(d.message.clone()),
        })
        .collect()
}

/// Diagnostics as JSON, for `tandemctl` to print with line and column.
pub fn diagnostics_json(report: &Report) -> Value {
    json!(wire_diagnostics(report))
}

pub(crate) fn invalid(report: &Report) -> Failure {
    let n = report.error_count();
    Failure::new(
        format!(
            "the candidate has {n} error{}; nothing was changed",
            if n == 1 { "" } else { "s" }
        ),
        "fix them (`config edit`) and run `config validate`",
    )
    .with("diagnostics", diagnostics_json(report))
}

pub(crate) fn store_failure(e: StoreError) -> Failure {
    match e {
        StoreError::Invalid(r) => invalid(&r),
        StoreError::Empty(_) => Failure::new(
            e.to_string(),
            "load a configuration with `config load FILE`, then `config commit`",
        ),
        StoreError::NoSuchGeneration(_) => {
            Failure::new(e.to_string(), "`show history` lists the generations kept")
        }
        e if tandem_store::is_full(&e) => Failure::new(
            e.to_string(),
            "the data partition is full: nothing was changed and the running configuration keeps serving; a leftover firmware download (/data/tandem/incoming.upgrade) or a large candidate uses space",
        ),
        other => Failure::new(
            other.to_string(),
            "check the data directory (disk full or read-only?) and `logs supervisor`",
        ),
    }
}
