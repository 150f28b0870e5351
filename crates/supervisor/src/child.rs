//! Child processes: start one service, capture its output, restart it when it dies, stop it.
//!
//! Owns the per-service task ([`spawn`]), the restart policy ([`Backoff`], pure, tested with
//! virtual instants) and the process-group handling (each child leads its own group, so a
//! stop reaches everything it started; a child gets SIGTERM when the supervisor dies).
//! Must not interpret what a child prints beyond forwarding it (the transaction code reads
//! the proxy's reload acknowledgements from [`ChildEvent::Line`]).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument, error, info, info_span, warn};

use crate::state::{ChildEvent, ServiceState, Severity, Shared, now_ms};

/// Delay of the second restart in a row; later ones double up to [`BACKOFF_CAP`].
/// The first restart after a stable run is immediate (a killed proxy is back in well under 1 s).
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest delay between restarts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// A run at least this long resets the backoff and clears the flapping alarm.
pub const STABLE_RUN: Duration = Duration::from_secs(10);
/// Restarts within [`FLAP_WINDOW`] that raise the flapping alarm.
pub const FLAP_RESTARTS: usize = 5;
/// Window of the flapping count.
pub const FLAP_WINDOW: Duration = Duration::from_secs(60);
/// How long a stop waits after SIGTERM before SIGKILL (the proxy drains for 10 s).
pub const STOP_GRACE: Duration = Duration::from_secs(12);
/// Commands queued per child task.
const COMMAND_QUEUE: usize = 16;

/// How to start a service.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Service name (`proxy`, `vrrp`, `sync`).
    pub service: &'static str,
    /// Program (the `tandem` multi-call binary).
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

/// What the owner can ask of a child task.
#[derive(Debug)]
pub enum ChildCmd {
    /// Send a signal to the process; answers its pid, or an error when it is not running.
    Signal(Signal, oneshot::Sender<Result<u32, String>>),
    /// Stop gracefully and start again at once (a planned restart, not counted).
    Restart(oneshot::Sender<()>),
    /// Stop gracefully and end the task.
    Stop(oneshot::Sender<()>),
}

/// The restart policy, pure: the caller supplies instants.
#[derive(Debug, Default)]
pub struct Backoff {
    /// Crashes since the last stable run.
    consecutive: u32,
    /// Crash instants within the flapping window (at most [`FLAP_RESTARTS`] kept).
    recent: VecDeque<Instant>,
}

impl Backoff {
    /// Records a crash at `now` after a run of `ran`; returns the delay before restarting
    /// and whether the service is flapping.
    pub fn on_exit(&mut self, now: Instant, ran: Duration) -> (Duration, bool) {
        if ran >= STABLE_RUN {
            self.consecutive = 0;
        }
        let delay = match self.consecutive {
            0 => Duration::ZERO,
            n => BACKOFF_BASE
                .saturating_mul(1 << (n - 1).min(16))
                .min(BACKOFF_CAP),
        };
        self.consecutive = self.consecutive.saturating_add(1);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > FLAP_WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() == FLAP_RESTARTS {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        (delay, self.recent.len() >= FLAP_RESTARTS)
    }

    /// Records that the current run became stable.
    pub fn stable(&mut self) {
        self.consecutive = 0;
        self.recent.clear();
    }
}

/// A running child task.
#[derive(Debug)]
pub struct ChildHandle {
    /// Commands to the task.
    pub tx: mpsc::Sender<ChildCmd>,
    /// The task; ends after `Stop`.
    pub task: JoinHandle<()>,
}

/// Starts the task that runs `spec` and keeps it running.
pub fn spawn(spec: ChildSpec, shared: Arc<Shared>) -> ChildHandle {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let span = info_span!("child", service = spec.service);
    let task = tokio::spawn(supervise(spec, rx, shared).instrument(span));
    ChildHandle { tx, task }
}

/// What ended one run of the child.
enum RunEnd {
    /// It exited on its own.
    Crashed,
    /// A restart was asked for.
    Restart(oneshot::Sender<()>),
    /// A stop was asked for.
    Stop(oneshot::Sender<()>),
}

async fn supervise(spec: ChildSpec, mut rx: mpsc::Receiver<ChildCmd>, shared: Arc<Shared>) {
    let name = spec.service;
    let mut backoff = Backoff::default();
    loop {
        shared.service(name, |s| {
            s.state = ServiceState::Starting;
            s.pid = None;
            s.since_ms = now_ms();
        });
        let started = Instant::now();
        let end = match start(&spec, &shared) {
            Ok(child) => run_once(child, &spec, &mut rx, &shared, &mut backoff).await,
            Err(e) => {
                error!(cause = %e, program = %spec.program.display(), "failed to start service");
                shared.log(name, &format!("supervisor: failed to start: {e}"));
                shared.service(name, |s| {
                    s.last_exit = Some(format!("failed to start: {e}"))
                });
                RunEnd::Crashed
            }
        };
        match end {
            RunEnd::Stop(done) => {
                shared.service(name, |s| {
                    s.state = ServiceState::Stopped;
                    s.pid = None;
                    s.since_ms = now_ms();
                });
                let _ = done.send(());
                return;
            }
            RunEnd::Restart(done) => {
                let _ = done.send(());
                continue;
            }
            RunEnd::Crashed => {}
        }
        let (delay, flapping) = backoff.on_exit(Instant::now(), started.elapsed());
        shared.service(name, |s| {
            s.restarts += 1;
            s.state = ServiceState::Backoff;
            s.pid = None;
            s.since_ms = now_ms();
            s.flapping = flapping;
            s.healthy = Some(false);
        });
        if flapping {
            shared.raise(
                &format!("flapping:{name}"),
                Severity::Critical,
                format!(
                    "service {name} is flapping: {FLAP_RESTARTS} restarts within {}s; see `logs {name}`",
                    FLAP_WINDOW.as_secs()
                ),
            );
        }
        info!(
            delay_ms = delay.as_millis() as u64,
            flapping, "restarting service"
        );
        // Wait out the delay, still answering commands.
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(ChildCmd::Signal(_, reply)) => {
                        let _ = reply.send(Err(format!("{name} is not running (restarting)")));
                    }
                    Some(ChildCmd::Restart(done)) => {
                        let _ = done.send(());
                        break;
                    }
                    Some(ChildCmd::Stop(done)) => {
                        shared.service(name, |s| s.state = ServiceState::Stopped);
                        let _ = done.send(());
                        return;
                    }
                },
            }
        }
    }
}

