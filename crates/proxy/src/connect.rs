//! Outgoing TCP connections to servers, with `timeout connect` and TCP_NODELAY.
//!
//! Owns: turning a [`Server`] into a connected stream or a classified [`ProxyError`].
//! Does not own: pooling (`live`), retries (`http`, `tcp`) or health probes (`health`).

use std::time::Duration;

use tokio::net::TcpStream;

use crate::error::ProxyError;
use crate::plan::Server;

/// Connects to `server` within `timeout`.
pub(crate) async fn connect(server: &Server, timeout: Duration) -> Result<TcpStream, ProxyError> {
    match tokio::time::timeout(timeout, TcpStream::connect(server.addr)).await {
        Err(_) => Err(ProxyError::ConnectTimeout {
            server: server.name.clone(),
            addr: server.addr,
            after: timeout,
        }),
        Ok(Err(source)) => Err(ProxyError::Connect {
            server: server.name.clone(),
            addr: server.addr,
            source,
        }),
        Ok(Ok(s)) => {
            // Latency over throughput for request/response traffic; failure only costs latency.
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}
