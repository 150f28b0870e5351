//! Applying a generation to the running services and checking the result.
//!
//! Owns what "applied and checked" means (see `LIFECYCLE.md`):
//! the proxy acknowledged the reload (the runtime API's answer to `reload`, [`reload_over_api`];
//! without a reachable API, its `reloaded on SIGHUP` log line after a SIGHUP) or its start (its
//! `proxy started` log line, read from its JSON log on stderr), its process is still alive, and every frontend bind on a local
//! address accepts a TCP connection; the VRRP daemon, when the node runs one, is (re)started
//! when its sections changed and is still alive after [`VRRP_SETTLE`].
//! Must not touch the store; the transaction code (`core`) decides what to restore.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;
use tokio::time::{Instant, timeout_at};

use crate::state::ChildEvent;

/// How long the proxy gets to acknowledge a reload or a start.
pub const PROXY_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long every local bind gets to accept a connection after the acknowledgement.
pub const LISTEN_CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a (re)started VRRP daemon must stay up to count as applied.
pub const VRRP_SETTLE: Duration = Duration::from_millis(1000);

/// What the proxy said in one JSON log line, for the transaction code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyLog {
    /// `proxy started` (listeners bound).
    Started,
    /// `reloaded on SIGHUP`, with the proxy's internal plan generation.
    Reloaded,
    /// `reload refused, previous configuration keeps serving`, with the cause.
    Refused(String),
    /// A fatal error line printed by `tandem` before exiting (`tandem: error: ...`).
    Fatal(String),
    /// `runtime api unavailable`, with the cause (the API could not bind its socket).
    RuntimeApiUnavailable(String),
    /// `handover socket unavailable, ...`, with the cause.
    HandoverUnavailable(String),
}

/// Reads a proxy output line: `tracing-subscriber` JSON (`TANDEM_LOG=json`) or the binary's
/// `tandem: error:` line. Couples to the proxy's log messages for its start, its socket
/// problems and a reload by SIGHUP (a reload is asked of the runtime API when it can be:
/// [`reload_over_api`]; see `LIFECYCLE.md`).
pub fn parse_proxy_line(line: &str) -> Option<ProxyLog> {
    if let Some(rest) = line.strip_prefix("tandem: error: ") {
        return Some(ProxyLog::Fatal(rest.to_owned()));
    }
    let v: Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    let message = fields.get("message")?.as_str()?;
    let cause = || {
        fields
            .get("cause")
            .and_then(Value::as_str)
            .unwrap_or(message)
            .to_owned()
    };
    match message {
        "proxy started" => Some(ProxyLog::Started),
        "runtime api unavailable" => Some(ProxyLog::RuntimeApiUnavailable(cause())),
        m if m.starts_with("handover socket unavailable") => {
            Some(ProxyLog::HandoverUnavailable(cause()))
        }
        "reloaded on SIGHUP" => Some(ProxyLog::Reloaded),
        m if m.starts_with("reload refused") => Some(ProxyLog::Refused(cause())),
        _ => None,
    }
}

/// What the proxy runtime API said to `reload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiReload {
    /// Reloaded: the new configuration serves.
    Reloaded,
    /// Refused (an invalid file, a bind that failed; worded as [`wait_proxy_ack`] words a
    /// refusal logged after a SIGHUP), or no answer within [`PROXY_ACK_TIMEOUT`].
    Failed(String),
    /// The connection closed without an answer (the proxy may have exited: the caller waits
    /// for its events).
    NoAnswer(String),
    /// The API could not be asked or would not reload (no socket there, no configuration
    /// source, a full session table): reload by SIGHUP instead.
    Unavailable(String),
}

