//! The sync protocol's messages and their framing (length-prefixed JSON), sans IO.
//!
//! Owns the wire shapes exchanged between the two nodes' sync services and the frame codec
//! with its size bound. Must not touch sockets, TLS or the clock: the shell moves bytes, the
//! core ([`crate::core`]) decides what to send.
//!
//! Frame: a 4-byte big-endian length, then that many bytes of one JSON [`Message`].
//! This is an API boundary between firmware versions (see `docs/ARCHITECTURE.md`): fields are
//! only added (with `#[serde(default)]`), and [`PROTOCOL_VERSION`] is bumped on anything else.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::SyncError;

/// Version of this protocol, carried in [`Hello`].
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame accepted or sent, in bytes (a 1 MiB config, JSON-escaped, plus metadata;
/// runtime state is trimmed to fit).
pub const MAX_FRAME: usize = 8 << 20;
/// Most generation references carried in a [`Hello`] history (the store keeps 100).
pub const MAX_HISTORY: usize = 128;

/// A generation as both nodes name it: number and configuration fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GenRef {
    /// Generation number (equal on both nodes once synced: a peer generation keeps its number).
    pub number: u64,
    /// `tandem_config::fingerprint` of its configuration, 32 hex digits.
    pub fingerprint: String,
}

impl std::fmt::Display for GenRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = self.fingerprint.get(..8).unwrap_or(&self.fingerprint);
        write!(f, "{} ({short})", self.number)
    }
}

/// The first message on a connection, and sent again whenever the sender's history changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol: u32,
    /// The sender's node name (`lb1`).
    pub node: String,
    /// The sender's firmware version.
    pub firmware: String,
    /// Highest config schema version the sender's firmware reads.
    pub max_schema: u32,
    /// The sender's current generation; `None` before its first commit.
    pub current: Option<GenRef>,
    /// The sender's kept generations, oldest first, the current one last (at most
    /// [`MAX_HISTORY`]); used to tell "behind" from "diverged".
    pub history: Vec<GenRef>,
}

/// One committed generation, with everything the receiver needs to commit it unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireGeneration {
    /// Its number and fingerprint.
    pub generation: GenRef,
    /// The generation it was committed on top of, on the sender.
    pub parent: Option<GenRef>,
    /// Schema version of the configuration (`version:`).
    pub schema_version: u32,
    /// Who committed it.
    pub author: String,
    /// The node it was committed on.
    pub node: Option<String>,
    /// Commit time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The operator's comment.
    pub comment: String,
    /// The configuration text exactly as committed.
    pub text: String,
}

/// Why a pushed generation was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// The text is not a valid configuration for the receiver.
    Invalid,
    /// The configuration's schema is newer than the receiver's firmware reads.
    Schema,
    /// The receiver's current generation is not an ancestor: applying would overwrite.
    Diverged,
    /// The receiver's state changed meanwhile (a local commit raced); retried.
    Busy,
    /// Committed, but it did not apply; the receiver restored its previous configuration.
    ApplyFailed,
}

/// What happened to a pushed generation on the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// Committed and applied; the receiver's current generation is the pushed one.
    Applied,
    /// Not applied.
    Refused {
        /// Why, for the sender's logic.
        kind: RefusalKind,
        /// Why, for the operator, lowercase.
        reason: String,
    },
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// The sender's view (see [`Hello`]).
    Hello(Hello),
    /// A generation for the receiver to validate, commit and apply.
    Push {
        /// The generation.
        generation: WireGeneration,
        /// Set when the push resolves a divergence: the receiver's current generation it
        /// supersedes (chosen by an operator with `sync resolve`).
        #[serde(default)]
        resolves: Option<GenRef>,
    },
    /// The receiver's answer to a [`Message::Push`].
    Ack {
        /// The pushed generation.
        generation: GenRef,
        /// What happened.
        outcome: Outcome,
    },
    /// The sender's current generation in full, sent when a divergence is found, so each
    /// side can show the operator the diff.
    Head {
        /// The sender's current generation.
        generation: WireGeneration,
    },
    /// Runtime state (VRRP roles, persistence entries); opaque to the core, see the shell.
    Runtime {
        /// The state.
        state: Value,
    },
    /// Keepalive; any message counts as a sign of life.
    Ping,
}

impl Message {
    /// Short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Push { .. } => "push",
            Message::Ack { .. } => "ack",
            Message::Head { .. } => "head",
            Message::Runtime { .. } => "runtime",
            Message::Ping => "ping",
        }
    }
}

/// Encodes `msg` as one frame.
pub fn encode(msg: &Message) -> Result<Vec<u8>, SyncError> {
    let body = serde_json::to_vec(msg).map_err(|e| SyncError::Encode {
        kind: msg.kind(),
        reason: e.to_string(),
    })?;
    if body.len() > MAX_FRAME {
        return Err(SyncError::FrameTooLarge { size: body.len() });
    }
    let len =
        u32::try_from(body.len()).map_err(|_| SyncError::FrameTooLarge { size: body.len() })?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The length announced by a frame header, refused above [`MAX_FRAME`].
pub fn frame_len(header: [u8; 4]) -> Result<usize, SyncError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(SyncError::FrameTooLarge { size: len });
    }
    Ok(len)
}

/// Decodes a frame body.
pub fn decode(body: &[u8]) -> Result<Message, SyncError> {
    serde_json::from_slice(body).map_err(|e| SyncError::Malformed {
        reason: e.to_string(),
    })
}

/// Decodes as many whole frames as `buf` holds, removing them from it (for in-memory
/// transports and tests; the shell reads header and body directly).
pub fn decode_frames(buf: &mut Vec<u8>) -> Result<Vec<Message>, SyncError> {
    let mut out = Vec::new();
    while let Some(header) = buf.get(..4) {
        let len = frame_len([header[0], header[1], header[2], header[3]])?;
        if buf.len() < 4 + len {
            break;
        }
        out.push(decode(&buf[4..4 + len])?);
        buf.drain(..4 + len);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(n: u64) -> GenRef {
        GenRef {
            number: n,
            fingerprint: format!("{n:032x}"),
        }
    }

    #[test]
    fn frames_round_trip_and_split() {
        let msgs = vec![
            Message::Ping,
            Message::Ack {
                generation: g(3),
                outcome: Outcome::Refused {
                    kind: RefusalKind::Schema,
                    reason: "config schema v2 needs newer firmware".into(),
                },
            },
            Message::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                node: "lb1".into(),
                firmware: "0.1.0".into(),
                max_schema: 1,
                current: Some(g(2)),
                history: vec![g(1), g(2)],
            }),
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            wire.extend(encode(m).unwrap());
        }
        // Feed it in two pieces: the first cut mid-frame.
        let mut buf = wire[..7].to_vec();
        assert!(decode_frames(&mut buf).unwrap().is_empty());
        buf.extend_from_slice(&wire[7..]);
        assert_eq!(decode_frames(&mut buf).unwrap(), msgs);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let big = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(matches!(
            frame_len(big),
            Err(SyncError::FrameTooLarge { .. })
        ));
        assert!(matches!(
            decode(b"{\"type\":\"nope\"}"),
            Err(SyncError::Malformed { .. })
        ));
    }
}
