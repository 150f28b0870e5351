//! The supervisor's control socket, client side: one JSON request line, one JSON reply line.
//!
//! Owns the connection, its timeouts and the connection error message (which says what to do).
//! Must not render anything (`render`) nor know commands (`main`).

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use serde_json::Value;

/// How long a reply may take: a commit applies and checks (proxy ack up to 10 s, listener
/// check up to 3 s) and may then restore the previous generation, which takes as long again.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// A connection to the supervisor.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the control socket at `path`.
    pub fn connect(path: &Path) -> anyhow::Result<Client> {
        let stream = UnixStream::connect(path).map_err(|e| {
            anyhow!(
                "cannot reach the supervisor at {}: {e}; is it running? (`systemctl status tandem-supervisor`, or pass --socket PATH)",
                path.display()
            )
        })?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Client {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
        })
    }

    /// Sends `request` and returns the reply object (with `ok`).
    pub fn call(&mut self, request: &Value) -> anyhow::Result<Value> {
        let mut line = request.to_string();
        line.push('\n');
        self.reader
            .get_mut()
            .write_all(line.as_bytes())
            .with_context(|| format!("failed to send to {}", self.path.display()))?;
        let mut answer = String::new();
        let n = self
            .reader
            .read_line(&mut answer)
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
