//! systemd notifications: READY, STATUS, STOPPING and the watchdog, when the supervisor runs
//! under systemd (`NOTIFY_SOCKET` set); without it every call is a no-op.
//!
//! Owns the only talk to systemd in Tandem (an architecture invariant).
//! Must not decide readiness: `run` calls [`ready`] once the current generation is applied.

use std::sync::Weak;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, info};

use crate::core::Core;

/// How often STATUS is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[NotifyState]) {
    if !enabled() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        debug!(cause = %e, "sd_notify failed");
    }
}

/// READY=1 with a status line.
pub fn ready(status: &str) {
    info!(status, systemd = enabled(), "supervisor ready");
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// STOPPING=1.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping services"),
    ]);
}

/// Pings the watchdog at half its interval and refreshes STATUS, while the core lives.
/// The ping is sent from the runtime that also serves the control socket and the child
/// tasks, so a wedged runtime stops the pings and systemd restarts the supervisor.
pub fn spawn(core: Weak<Core>) {
    if !enabled() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled();
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Some(core) = core.upgrade() else { return };
            let line = core.status_line();
            if watchdog.is_some() {
                send(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
            } else {
                send(&[NotifyState::Status(&line)]);
            }
        }
    });
}
