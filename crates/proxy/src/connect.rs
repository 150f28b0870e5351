//! Outgoing connections to servers: TCP with `timeout connect` and TCP_NODELAY, then the
//! backend's PROXY protocol header (`send_proxy`) and TLS handshake (`tls`).
//!
//! Owns: turning a [`Server`] into a connected stream or a classified [`ProxyError`]; a
//! failed TLS handshake is a connect failure (retry-safe, nothing was sent).
//! Does not own: pooling (`live`), retries (`http`, `tcp`) or health probes (`health`).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::error::ProxyError;
use crate::plan::{Backend, Server};
use crate::tls::{MaybeTls, ServerStream};

/// Connects to `server` of `backend` for a client at `client` that connected to `local`:
/// TCP, then the PROXY header if the backend sends one, then TLS if it uses it, all within
/// `timeout connect`.
pub(crate) async fn open(
    server: &Server,
    backend: &Backend,
    client: SocketAddr,
    local: SocketAddr,
) -> Result<ServerStream, ProxyError> {
    let after = backend.timeouts.connect;
    let deadline = tokio::time::Instant::now() + after;
    let mut stream = connect(server, after).await?;
    let timed_out = || ProxyError::ConnectTimeout {
        server: server.name.clone(),
        addr: server.addr,
        after,
    };
    let failed = |source: io::Error| ProxyError::Connect {
        server: server.name.clone(),
        addr: server.addr,
        source,
    };
    if let Some(version) = backend.send_proxy {
        let header = crate::proxy_protocol::encode(version, client, local);
        match tokio::time::timeout_at(deadline, stream.write_all(&header)).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => return Err(failed(e)),
            Ok(Ok(())) => {}
        }
    }
    let Some(tls) = &backend.tls else {
        return Ok(MaybeTls::Plain(stream));
    };
    match tokio::time::timeout_at(deadline, tls.connect(stream, server.addr)).await {
        Err(_) => Err(timed_out()),
        Ok(Err(e)) => Err(failed(io::Error::new(
            e.kind(),
            format!("tls handshake failed: {e}"),
        ))),
        Ok(Ok(s)) => Ok(MaybeTls::Tls(Box::new(s))),
    }
}

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
