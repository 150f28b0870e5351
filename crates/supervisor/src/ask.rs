//! One request/response exchange with a local daemon over a line-delimited JSON Unix socket
//! (the VRRP daemon's control socket, the proxy runtime API), bounded in time, and the
//! [`Daemon`] seam the maintenance and split-brain logic talk to the VRRP daemon through.
//!
//! Owns the client side of those sockets only; must not interpret the replies.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// How long a request to the VRRP daemon or the proxy runtime API may take.
pub const PEER_SOCKET_TIMEOUT: Duration = Duration::from_secs(3);

/// A local daemon answering one JSON request with one JSON reply (the VRRP daemon's control
/// socket in production, a fake in tests).
pub trait Daemon: Send + Sync {
    /// Sends `request`, returns the reply or why there is none.
    fn ask(&self, request: &Value) -> impl Future<Output = Result<Value, String>> + Send;
}

/// A daemon behind a Unix socket path.
#[derive(Debug, Clone)]
pub struct UnixDaemon(pub PathBuf);

impl Daemon for UnixDaemon {
    fn ask(&self, request: &Value) -> impl Future<Output = Result<Value, String>> + Send {
        ask(&self.0, request)
    }
}

/// One request/response exchange on a line-delimited JSON Unix socket, bounded in time.
pub async fn ask(path: &Path, request: &Value) -> Result<Value, String> {
    let exchange = async {
        let mut stream = UnixStream::connect(path)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
        let mut line = request.to_string();
        line.push('\n');
        stream
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("cannot write to {}: {e}", path.display()))?;
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        reader
            .read_line(&mut answer)
            .await
            .map_err(|e| format!("cannot read from {}: {e}", path.display()))?;
        serde_json::from_str::<Value>(&answer)
            .map_err(|e| format!("malformed answer from {}: {e}", path.display()))
    };
    tokio::time::timeout(PEER_SOCKET_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{} did not answer within {}s",
                path.display(),
                PEER_SOCKET_TIMEOUT.as_secs()
            ))
        })
}

/// A daemon that says `{"ok":true}` to everything and records the requests (tests).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct FakeDaemon {
    requests: std::sync::Mutex<Vec<Value>>,
}

#[cfg(test)]
impl FakeDaemon {
    /// The requests so far, oldest first; forgets them.
    pub(crate) fn take(&self) -> Vec<Value> {
        std::mem::take(&mut *crate::state::lock(&self.requests))
    }
}

#[cfg(test)]
impl Daemon for FakeDaemon {
    fn ask(&self, request: &Value) -> impl Future<Output = Result<Value, String>> + Send {
        crate::state::lock(&self.requests).push(request.clone());
        async { Ok(serde_json::json!({"ok": true})) }
    }
}
