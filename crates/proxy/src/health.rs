//! Active health checks: one task per checked server, tcp or http probes, rise/fall.
//!
//! Owns: probing ([`probe`]) and feeding each result into the server's
//! `tandem_balance::ServerMonitor` through [`ServerState`] (which publishes, logs and counts
//! each transition once, with its reason).
//! Does not own: what "up" means for selection (`tandem-balance`), the hysteresis arithmetic,
//! or passive detection (fed by `http` and `tcp` from real traffic).
//! Checker tasks are restarted on reload; their state lives in [`ServerState`] and survives.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span};

use crate::live::{ServerState, Snapshot};
use crate::plan::{CheckKind, HealthCheck};

/// Longest status line read from an http check response, in bytes.
const MAX_STATUS_LINE_BYTES: usize = 1024;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckFailure {
    /// The TCP connect or the exchange failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The probe took longer than the check timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The http check got a status other than 2xx or 3xx.
    #[error("http status {0}")]
    Status(u16),
    /// The http check got something that is not an HTTP status line.
    #[error("invalid http response")]
    BadResponse,
}

impl CheckFailure {
    /// The balancer's classification of this failure.
    pub fn kind(&self) -> tandem_balance::CheckFailure {
        match self {
            Self::Io(_) => tandem_balance::CheckFailure::Connect,
            Self::Timeout(_) => tandem_balance::CheckFailure::Timeout,
            Self::Status(code) => tandem_balance::CheckFailure::Status(*code),
            Self::BadResponse => tandem_balance::CheckFailure::Protocol,
        }
    }
}

/// Runs one probe against `addr`.
pub async fn probe(
    kind: &CheckKind,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), CheckFailure> {
    let run = async {
        let mut s = TcpStream::connect(addr).await?;
        let CheckKind::Http {
            method,
            path,
            host,
            expect,
        } = kind
        else {
            return Ok(());
        };
        let host = host.clone().unwrap_or_else(|| addr.to_string());
        let req = format!(
            "{method} {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: tandem-check\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = [0u8; MAX_STATUS_LINE_BYTES];
        let mut len = 0;
        while !buf[..len].contains(&b'\n') && len < buf.len() {
            let n = s.read(&mut buf[len..]).await?;
            if n == 0 {
                break;
            }
            len += n;
        }
        let line = &buf[..len];
        if !line.starts_with(b"HTTP/1.") || line.len() < 12 {
            return Err(CheckFailure::BadResponse);
        }
        let code = std::str::from_utf8(&line[9..12])
            .ok()
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or(CheckFailure::BadResponse)?;
        if (expect.0..=expect.1).contains(&code) {
            Ok(())
        } else {
            Err(CheckFailure::Status(code))
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| CheckFailure::Timeout(timeout))?
}

/// Starts one checker per server of every backend that has a health check.
pub(crate) fn spawn_all(snap: &Snapshot) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (b, live) in snap.plan.backends().iter().zip(&snap.backends) {
        let Some(hc) = &b.health_check else { continue };
        for (s, state) in b.servers.iter().zip(&live.servers) {
            let span = info_span!("check", backend = %b.name, server = %s.name, addr = %s.addr);
            tasks.push(tokio::spawn(
                check_loop(hc.clone(), state.clone()).instrument(span),
            ));
        }
    }
    tasks
}

async fn check_loop(hc: HealthCheck, state: Arc<ServerState>) {
    let mut tick = tokio::time::interval(hc.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if state.status().admin == tandem_balance::AdminState::Maint {
            // Maintenance stops checks (the config's documented meaning); the last known
            // health stands until the server leaves maintenance and checks resume.
            continue;
        }
        let res = probe(&hc.kind, state.key.addr, hc.timeout).await;
        let verdict = res.as_ref().map(|_| ()).map_err(CheckFailure::kind);
        let changed = state.update(std::time::Instant::now(), |m| m.on_check(verdict));
        if let (None, Err(reason)) = (changed, &res) {
            debug!(%reason, status = %state.status(), "health probe failed");
        } else if let (Some(_), Err(reason)) = (changed, &res) {
            tracing::info!(%reason, "health probe failure changed the server state");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn one_shot_http(status_line: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(status_line.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_probe_reads_status() {
        let t = Duration::from_secs(2);
        let http = CheckKind::http;
        let ok = one_shot_http("HTTP/1.1 204 No Content\r\n\r\n").await;
        probe(&http("/"), ok, t).await.expect("204 is healthy");
        let bad = one_shot_http("HTTP/1.1 503 Unavailable\r\n\r\n").await;
        assert!(matches!(
            probe(&http("/"), bad, t).await,
            Err(CheckFailure::Status(503))
        ));
        let junk = one_shot_http("hello\r\n").await;
        assert!(matches!(
            probe(&http("/"), junk, t).await,
            Err(CheckFailure::BadResponse)
        ));
        probe(&CheckKind::Tcp, junk, t)
            .await
            .expect("tcp connect is enough");
    }
}