/// Asks the proxy runtime API on `socket` to reload (`{"cmd":"reload"}`, the same contract
/// as SIGHUP: it re-reads the running file), waiting up to [`PROXY_ACK_TIMEOUT`] for the
/// typed answer (`tandem_control::runtime::Reloaded` or `reload refused: ...`).
pub async fn reload_over_api(socket: &std::path::Path) -> ApiReload {
    use tandem_control::Reply;
    use tandem_control::runtime::{Reloaded, Request};
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let connect = tokio::time::timeout(
        crate::ask::PEER_SOCKET_TIMEOUT,
        tokio::net::UnixStream::connect(socket),
    );
    let mut stream = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return ApiReload::Unavailable(format!("cannot connect: {e}")),
        Err(_) => return ApiReload::Unavailable("connect timed out".into()),
    };
    if let Err(e) = stream.write_all(&Request::Reload.to_line()).await {
        return ApiReload::Unavailable(format!("cannot write: {e}"));
    }
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(stream);
    match tokio::time::timeout(PROXY_ACK_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => {
            return ApiReload::Failed(format!(
                "the proxy did not acknowledge the reload within {}s",
                PROXY_ACK_TIMEOUT.as_secs()
            ));
        }
        Ok(Ok(0)) => return ApiReload::NoAnswer("the runtime API closed the connection".into()),
        Ok(Err(e)) => return ApiReload::NoAnswer(format!("cannot read: {e}")),
        Ok(Ok(_)) => {}
    }
    match Reply::<Reloaded>::from_line(line.as_bytes()) {
        Ok(Reply::Ok(_)) => ApiReload::Reloaded,
        Ok(Reply::Err(f)) => match f.error.strip_prefix("reload refused: ") {
            Some(cause) => ApiReload::Failed(format!("the proxy refused the reload: {cause}")),
            None => ApiReload::Unavailable(f.error),
        },
        Err(e) => ApiReload::Unavailable(e.to_string()),
    }
}

/// Waits for the proxy's answer to a reload (`reload: true`) or a start, on `events`
/// (subscribed before the signal was sent). `Ok` when it acknowledged.
pub async fn wait_proxy_ack(
    events: &mut broadcast::Receiver<ChildEvent>,
    reload: bool,
) -> Result<(), String> {
    let deadline = Instant::now() + PROXY_ACK_TIMEOUT;
    let mut fatal = None;
    loop {
        let ev = match timeout_at(deadline, events.recv()).await {
            Err(_) => {
                return Err(format!(
                    "the proxy did not acknowledge the {} within {}s",
                    if reload { "reload" } else { "start" },
                    PROXY_ACK_TIMEOUT.as_secs()
                ));
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                return Err("supervisor is stopping".into());
            }
            Ok(Ok(ev)) => ev,
        };
        match ev {
            ChildEvent::Line {
                service: "proxy",
                line,
            } => match parse_proxy_line(&line) {
                Some(ProxyLog::Reloaded) if reload => return Ok(()),
                Some(ProxyLog::Started) if !reload => return Ok(()),
                Some(ProxyLog::Refused(cause)) if reload => {
                    return Err(format!("the proxy refused the reload: {cause}"));
                }
                Some(ProxyLog::Fatal(cause)) => fatal = Some(cause),
                _ => {}
            },
            ChildEvent::Exited {
                service: "proxy",
                how,
                ..
            } => {
                return Err(match fatal {
                    Some(cause) => format!("the proxy exited ({how}): {cause}"),
                    None => format!("the proxy exited ({how})"),
                });
            }
            _ => {}
        }
    }
}

/// The addresses to connect to for checking `binds`: unspecified addresses become loopback,
/// addresses this node does not hold (a VIP on the backup node) are skipped.
pub fn local_check_targets(binds: &[SocketAddr]) -> Vec<SocketAddr> {
    binds
        .iter()
        .filter_map(|a| {
            let ip = match a.ip() {
                IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            // Local means: on one of this host's interfaces. (Binding a UDP socket is not a
            // test: with net.ipv4.ip_nonlocal_bind=1, which a backup node needs so its proxy
            // can bind a VIP it does not hold, every address binds.)
            (ip.is_loopback() || is_local_address(ip)).then(|| SocketAddr::new(ip, a.port()))
        })
        .collect()
}

/// Whether `ip` is assigned to an interface of this host (its network namespace).
fn is_local_address(ip: IpAddr) -> bool {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return false;
    };
    addrs.into_iter().any(|i| {
        i.address.is_some_and(|a| {
            a.as_sockaddr_in().map(|v| IpAddr::V4(v.ip())) == Some(ip)
                || a.as_sockaddr_in6().map(|v| IpAddr::V6(v.ip())) == Some(ip)
        })
    })
}

