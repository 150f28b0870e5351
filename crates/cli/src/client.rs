//! The supervisor's control socket, client side: one JSON request line, one JSON reply line.
//!
//! Owns the connection, its timeouts and the connection error message (which says what to do).
//! Every request gets a fresh connection (the supervisor closes one that stays idle for a few
//! seconds, so a `config edit` session or a `pair` prompt cannot hold it).
//! Must not render anything (`render`) nor know commands (`main`).

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use serde_json::Value;

/// How long a reply may take: a commit applies and checks (proxy ack up to 10 s, listener
/// check up to 3 s) and may then restore the previous generation, which takes as long again.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// The supervisor's control socket: connected once to check it is there, then one
/// connection per request.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    /// The connection made by [`Client::connect`], used by the first request if it comes
    /// soon enough (a `config load http://...` downloads first, longer than the supervisor
    /// keeps a silent connection).
    first: Option<(Instant, BufReader<UnixStream>)>,
}

/// How long the connection made by [`Client::connect`] is used for the first request; the
/// supervisor closes one that stays silent for 5 s.
const FIRST_REUSE: Duration = Duration::from_secs(1);

fn open(path: &Path) -> anyhow::Result<BufReader<UnixStream>> {
    let stream = UnixStream::connect(path).map_err(|e| {
        anyhow!(
            "cannot reach the supervisor at {}: {e}; is it running? (`systemctl status tandem-supervisor`, or pass --socket PATH)",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
    Ok(BufReader::new(stream))
}

impl Client {
    /// Connects to the control socket at `path`.
    pub fn connect(path: &Path) -> anyhow::Result<Client> {
        Ok(Client {
            path: path.to_path_buf(),
            first: Some((Instant::now(), open(path)?)),
        })
    }

    /// Sends `request` (a `tandem_control::supervisor::Request` or `Envelope`) and returns
    /// the reply object (with `ok`).
    pub fn call<R: serde::Serialize + ?Sized>(&mut self, request: &R) -> anyhow::Result<Value> {
        let mut reader = match self.first.take() {
            Some((at, r)) if at.elapsed() < FIRST_REUSE => r,
            _ => open(&self.path)?,
        };
        let line = tandem_control::to_line(request);
        let sent = reader.get_mut().write_all(&line);
        let mut answer = String::new();
        let read = reader.read_line(&mut answer);
        // A refused connection (permission, too many clients) is answered and closed at
        // once, possibly before the request was written: its reply is what counts.
        if let Err(e) = sent
            && !matches!(read, Ok(n) if n > 0)
        {
            return Err(
                anyhow::Error::new(e).context(format!("failed to send to {}", self.path.display()))
            );
        }
        let n = read
            .with_context(|| format!("no answer from the supervisor at {}", self.path.display()))?;
        if n == 0 {
            return Err(anyhow!(
                "the supervisor at {} closed the connection; see `logs supervisor` or the journal",
                self.path.display()
            ));
        }
        serde_json::from_str(&answer)
            .with_context(|| format!("malformed reply from {}", self.path.display()))
    }
}
