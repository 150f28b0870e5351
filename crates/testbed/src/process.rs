//! A process running inside a testbed host: [`Process`].
//!
//! Owns the handle returned by `Host::spawn*`: signalling the process group, bounded waits, and
//! reading the captured output. It does not create processes (the host does) and does not kill
//! stragglers that left the group: the testbed kills everything left in its namespaces at drop.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// How often bounded waits poll.
const POLL: Duration = Duration::from_millis(10);

/// How long `Drop` waits for a SIGKILLed process group leader to be reaped.
const DROP_REAP_WAIT: Duration = Duration::from_secs(5);

/// A process started inside a host, leader of its own process group.
///
/// Dropping it SIGKILLs the whole group (unless the leader was already reaped, when the group id
/// may have been reused) and reaps the leader, waiting at most a few seconds.
/// Processes that left the group (`setsid`, daemons) are not reached by that, but they are still
/// in the host's namespace and are killed when the `Testbed` drops.
#[derive(Debug)]
pub struct Process {
    child: Child,
    host: String,
    program: String,
    stdout: Option<PathBuf>,
    stderr: Option<PathBuf>,
    status: Option<ExitStatus>,
}

impl Process {
    pub(crate) fn new(
        child: Child,
        host: &str,
        program: String,
        stdout: Option<PathBuf>,
        stderr: Option<PathBuf>,
    ) -> Self {
        Self {
            child,
            host: host.to_owned(),
            program,
            stdout,
            stderr,
            status: None,
        }
    }

    /// Pid of the process, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The underlying child, e.g. to take piped stdout/stderr after `Host::spawn_piped`.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `signal` to the whole process group. A no-op once the leader was reaped.
    pub fn signal(&mut self, signal: Signal) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        let pgid = self.pgid();
        tracing::debug!(host = %self.host, program = %self.program, pgid, %signal, "signal process group");
        match killpg(Pid::from_raw(pgid), signal) {
            // ESRCH: the whole group is gone already.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(source) => Err(Error::Signal {
                signal,
                pgid,
                host: self.host.clone(),
                source,
            }),
        }
    }

    /// SIGKILLs the process group and waits (at most `timeout`) for the leader to exit.
    pub fn kill(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal(Signal::SIGKILL)?;
        self.wait_timeout(timeout)
    }

    /// Returns the exit status if the leader has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().map_err(|source| Error::Io {
                action: "wait for",
                path: PathBuf::from(format!("/proc/{}", self.child.id())),
                source,
            })?;
        }
        Ok(self.status)
    }

    /// Waits at most `timeout` for the leader to exit; [`Error::Timeout`] if it has not.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "{} (pid {}) on host {} to exit",
                        self.program,
                        self.pid(),
                        self.host
                    ),
                    after: timeout,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// File holding the captured stdout (`None` when spawned with `spawn_piped`).
    pub fn stdout_path(&self) -> Option<&Path> {
        self.stdout.as_deref()
    }

    /// File holding the captured stderr (`None` when spawned with `spawn_piped`).
    pub fn stderr_path(&self) -> Option<&Path> {
        self.stderr.as_deref()
    }

    /// Everything captured on stdout so far (empty when piped).
    pub fn stdout(&self) -> Result<String> {
        read_lossy(self.stdout.as_deref())
    }

    /// Everything captured on stderr so far (empty when piped).
    pub fn stderr(&self) -> Result<String> {
        read_lossy(self.stderr.as_deref())
    }

    /// Waits at most `timeout` until captured stdout or stderr contains `needle`.
    ///
    /// Fails early if the process exits without printing it.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.try_wait()?.is_some();
            if self.stdout()?.contains(needle) || self.stderr()?.contains(needle) {
                return Ok(());
            }
            if exited || Instant::now() >= deadline {
                let why = if exited { "exited" } else { "still running" };
                return Err(Error::Timeout {
                    what: format!(
                        "{needle:?} in the output of {} on host {} ({why}; stderr: {})",
                        self.program,
                        self.host,
                        self.stderr()?.trim()
                    ),
                    after: timeout,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    fn pgid(&self) -> i32 {
        // Pids fit in i32 on Linux (pid_max is at most 2^22).
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }
}

fn read_lossy(path: Option<&Path>) -> Result<String> {
    let Some(path) = path else {
        return Ok(String::new());
    };
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|source| Error::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Err(e) = self.kill(DROP_REAP_WAIT) {
            tracing::warn!(host = %self.host, program = %self.program, cause = %e, "failed to kill process on drop");
        }
    }
}
