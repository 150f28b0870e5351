//! Tracking inputs that lower a node's priority: the local proxy's health, as a pluggable probe.
//!
//! Interface link state is read through netlink by the instance task itself (see
//! `instance.rs`); this module owns the proxy side: the [`ProxyProbe`] trait, its two
//! implementations, and the probe loop with rise/fall hysteresis that feeds a `watch` channel.
//!
//! # The default probe: the proxy's runtime API
//!
//! When an instance has `track.proxy`, the daemon asks the proxy's runtime API
//! (`runtime.socket`, `docs/runtime-api.md`) `{"cmd":"show frontends"}` every
//! [`ProbeTiming::interval`] ([`PROBE_INTERVAL_FACTOR`] advert intervals, clamped) and gives
//! every probe at most [`ProbeTiming::timeout`] ([`RuntimeApiProbe`]). The proxy is **down**
//! when the socket is missing, refuses the connection, does not answer in time, answers
//! something other than `{"ok":true,"frontends":[...]}`, or lists no frontend while the
//! configuration has some. The API exposes no per-listener state: a running proxy holds every
//! listener of its installed plan (a bind failure refuses the start or the reload), so an
//! answering proxy is a listening one. [`PROBE_FALL`] failures in a row mark it down,
//! [`PROBE_RISE`] successes mark it up again.
//!
//! `--proxy-probe-tcp ADDR` ([`TcpConnectProbe`]) overrides it with a TCP connect to a local
//! listener of the proxy.
//! Must not change priorities itself: it only reports healthy/unhealthy.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tracing::{info, warn};

/// The probe interval is this many advert intervals (of the fastest instance tracking the proxy).
pub const PROBE_INTERVAL_FACTOR: u32 = 3;
/// Shortest probe interval, whatever the advert interval.
pub const PROBE_INTERVAL_MIN: Duration = Duration::from_millis(100);
/// Longest probe interval, whatever the advert interval.
pub const PROBE_INTERVAL_MAX: Duration = Duration::from_secs(3);
/// Longest time one probe may take (the timeout is the interval, capped at this).
pub const PROBE_TIMEOUT_MAX: Duration = Duration::from_secs(1);
/// Longest runtime API answer read by a probe, in bytes (`show frontends` is far below).
pub const PROBE_MAX_ANSWER: u64 = 1024 * 1024;
/// Consecutive failures before the proxy counts as unhealthy.
pub const PROBE_FALL: u32 = 3;
/// Consecutive successes before an unhealthy proxy counts as healthy again.
pub const PROBE_RISE: u32 = 2;

/// How often the proxy is probed and how long one probe may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    /// Time between the starts of two probes.
    pub interval: Duration,
    /// Longest time one probe may take before it counts as failed.
    pub timeout: Duration,
}

impl ProbeTiming {
    /// [`PROBE_INTERVAL_FACTOR`] × `advert_interval`, clamped to
    /// [`PROBE_INTERVAL_MIN`]..=[`PROBE_INTERVAL_MAX`]; the timeout is the interval, at most
    /// [`PROBE_TIMEOUT_MAX`]. At a 100 ms advert interval: a probe every 300 ms, a dead proxy
    /// noticed after [`PROBE_FALL`] of them (0.6 to 0.9 s).
    pub fn for_advert_interval(advert_interval: Duration) -> ProbeTiming {
        let interval =
            (advert_interval * PROBE_INTERVAL_FACTOR).clamp(PROBE_INTERVAL_MIN, PROBE_INTERVAL_MAX);
        ProbeTiming {
            interval,
            timeout: interval.min(PROBE_TIMEOUT_MAX),
        }
    }
}

/// A health check of the local proxy: `Ok(())` when healthy, `Err(reason)` when not.
pub trait ProxyProbe: Send + Sync + std::fmt::Debug + 'static {
    /// Runs one check. The caller bounds it with [`ProbeTiming::timeout`].
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// Healthy when the proxy's runtime API answers `show frontends` (see the module doc).
#[derive(Debug, Clone)]
pub struct RuntimeApiProbe {
    /// The runtime API socket (`runtime.socket`).
    pub socket: PathBuf,
    /// The configuration has frontends, so an answer listing none means the proxy serves nothing.
    pub expect_frontends: bool,
}

impl ProxyProbe for RuntimeApiProbe {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let path = self.socket.display();
            let mut stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|e| format!("connect to the runtime api {path} failed: {e}"))?;
            stream
                .write_all(&tandem_control::runtime::Request::ShowFrontends.to_line())
                .await
                .map_err(|e| format!("write to the runtime api {path} failed: {e}"))?;
            let mut line = String::new();
            BufReader::new(stream)
                .take(PROBE_MAX_ANSWER)
                .read_line(&mut line)
                .await
                .map_err(|e| format!("read from the runtime api {path} failed: {e}"))?;
            judge_frontends(&line, self.expect_frontends)
        })
    }
}

