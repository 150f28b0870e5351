//! `tandem-sync`: config sync between the two nodes of a Tandem pair.
//!
//! Owns the sync protocol: the sans-IO state machine ([`core`]) that decides, from both
//! nodes' generation histories, whether to push, wait, or raise a divergence; the wire
//! messages and framing ([`proto`]); the split-brain decision over exchanged VRRP roles
//! ([`guard`]); the reconnect backoff ([`backoff`]); the node identity and pinned-certificate
//! mutual TLS ([`tls`]); the tokio shell that runs it all over TCP on the sync link
//! ([`shell`]); and an in-memory pair harness with simulated time ([`sim`]).
//! Must not write the configuration store or apply anything itself: the supervisor does that
//! through its one transaction path, behind the [`shell::Host`] trait.
//! See `LIFECYCLE.md` for the states, messages and timers.

pub mod backoff;
pub mod core;
#[doc(hidden)]
pub mod fuzz;
pub mod guard;
pub mod proto;
pub mod shell;
pub mod sim;
pub mod tls;

use std::path::PathBuf;

pub use crate::core::{
    GenInfo, Identity, LinkState, LocalView, Output, Relation, Status, SyncCore,
};
pub use crate::proto::{GenRef, Message, Outcome, RefusalKind, WireGeneration};

/// Why a sync operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A message could not be serialized.
    #[error("failed to encode a {kind} message: {reason}")]
    Encode {
        /// The message kind.
        kind: &'static str,
        /// The cause.
        reason: String,
    },
    /// A frame is larger than [`proto::MAX_FRAME`].
    #[error("frame of {size} bytes exceeds the {} byte limit", proto::MAX_FRAME)]
    FrameTooLarge {
        /// Its size in bytes.
        size: usize,
    },
    /// A frame is not a valid message.
    #[error("malformed sync message: {reason}")]
    Malformed {
        /// The cause.
        reason: String,
    },
    /// A file of the sync identity could not be read or written.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The node certificate could not be generated or loaded.
    #[error("invalid sync identity in {path}: {reason}")]
    Identity {
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// A fingerprint given for pairing is not 64 hex digits.
    #[error("invalid certificate fingerprint {given:?}: expected 64 hex digits (SHA-256)")]
    BadFingerprint {
        /// What was given.
        given: String,
    },
    /// The TLS configuration could not be built.
    #[error("failed to set up TLS towards {peer}: {reason}")]
    Tls {
        /// The peer node.
        peer: String,
        /// The cause.
        reason: String,
    },
    /// Connecting to or talking with the peer failed.
    #[error("sync connection with {peer} failed: {reason}")]
    Connection {
        /// The peer node.
        peer: String,
        /// The cause.
        reason: String,
    },
}
