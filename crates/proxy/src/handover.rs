//! Binary upgrade: a running proxy hands its listening sockets to a successor process over
//! a Unix socket (`SCM_RIGHTS`), so that no client connection is refused during the upgrade.
//!
//! Owns: the handover socket of a running proxy ([`spawn`]), the successor's side
//! ([`take_over`], [`Predecessor::ready`]) and the wire protocol below.
//! Does not own: what the sockets serve (`proxy`), nor stopping and draining (`lib::run`,
//! the same path as SIGTERM). Never touches the listening sockets' state: they stay open
//! and listening throughout, in one process or the other (or both for a moment), so the
//! kernel's accept queue is never closed.
//!
//! Protocol, on a `SOCK_STREAM` Unix socket (mode 0600) at the old process's handover path
//! (`--handover-socket`, by default `<runtime.socket>.handover`):
//! 1. new → old: `TAKEOVER 1\n`;
//! 2. old → new, in one `sendmsg`: `LISTENERS <n>\n`, one configured bind address per
//!    line, `END\n`, with `n` (at most [`MAX_LISTENERS`]) duplicated listening sockets in
//!    an `SCM_RIGHTS` control message, in the same order;
//! 3. the new process builds its listeners from them (configured binds match by address;
//!    binds not handed over are bound fresh; handed-over sockets it does not bind are
//!    closed), starts accepting, then new → old: `READY\n`. Closing the connection instead
//!    (invalid configuration, bind failure, crash) aborts: the old process keeps serving
//!    as if nothing happened;
//! 4. old: stops its runtime API, metrics endpoint and handover socket (unlinked), then
//!    old → new: `DONE\n`; the new process opens those in turn. The old process then stops
//!    accepting and drains its connections as on SIGTERM, and exits.
//!
//! Each step is bounded ([`STEP_TIMEOUT_SECS`]); a successor that never says `READY` is
//! dropped and the old process keeps serving.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument, info, info_span, warn};

use crate::Proxy;

/// Most listening sockets handed over (the kernel's `SCM_MAX_FD` is 253).
pub const MAX_LISTENERS: usize = 250;
/// Longest wait for each step of the exchange (the successor's start-up included), in seconds.
pub const STEP_TIMEOUT_SECS: u64 = 30;
/// Longest protocol message, in bytes.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Upgrade settings of [`crate::run_with`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Where to accept successors; `None`: `<runtime.socket>.handover` when the runtime
    /// API is configured, else no handover.
    pub serve: Option<PathBuf>,
    /// Take the listening sockets from the process serving this handover socket.
    pub take_over: Option<PathBuf>,
}

/// The default handover socket next to the runtime API socket.
pub fn default_path(runtime_socket: &Path) -> PathBuf {
    let mut p = runtime_socket.as_os_str().to_owned();
    p.push(".handover");
    PathBuf::from(p)
}

/// Why a handover failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The handover socket of the running proxy could not be reached.
    #[error("cannot connect to handover socket {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The handover socket could not be opened for successors.
    #[error("cannot listen on handover socket {path}: {source}")]
    Listen {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Sending or receiving on the handover socket failed (or timed out).
    #[error("handover i/o on {path} failed: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The peer sent something the protocol does not allow.
    #[error("handover protocol error on {path}: {what}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
}

/// The connection to the old process, kept until the new one serves.
#[derive(Debug)]
pub struct Predecessor {
    stream: UnixStream,
    path: PathBuf,
}

/// Connects to the old process at `path` and receives its listening sockets, by
/// configured bind address.
pub async fn take_over(
    path: &Path,
) -> Result<(Predecessor, HashMap<SocketAddr, std::net::TcpListener>), HandoverError> {
    let path = path.to_owned();
    blocking(move || {
        let stream = UnixStream::connect(&path).map_err(|source| HandoverError::Connect {
            path: path.clone(),
            source,
        })?;
        let io_err = |source| HandoverError::Io {
            path: path.clone(),
            source,
        };
        set_timeouts(&stream).map_err(io_err)?;
        (&stream).write_all(b"TAKEOVER 1\n").map_err(io_err)?;
        let (text, fds) = receive_listeners(&stream).map_err(io_err)?;
        let listeners = parse_listeners(&text, fds).map_err(|what| HandoverError::Protocol {
            path: path.clone(),
            what,
        })?;
        info!(socket = %path.display(), listeners = listeners.len(), "listening sockets received");
        Ok((Predecessor { stream, path }, listeners))
    })
    .await
}

