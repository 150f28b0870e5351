//! The shape of a control request's outcome: [`Reply`] (the reply object without `ok`) or a
//! [`Failure`] (what failed, what to do next, extra fields), and the failures made from store
//! errors and config diagnostics.
//!
//! Owns only the JSON shapes `docs/control-api.md` documents for failures; must not touch the
//! store, the children or the socket.

use serde_json::{Value, json};
use tandem_config::Report;
use tandem_store::StoreError;

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

/// Diagnostics as JSON, for `tandemctl` to print with line and column.
pub fn diagnostics_json(report: &Report) -> Value {
    Value::Array(
        report
            .diagnostics
            .iter()
            .map(|d| {
                json!({
                    "severity": d.severity.to_string(),
                    "origin": d.origin,
                    "line": d.line,
                    "column": d.column,
                    "path": d.path,
                    "message": d.message,
                })
            })
            .collect(),
    )
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