fn start(spec: &ChildSpec, shared: &Arc<Shared>) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a stop signals the whole group, and a Ctrl-C on the
        // supervisor's terminal does not reach the children directly.
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec; it only calls prctl(2),
    // which is async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            // The child gets SIGTERM if the supervisor dies, so no orphan keeps a port.
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id().unwrap_or(0);
    info!(pid, "service started");
    shared.service(spec.service, |s| {
        s.pid = Some(pid);
        s.state = ServiceState::Running;
        s.since_ms = now_ms();
    });
    let _ = shared.events.send(ChildEvent::Started {
        service: spec.service,
        pid,
    });
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(out, spec.service, Arc::clone(shared)));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(err, spec.service, Arc::clone(shared)));
    }
    Ok(child)
}

/// Copies a child's output lines into its log ring and the event feed.
async fn pump(stream: impl AsyncRead + Unpin, service: &'static str, shared: Arc<Shared>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        shared.log(service, &line);
        let _ = shared.events.send(ChildEvent::Line { service, line });
    }
}

async fn run_once(
    mut child: tokio::process::Child,
    spec: &ChildSpec,
    rx: &mut mpsc::Receiver<ChildCmd>,
    shared: &Arc<Shared>,
    backoff: &mut Backoff,
) -> RunEnd {
    let name = spec.service;
    let pid = child.id().unwrap_or(0);
    let stable = tokio::time::sleep(STABLE_RUN);
    tokio::pin!(stable);
    let mut is_stable = false;
    loop {
        tokio::select! {
            status = child.wait() => {
                let how = match status {
                    Ok(s) => describe(s),
                    Err(e) => format!("wait failed: {e}"),
                };
                warn!(pid, how = %how, "service exited");
                shared.log(name, &format!("supervisor: {name} (pid {pid}) exited: {how}"));
                shared.service(name, |s| s.last_exit = Some(how.clone()));
                let _ = shared.events.send(ChildEvent::Exited { service: name, pid, how });
                return RunEnd::Crashed;
            }
            () = &mut stable, if !is_stable => {
                is_stable = true;
                backoff.stable();
                shared.service(name, |s| s.flapping = false);
                shared.clear(&format!("flapping:{name}"));
            }
            cmd = rx.recv() => match cmd {
                Some(ChildCmd::Signal(sig, reply)) => {
                    let r = kill(Pid::from_raw(pid as i32), sig)
                        .map(|()| pid)
                        .map_err(|e| format!("failed to send {sig} to {name} (pid {pid}): {e}"));
                    let _ = reply.send(r);
                }
                Some(ChildCmd::Restart(done)) => {
                    stop(&mut child, pid, name, shared).await;
                    return RunEnd::Restart(done);
                }
                Some(ChildCmd::Stop(done)) => {
                    stop(&mut child, pid, name, shared).await;
                    return RunEnd::Stop(done);
                }
                None => {
                    stop(&mut child, pid, name, shared).await;
                    let (tx, _) = oneshot::channel();
                    return RunEnd::Stop(tx);
                }
            },
        }
    }
}

/// SIGTERM to the child's process group, then SIGKILL after [`STOP_GRACE`].
async fn stop(child: &mut tokio::process::Child, pid: u32, name: &'static str, shared: &Shared) {
    shared.service(name, |s| s.state = ServiceState::Stopping);
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(_) => info!(pid, "service stopped"),
        Err(_) => {
            warn!(pid, "service did not stop in time, killing it");
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }
    let _ = shared.events.send(ChildEvent::Exited {
        service: name,
        pid,
        how: "stopped".into(),
    });
}

/// `exit status 2`, `signal 9 (SIGKILL)`.
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("signal {sig} ({s})"),
            Err(_) => format!("signal {sig}"),
        },
        _ => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_restart_is_immediate_then_exponential_with_a_cap() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        let delays: Vec<u128> = (0..8)
            .map(|i| {
                b.on_exit(t0 + Duration::from_secs(30 * i), Duration::from_millis(50))
                    .0
                    .as_millis()
            })
            .collect();
        assert_eq!(delays, vec![0, 100, 200, 400, 800, 1600, 3200, 5000]);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        b.on_exit(t0, Duration::from_millis(1));
        b.on_exit(t0, Duration::from_millis(1));
        let (d, _) = b.on_exit(t0 + Duration::from_secs(100), STABLE_RUN);
        assert_eq!(d, Duration::ZERO);
    }

    #[test]
    fn five_restarts_in_a_minute_is_flapping_and_spread_out_is_not() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        let flags: Vec<bool> = (0..6)
            .map(|i| {
                b.on_exit(t0 + Duration::from_secs(i), Duration::from_millis(1))
                    .1
            })
            .collect();
        assert_eq!(flags, vec![false, false, false, false, true, true]);
        let mut b = Backoff::default();
        let spread = (0..10).any(|i| {
            b.on_exit(t0 + Duration::from_secs(20 * i), Duration::from_millis(1))
                .1
        });
        assert!(!spread);
    }
}