impl Predecessor {
    /// Tells the old process that the new one serves, and waits until it has released its
    /// runtime API, metrics and handover sockets (`DONE`).
    pub async fn ready(self) -> Result<(), HandoverError> {
        blocking(move || {
            let io_err = |source| HandoverError::Io {
                path: self.path.clone(),
                source,
            };
            (&self.stream).write_all(b"READY\n").map_err(io_err)?;
            let line = read_line(&self.stream).map_err(io_err)?;
            if line != "DONE" {
                return Err(HandoverError::Protocol {
                    path: self.path.clone(),
                    what: format!("expected DONE, got {line:?}"),
                });
            }
            info!(socket = %self.path.display(), "predecessor released its sockets");
            Ok(())
        })
        .await
    }
}

/// A successor said `READY`: the receiver stops the runtime API and metrics endpoint,
/// then answers on the enclosed sender, after which `DONE` is sent.
pub type HandedOver = oneshot::Sender<()>;

/// Accepts successors on `path` (a stale socket there is replaced); each gets `proxy`'s
/// listening sockets. After the first `READY`, asks `handed` to release the side sockets,
/// unlinks `path`, sends `DONE` and ends.
pub fn spawn(
    proxy: Proxy,
    path: &Path,
    handed: mpsc::Sender<HandedOver>,
) -> Result<JoinHandle<()>, HandoverError> {
    let (listener, claimed) = crate::unix::bind(path, 0o600).map_err(|e| match e {
        crate::unix::ClaimError::Bind { path, source } => HandoverError::Listen { path, source },
        occupied => HandoverError::Listen {
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::AddrInUse, occupied.to_string()),
        },
    })?;
    info!(socket = %path.display(), "handover socket listening");
    let path = path.to_owned();
    let span = info_span!("handover", socket = %path.display());
    Ok(tokio::spawn(
        async move {
            // Unlinked when the task ends (if still this socket), as after a handover; the
            // listener is declared after it, so it is closed first.
            let claimed = claimed;
            let listener = listener;
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        warn!(cause = %e, "handover accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                match hand_over(&proxy, &path, stream).await {
                    Ok(stream) => {
                        let (tx, rx) = oneshot::channel();
                        if handed.send(tx).await.is_err() || rx.await.is_err() {
                            // `run` is stopping anyway; the successor sees the close.
                            return;
                        }
                        drop(listener);
                        drop(claimed);
                        let done = blocking(move || {
                            (&stream)
                                .write_all(b"DONE\n")
                                .map_err(|source| HandoverError::Io { path, source })
                        })
                        .await;
                        if let Err(e) = done {
                            warn!(cause = %e, "handover: successor gone after READY");
                        }
                        return;
                    }
                    Err(e) => warn!(cause = %e, "handover aborted, this process keeps serving"),
                }
            }
        }
        .instrument(span),
    ))
}

/// Steps 1 to 3 with one successor; the stream once it said `READY`.
async fn hand_over(
    proxy: &Proxy,
    path: &Path,
    stream: tokio::net::UnixStream,
) -> Result<UnixStream, HandoverError> {
    let path = path.to_owned();
    let io_err = |source| HandoverError::Io {
        path: path.clone(),
        source,
    };
    let fds = proxy.listener_fds().await.map_err(io_err)?;
    let stream = stream.into_std().map_err(io_err)?;
    blocking(move || {
        let io_err = |source| HandoverError::Io {
            path: path.clone(),
            source,
        };
        let protocol = |what: String| HandoverError::Protocol {
            path: path.clone(),
            what,
        };
        stream.set_nonblocking(false).map_err(io_err)?;
        set_timeouts(&stream).map_err(io_err)?;
        let hello = read_line(&stream).map_err(io_err)?;
        if hello != "TAKEOVER 1" {
            return Err(protocol(format!("expected TAKEOVER 1, got {hello:?}")));
        }
        if fds.len() > MAX_LISTENERS {
            return Err(protocol(format!(
                "{} listeners, at most {MAX_LISTENERS} can be handed over",
                fds.len()
            )));
        }
        let mut text = format!("LISTENERS {}\n", fds.len());
        for (addr, _) in &fds {
            text.push_str(&format!("{addr}\n"));
        }
        text.push_str("END\n");
        let raw: Vec<RawFd> = fds.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        send_with_fds(&stream, text.as_bytes(), &raw).map_err(io_err)?;
        info!(
            listeners = fds.len(),
            "listening sockets sent, waiting for READY"
        );
        // The successor starts now: its start-up is bounded by the read timeout.
        let ready = read_line(&stream).map_err(io_err)?;
        if ready != "READY" {
            return Err(protocol(format!("expected READY, got {ready:?}")));
        }
        info!("successor ready");
        Ok(stream)
    })
    .await
}

