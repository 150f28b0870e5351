//! Tracking inputs that lower a node's priority: the local proxy's health, as a pluggable probe.
//!
//! Interface link state is read through netlink by the instance task itself (see
//! `instance.rs`); this module owns the proxy side: the [`ProxyProbe`] trait, a TCP-connect
//! implementation, and the probe loop with rise/fall hysteresis that feeds a `watch` channel.
//!
//! The proxy's runtime API is not written yet, so no probe is built in by default: when the
//! config asks for `track.proxy` but the daemon is given no probe, proxy tracking is **inert**
//! (logged once at startup; the proxy counts as healthy). The binary offers
//! `--proxy-probe-tcp ADDR` (connect to a local listener of the proxy) until the runtime API lands.
//! Must not change priorities itself: it only reports healthy/unhealthy.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

/// How often the proxy is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How long one probe may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(400);
/// Consecutive failures before the proxy counts as unhealthy.
pub const PROBE_FALL: u32 = 3;
/// Consecutive successes before an unhealthy proxy counts as healthy again.
pub const PROBE_RISE: u32 = 2;

/// A health check of the local proxy: `Ok(())` when healthy, `Err(reason)` when not.
pub trait ProxyProbe: Send + Sync + std::fmt::Debug + 'static {
    /// Runs one check. The caller bounds it with [`PROBE_TIMEOUT`].
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// Healthy when a TCP connection to `addr` (a local listener of the proxy) succeeds.
#[derive(Debug, Clone)]
pub struct TcpConnectProbe {
    /// Where to connect.
    pub addr: SocketAddr,
}

impl ProxyProbe for TcpConnectProbe {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            tokio::net::TcpStream::connect(self.addr)
                .await
                .map(drop)
                .map_err(|e| format!("connect to {} failed: {e}", self.addr))
        })
    }
}

/// Pure rise/fall hysteresis: returns the new health after one observation.
pub fn observe(healthy: bool, streak: &mut u32, success: bool) -> bool {
    if success == healthy {
        *streak = 0;
        return healthy;
    }
    *streak += 1;
    let needed = if healthy { PROBE_FALL } else { PROBE_RISE };
    if *streak >= needed {
        *streak = 0;
        !healthy
    } else {
        healthy
    }
}

/// Starts the probe loop; the receiver reads `true` while the proxy is healthy. The proxy starts
/// as healthy so a slow proxy start does not make a fresh node give up mastership at once.
pub fn spawn_probe(
    probe: Arc<dyn ProxyProbe>,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(true);
    let task = tokio::spawn(async move {
        let mut healthy = true;
        let mut streak = 0;
        let mut failures: u64 = 0;
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let result = match tokio::time::timeout(PROBE_TIMEOUT, probe.check()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            };
            if let Err(reason) = &result {
                failures += 1;
                warn!(probe = ?probe, %reason, failures, "proxy probe failed");
            }
            let now = observe(healthy, &mut streak, result.is_ok());
            if now != healthy {
                info!(probe = ?probe, healthy = now, "proxy health changed");
                healthy = now;
                if tx.send(healthy).is_err() {
                    return; // every instance is gone
                }
            }
        }
    });
    (rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_needs_fall_failures_and_rise_successes() {
        let run = |start: bool, seq: &[bool]| {
            let mut h = start;
            let mut streak = 0;
            for &s in seq {
                h = observe(h, &mut streak, s);
            }
            h
        };
        assert!(run(true, &[false, false]));
        assert!(!run(true, &[false, false, false]));
        assert!(run(true, &[false, false, true, false, false]));
        assert!(!run(false, &[true]));
        assert!(run(false, &[true, true]));
        assert!(!run(false, &[true, false, true]));
    }
}