/// Judges one `show frontends` answer line: `Ok` when the proxy is serving.
pub fn judge_frontends(line: &str, expect_frontends: bool) -> Result<(), String> {
    if line.is_empty() {
        return Err("the runtime api closed the connection without answering".to_owned());
    }
    if !line.ends_with('\n') {
        return Err("the runtime api answer is truncated or too long".to_owned());
    }
    let answer: Value = serde_json::from_str(line)
        .map_err(|e| format!("the runtime api answer is not json: {e}"))?;
    if answer.get("ok") != Some(&Value::Bool(true)) {
        let error = answer.get("error").and_then(Value::as_str).unwrap_or("");
        return Err(format!("the runtime api answered an error: {error}"));
    }
    let Some(frontends) = answer.get("frontends").and_then(Value::as_array) else {
        return Err("the runtime api answer has no frontends list".to_owned());
    };
    if expect_frontends && frontends.is_empty() {
        return Err("the proxy serves no frontend".to_owned());
    }
    Ok(())
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
    timing: ProbeTiming,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(true);
    let task = tokio::spawn(async move {
        let mut healthy = true;
        let mut streak = 0;
        let mut failures: u64 = 0;
        let mut tick = tokio::time::interval(timing.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(probe = ?probe, interval_ms = timing.interval.as_millis() as u64,
            timeout_ms = timing.timeout.as_millis() as u64, "proxy tracking started");
        loop {
            tick.tick().await;
            let result = match tokio::time::timeout(timing.timeout, probe.check()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", timing.timeout)),
            };
            if let Err(reason) = &result {
                failures += 1;
                // Every failure is counted; once the proxy is marked down they are logged at
                // debug only, so a dead proxy does not flood the log.
                if healthy {
                    warn!(probe = ?probe, %reason, failures, "proxy probe failed");
                } else {
                    tracing::debug!(probe = ?probe, %reason, failures, "proxy probe failed");
                }
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

    #[test]
    fn probe_timing_follows_the_advert_interval_within_bounds() {
        let t = ProbeTiming::for_advert_interval(Duration::from_millis(100));
        assert_eq!(t.interval, Duration::from_millis(300));
        assert_eq!(t.timeout, Duration::from_millis(300));
        let t = ProbeTiming::for_advert_interval(Duration::from_millis(10));
        assert_eq!(t.interval, PROBE_INTERVAL_MIN);
        let t = ProbeTiming::for_advert_interval(Duration::from_secs(1));
        assert_eq!(t.interval, PROBE_INTERVAL_MAX);
        assert_eq!(t.timeout, PROBE_TIMEOUT_MAX);
    }

    #[test]
    fn judges_show_frontends_answers() {
        let ok = "{\"ok\":true,\"frontends\":[{\"name\":\"web\"}]}\n";
        assert_eq!(judge_frontends(ok, true), Ok(()));
        let none = "{\"ok\":true,\"frontends\":[]}\n";
        assert_eq!(judge_frontends(none, false), Ok(()));
        assert!(judge_frontends(none, true).is_err());
        for bad in [
            "",
            "{\"ok\":true,\"frontends\":[]}",
            "not json\n",
            "{\"ok\":false,\"error\":\"boom\"}\n",
            "{\"ok\":true}\n",
            "{\"ok\":true,\"frontends\":3}\n",
            "[1,2]\n",
        ] {
            assert!(judge_frontends(bad, false).is_err(), "{bad:?}");
        }
    }

    /// A fake runtime API on a socket in a temp dir, probed for real; then the socket is gone.
    #[tokio::test]
    async fn runtime_api_probe_against_a_socket() {
        let dir = std::env::temp_dir().join(format!("vrrpd-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("proxy.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            BufReader::new(r).read_line(&mut line).await.expect("read");
            assert_eq!(line, "{\"cmd\":\"show frontends\"}\n");
            w.write_all(b"{\"ok\":true,\"frontends\":[{\"name\":\"web\"}]}\n")
                .await
                .expect("write");
        });
        let probe = RuntimeApiProbe {
            socket: path.clone(),
            expect_frontends: true,
        };
        let r = tokio::time::timeout(Duration::from_secs(5), probe.check()).await;
        assert_eq!(r.expect("bounded"), Ok(()));
        server.await.expect("server");
        std::fs::remove_file(&path).expect("remove socket");
        let r = tokio::time::timeout(Duration::from_secs(5), probe.check()).await;
        assert!(r.expect("bounded").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