/// Runs blocking socket work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HandoverError> + Send + 'static,
) -> Result<T, HandoverError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn set_timeouts(s: &UnixStream) -> io::Result<()> {
    let t = Some(Duration::from_secs(STEP_TIMEOUT_SECS));
    s.set_read_timeout(t)?;
    s.set_write_timeout(t)
}

/// Reads one `\n`-terminated line (without it); EOF before it is an error.
fn read_line(mut s: &UnixStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if s.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed the handover connection",
            ));
        }
        if byte[0] == b'\n' {
            return String::from_utf8(line)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "line is not utf-8"));
        }
        if line.len() >= MAX_MESSAGE_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        line.push(byte[0]);
    }
}

/// Sends `data` with `fds` attached (one `sendmsg`; the rest of `data`, if the kernel took
/// only part of it, follows without descriptors).
fn send_with_fds(s: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let cmsgs = if fds.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    let sent = sendmsg::<()>(
        s.as_raw_fd(),
        &[IoSlice::new(data)],
        &cmsgs,
        MsgFlags::empty(),
        None,
    )?;
    let mut w = s;
    w.write_all(&data[sent..])
}

/// Reads the listener list up to `END\n`, collecting every descriptor that comes with it.
fn receive_listeners(s: &UnixStream) -> io::Result<(String, Vec<OwnedFd>)> {
    let mut text = Vec::new();
    let mut fds = Vec::new();
    let mut buf = [0u8; 4096];
    while !text.ends_with(b"END\n") {
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_LISTENERS]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            s.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel has just installed `fd` in this process for this
                    // message (SCM_RIGHTS); nothing else refers to it, so we own it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "descriptors truncated",
            ));
        }
        let n = msg.bytes;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed the handover connection",
            ));
        }
        text.extend_from_slice(&buf[..n]);
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message too long",
            ));
        }
    }
    let text = String::from_utf8(text)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "message is not utf-8"))?;
    Ok((text, fds))
}

/// Pairs the addresses of `LISTENERS n / addr... / END` with the received descriptors.
fn parse_listeners(
    text: &str,
    fds: Vec<OwnedFd>,
) -> Result<HashMap<SocketAddr, std::net::TcpListener>, String> {
    let mut lines = text.lines();
    let n: usize = lines
        .next()
        .and_then(|l| l.strip_prefix("LISTENERS "))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("expected LISTENERS n, got {text:?}"))?;
    let addrs: Vec<SocketAddr> = lines
        .by_ref()
        .take(n)
        .map(|l| l.parse().map_err(|_| format!("invalid bind address {l:?}")))
        .collect::<Result<_, _>>()?;
    if addrs.len() != n || lines.next() != Some("END") || fds.len() != n {
        return Err(format!(
            "announced {n} listeners, got {} addresses and {} descriptors",
            addrs.len(),
            fds.len()
        ));
    }
    Ok(addrs
        .into_iter()
        .zip(fds)
        .map(|(a, fd)| (a, std::net::TcpListener::from(fd)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exchange of steps 2 and 3 over a socket pair: addresses and sockets arrive in
    /// order, and the received sockets accept the connections made to the sent ones.
    #[test]
    fn listeners_travel_with_their_addresses() {
        let (a, b) = UnixStream::pair().expect("pair");
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (x1, x2) = (
            l1.local_addr().expect("addr"),
            l2.local_addr().expect("addr"),
        );
        let text = format!("LISTENERS 2\n{x1}\n{x2}\nEND\n");
        send_with_fds(&a, text.as_bytes(), &[l1.as_raw_fd(), l2.as_raw_fd()]).expect("send");
        let (got, fds) = receive_listeners(&b).expect("receive");
        let map = parse_listeners(&got, fds).expect("parse");
        assert_eq!(map.len(), 2);
        drop((l1, l2));
        for (addr, l) in map {
            let _c = std::net::TcpStream::connect(addr).expect("still listening");
            l.accept().expect("accepted by the received socket");
        }
    }

    #[test]
    fn mismatched_counts_are_refused() {
        assert!(parse_listeners("LISTENERS 1\n127.0.0.1:1\nEND\n", Vec::new()).is_err());
        assert!(parse_listeners("LISTENERS 0\nEND\n", Vec::new()).is_ok());
        assert!(parse_listeners("HELLO\n", Vec::new()).is_err());
    }
}
