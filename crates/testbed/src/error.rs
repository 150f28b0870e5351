//! The testbed's error type.
//!
//! Owns [`Error`] and the [`Result`] alias used by every fallible call of this crate.
//! It does not decide what is an error (the callers do); it only carries the context an engineer
//! needs to see in a failed test: the command, the namespace, the interface and the stderr.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias for the testbed.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while building, using or tearing down a testbed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller is not root; network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN).
    #[error("testbed needs root (network namespaces), running as euid {euid}")]
    NotRoot {
        /// Effective uid of the test process.
        euid: u32,
    },
    /// An external command (usually `ip`) ran and exited with a failure status.
    #[error("command `{command}` failed in netns {netns}: {status}: {stderr}")]
    Command {
        /// The command line, as run.
        command: String,
        /// Namespace it acted on (`root` for the root namespace).
        netns: String,
        /// Exit status.
        status: std::process::ExitStatus,
        /// Trimmed standard error of the command.
        stderr: String,
    },
    /// An external command could not be started at all (not installed, not executable, ...).
    #[error("failed to start `{command}` in netns {netns}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Namespace it should have run in.
        netns: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An address is outside 198.18.0.0/15 or its prefix would route outside it.
    #[error("address {addr} is not allowed: {reason} (tests may only use 198.18.0.0/15)")]
    AddressNotAllowed {
        /// The address as given.
        addr: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A string could not be parsed as `a.b.c.d/len`.
    #[error("invalid address {addr}: {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A MAC address is malformed or not unicast.
    #[error("invalid mac address {mac}: {reason}")]
    InvalidMac {
        /// The MAC as given.
        mac: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A testbed, host, segment or interface name is empty, too long or has odd characters.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// What was being named (`interface`, `host`, ...).
        kind: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A host or segment name was used twice in one testbed.
    #[error("{kind} {name} already exists in testbed {bed}")]
    Duplicate {
        /// `host`, `segment` or `interface`.
        kind: &'static str,
        /// The duplicated name.
        name: String,
        /// The testbed.
        bed: String,
    },
    /// A host interface name is not attached to any segment of this host.
    #[error("host {host} has no interface {ifname} attached by the testbed")]
    UnknownInterface {
        /// The host.
        host: String,
        /// The interface asked for.
        ifname: String,
    },
    /// A segment of another testbed was passed to `attach`.
    #[error("segment {segment} belongs to testbed {segment_bed}, not to {bed}")]
    ForeignSegment {
        /// The segment.
        segment: String,
        /// Testbed the segment belongs to.
        segment_bed: String,
        /// Testbed of the host.
        bed: String,
    },
    /// The testbed was already torn down (a handle outlived its `Testbed`).
    #[error("testbed {bed} is torn down")]
    TornDown {
        /// The testbed.
        bed: String,
    },
    /// Entering a host's network namespace failed.
    #[error("failed to enter netns {netns}: {source}")]
    Setns {
        /// The namespace.
        netns: String,
        /// The errno from open or setns.
        source: std::io::Error,
    },
    /// A bounded wait ran out of time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// The bound.
        after: Duration,
    },
    /// Signalling a process group failed.
    #[error("failed to send {signal} to process group {pgid} on host {host}: {source}")]
    Signal {
        /// The signal.
        signal: nix::sys::signal::Signal,
        /// The process group.
        pgid: i32,
        /// The host the process runs in.
        host: String,
        /// The errno.
        source: nix::Error,
    },
    /// A file or directory of the testbed (lock, logs) could not be used.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was being done (`create`, `read`, ...).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A thread for running code inside a host could not be started.
    #[error("failed to start a thread for host {host}: {source}")]
    Thread {
        /// The host.
        host: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `ip -j` printed something this crate cannot read.
    #[error("unexpected output of `{command}` in netns {netns}: {reason}")]
    Parse {
        /// The command line.
        command: String,
        /// The namespace.
        netns: String,
        /// What did not match.
        reason: String,
    },
}