/// Checks that every address of `targets` accepts a TCP connection within
/// [`LISTEN_CHECK_TIMEOUT`] (retrying, the proxy binds right before it acknowledges).
pub async fn check_listeners(targets: &[SocketAddr]) -> Result<(), String> {
    let deadline = Instant::now() + LISTEN_CHECK_TIMEOUT;
    for addr in targets {
        loop {
            match timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => break,
                Ok(Err(e)) if Instant::now() < deadline => {
                    tracing::debug!(%addr, cause = %e, "listener not accepting yet");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Err(e)) => {
                    return Err(format!(
                        "frontend bind {addr} does not accept connections: {e}"
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "frontend bind {addr} did not accept a connection within {}s",
                        LISTEN_CHECK_TIMEOUT.as_secs()
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_proxy_acknowledgements() {
        let check = |line: &str| parse_proxy_line(line);
        assert_eq!(
            check(
                r#"{"timestamp":"x","level":"INFO","fields":{"message":"reloaded on SIGHUP","generation":2},"target":"tandem_proxy"}"#
            ),
            Some(ProxyLog::Reloaded)
        );
        assert_eq!(
            check(r#"{"fields":{"message":"proxy started","generation":1}}"#),
            Some(ProxyLog::Started)
        );
        assert_eq!(
            check(
                r#"{"fields":{"message":"reload refused, previous configuration keeps serving","cause":"failed to bind 127.0.0.1:80: Address in use"}}"#
            ),
            Some(ProxyLog::Refused(
                "failed to bind 127.0.0.1:80: Address in use".into()
            ))
        );
        assert_eq!(
            check("tandem: error: proxy stopped: failed to bind"),
            Some(ProxyLog::Fatal("proxy stopped: failed to bind".into()))
        );
        assert_eq!(
            check(
                r#"{"fields":{"message":"runtime api unavailable","cause":"failed to bind the runtime api socket /run/tandem/proxy.sock: No such file or directory (os error 2)"}}"#
            ),
            Some(ProxyLog::RuntimeApiUnavailable(
                "failed to bind the runtime api socket /run/tandem/proxy.sock: No such file or directory (os error 2)".into()
            ))
        );
        assert_eq!(
            check(
                r#"{"fields":{"message":"handover socket unavailable, upgrades need a restart","cause":"cannot listen"}}"#
            ),
            Some(ProxyLog::HandoverUnavailable("cannot listen".into()))
        );
        assert_eq!(check(r#"{"fields":{"message":"accepted"}}"#), None);
        assert_eq!(check("plain text"), None);
    }

    #[test]
    fn check_targets_map_wildcards_to_loopback_and_skip_foreign_addresses() {
        let binds: Vec<SocketAddr> = ["0.0.0.0:80", "127.0.0.1:81", "198.51.100.7:82"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let t = local_check_targets(&binds);
        assert_eq!(
            t,
            vec![
                "127.0.0.1:80".parse().unwrap(),
                "127.0.0.1:81".parse().unwrap()
            ]
        );
    }

    /// A one-shot runtime API on a temp socket answering `answer` to the first line (or
    /// closing without an answer for `None`); the request it read.
    async fn api_answering(
        tag: &str,
        answer: Option<&'static str>,
    ) -> (std::path::PathBuf, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let dir = std::env::temp_dir().join(format!("tandem-apply-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("proxy.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (rd, mut wr) = stream.into_split();
            let mut line = String::new();
            tokio::io::BufReader::new(rd)
                .read_line(&mut line)
                .await
                .unwrap();
            if let Some(a) = answer {
                wr.write_all(format!("{a}\n").as_bytes()).await.unwrap();
            }
            let _ = std::fs::remove_dir_all(dir);
            line
        });
        (path, task)
    }

    #[tokio::test]
    async fn a_reload_is_answered_by_the_runtime_api() {
        let (path, task) = api_answering("ok", Some(r#"{"generation":3,"ok":true}"#)).await;
        assert_eq!(reload_over_api(&path).await, ApiReload::Reloaded);
        assert_eq!(task.await.unwrap(), "{\"cmd\":\"reload\"}\n");

        let refused =
            r#"{"error":"reload refused: failed to bind 127.0.0.1:80: Address in use","ok":false}"#;
        let (path, _task) = api_answering("refused", Some(refused)).await;
        assert_eq!(
            reload_over_api(&path).await,
            ApiReload::Failed(
                "the proxy refused the reload: failed to bind 127.0.0.1:80: Address in use".into()
            )
        );

        let (path, _task) = api_answering(
            "nosource",
            Some(r#"{"error":"reload is not available: the proxy has no configuration source","ok":false}"#),
        )
        .await;
        assert!(matches!(
            reload_over_api(&path).await,
            ApiReload::Unavailable(_)
        ));

        let (path, _task) = api_answering("closed", None).await;
        assert!(matches!(
            reload_over_api(&path).await,
            ApiReload::NoAnswer(_)
        ));

        let missing = std::env::temp_dir().join("tandem-apply-no-such-dir/proxy.sock");
        assert!(matches!(
            reload_over_api(&missing).await,
            ApiReload::Unavailable(_)
        ));
    }
}
