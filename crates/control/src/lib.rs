//! The local control protocols of a node, as types both ends share.
//!
//! Owns the request and reply shapes of the three line-delimited JSON sockets of a node:
//! the proxy runtime API ([`runtime`], `docs/runtime-api.md`), the VRRP daemon's control
//! socket ([`vrrp`]) and the supervisor control API ([`supervisor`], `docs/control-api.md`);
//! the reply envelope ([`Reply`]: `{"ok":true,...}` or `{"ok":false,"error":...}`), the line
//! framing ([`to_line`]) and who may use a socket by the caller's credentials ([`access`]).
//! Must not own sockets, an async runtime or any command's semantics: the servers (proxy,
//! vrrpd, supervisor) run the commands, the clients (tandemctl, the supervisor, vrrpd's
//! proxy tracking) send them. No tokio, hyper or socket2 (checked by `cargo xtask lint`).
//!
//! Wire compatibility: these types reproduce the JSON the servers wrote before they existed,
//! byte for byte. Replies are written through [`serde_json::Value`] ([`to_line`]), whose
//! objects sort their keys, as the `json!`-built replies did; so field order in the structs
//! is free. The documents above are the contract; fields are only added.

pub mod access;
pub mod runtime;
pub mod supervisor;
pub mod vrrp;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A failure reply: `{"ok":false,"error":"...","hint":"...", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// What failed.
    pub error: String,
    /// What to do next (supervisor replies; absent in the proxy's and the VRRP daemon's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Further fields where they help (`diagnostics`, `generation`, `restored`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Failure {
    /// A failure with only `error`.
    pub fn new(error: impl Into<String>) -> Failure {
        Failure {
            error: error.into(),
            hint: None,
            extra: Map::new(),
        }
    }

    /// The same failure with a `hint`.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

/// A reply: the command's data under `"ok":true`, or a [`Failure`] under `"ok":false`.
///
/// On the wire the data's fields sit beside `ok` (the data must serialize to an object).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<T> {
    /// `{"ok":true, ...T}`.
    Ok(T),
    /// `{"ok":false,"error":...}`.
    Err(Failure),
}

impl<T> From<Result<T, Failure>> for Reply<T> {
    fn from(r: Result<T, Failure>) -> Self {
        match r {
            Ok(t) => Reply::Ok(t),
            Err(f) => Reply::Err(f),
        }
    }
}

impl<T> Reply<T> {
    /// As a `Result`.
    pub fn into_result(self) -> Result<T, Failure> {
        match self {
            Reply::Ok(t) => Ok(t),
            Reply::Err(f) => Err(f),
        }
    }
}

impl<T: Serialize> Reply<T> {
    /// The reply as a JSON object (keys sorted); a data value that is not an object is put
    /// under `value`.
    pub fn to_value(&self) -> Value {
        let (ok, v) = match self {
            Reply::Ok(t) => (true, serde_json::to_value(t)),
            Reply::Err(f) => (false, serde_json::to_value(f)),
        };
        let mut m = match v {
            Ok(Value::Object(m)) => m,
            Ok(Value::Null) => Map::new(),
            Ok(other) => Map::from_iter([("value".to_owned(), other)]),
            Err(e) => Map::from_iter([(
                "error".to_owned(),
                Value::String(format!("reply not serializable: {e}")),
            )]),
        };
        m.insert("ok".into(), Value::Bool(ok));
        Value::Object(m)
    }
}

impl<T: Serialize> Serialize for Reply<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

/// Why a reply line could not be read as a [`Reply`].
#[derive(Debug)]
pub struct BadReply(String);

impl std::fmt::Display for BadReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadReply {}

impl<T: DeserializeOwned> Reply<T> {
    /// Reads a reply object: `ok` decides which side; the data is read from the rest of the
    /// object.
    pub fn from_value(mut v: Value) -> Result<Reply<T>, BadReply> {
        let ok = v
            .as_object_mut()
            .and_then(|m| m.remove("ok"))
            .and_then(|ok| ok.as_bool());
        match ok {
            Some(true) => serde_json::from_value(v)
                .map(Reply::Ok)
                .map_err(|e| BadReply(format!("malformed reply: {e}"))),
            Some(false) => serde_json::from_value(v)
                .map(Reply::Err)
                .map_err(|e| BadReply(format!("malformed failure: {e}"))),
            None => Err(BadReply("reply without `ok`".into())),
        }
    }

    /// Reads one reply line.
    pub fn from_line(line: &[u8]) -> Result<Reply<T>, BadReply> {
        let v: Value =
            serde_json::from_slice(line).map_err(|e| BadReply(format!("malformed reply: {e}")))?;
        Reply::from_value(v)
    }
}

/// `v` as one line of JSON (with the newline), through [`Value`] so object keys are sorted
/// as the servers always wrote them.
pub fn to_line<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    let value = serde_json::to_value(v).unwrap_or_else(
        |e| serde_json::json!({"ok": false, "error": format!("reply not serializable: {e}")}),
    );
    let mut bytes = serde_json::to_vec(&value).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Imported {
        imported: usize,
    }

    #[test]
    fn replies_put_data_beside_ok_and_round_trip() {
        let r: Reply<Imported> = Reply::Ok(Imported { imported: 1 });
        assert_eq!(to_line(&r), b"{\"imported\":1,\"ok\":true}\n");
        let back: Reply<Imported> = Reply::from_line(&to_line(&r)).unwrap();
        assert_eq!(back, r);
        let f: Reply<Imported> = Reply::Err(Failure::new("no backend shop"));
        assert_eq!(
            to_line(&f),
            b"{\"error\":\"no backend shop\",\"ok\":false}\n"
        );
        let hinted: Reply<Imported> = Reply::Err(Failure::new("x").with_hint("y"));
        assert_eq!(
            to_line(&hinted),
            b"{\"error\":\"x\",\"hint\":\"y\",\"ok\":false}\n"
        );
        let back: Reply<Imported> = Reply::from_line(&to_line(&hinted)).unwrap();
        assert_eq!(back, hinted);
        assert!(Reply::<Imported>::from_line(b"{\"imported\":1}").is_err());
    }
}
