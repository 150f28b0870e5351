//! The node state the supervisor holds: service status, alarms, log rings and the VRRP view,
//! shared between the child tasks, the transaction logic and the
//! control socket.
//!
//! Owns the shapes that `status` reports (serialized as documented in `docs/control-api.md`).
//! Must not start processes or touch the store; it only records what others observed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;
use tracing::{info, warn};

/// Lines kept per service for `logs`.
pub const LOG_LINES: usize = 2000;
/// Longest log line kept, in bytes; longer lines are cut.
pub const LOG_LINE_BYTES: usize = 4096;
/// Child events buffered per subscriber (transaction waiters).
pub const EVENT_BUFFER: usize = 1024;
/// Most alarms held at once; a bound against a runaway producer.
pub const MAX_ALARMS: usize = 64;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where a service is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Not started (not configured on this node).
    Stopped,
    /// Spawned, not yet known to be serving.
    Starting,
    /// Running.
    Running,
    /// Exited; waiting for the backoff delay before the next start.
    Backoff,
    /// Being stopped on purpose.
    Stopping,
}

/// One child service as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// `proxy`, `vrrp` or `sync`.
    pub name: String,
    /// Life-cycle state.
    pub state: ServiceState,
    /// Process id while running.
    pub pid: Option<u32>,
    /// Restarts after a crash since the supervisor started (planned restarts not counted).
    pub restarts: u64,
    /// When `state` was entered, milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// How the last run ended (`exit status 2`, `signal 9 (SIGKILL)`), if it did.
    pub last_exit: Option<String>,
    /// Result of the last health check (`None`: not checked yet).
    pub healthy: Option<bool>,
    /// Restarting too often (see `child::Backoff`).
    pub flapping: bool,
}

/// How bad an alarm is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Service is impaired.
    Critical,
    /// Needs attention.
    Warning,
    /// For information (maintenance mode).
    Info,
}

/// A raised alarm; cleared by the condition going away, never by acknowledging.
#[derive(Debug, Clone, Serialize)]
pub struct Alarm {
    /// Stable identifier, e.g. `flapping:proxy`, `apply-failed`.
    pub id: String,
    /// How bad.
    pub severity: Severity,
    /// Raised at, milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// What happened and what to do, lowercase.
    pub message: String,
}

/// What a child process did; published to transaction waiters.
#[derive(Debug, Clone)]
pub enum ChildEvent {
    /// Spawned with this pid.
    Started {
        /// Service name.
        service: &'static str,
        /// Process id.
        pid: u32,
    },
    /// Exited.
    Exited {
        /// Service name.
        service: &'static str,
        /// Process id.
        pid: u32,
        /// How (`signal 9 (SIGKILL)`).
        how: String,
    },
    /// Wrote a line on stdout or stderr.
    Line {
        /// Service name.
        service: &'static str,
        /// The line.
        line: String,
    },
}

/// The VRRP roles as last read from the VRRP daemon's control socket.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VrrpView {
    /// Whether the daemon answered the last poll.
    pub available: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Instances as the daemon reports them (`name`, `vrid`, `state`, `vips`, ...).
    pub instances: Vec<Value>,
}

/// The shared node state.
#[derive(Debug)]
pub struct Shared {
    /// This node's name, if given.
    pub node: Option<String>,
    services: Mutex<BTreeMap<&'static str, ServiceStatus>>,
    alarms: Mutex<BTreeMap<String, Alarm>>,
    logs: Mutex<BTreeMap<&'static str, VecDeque<String>>>,
    vrrp: Mutex<VrrpView>,
    /// Every child event; transaction code subscribes before it signals a child.
    pub events: broadcast::Sender<ChildEvent>,
}

/// Locks `m`, recovering from a poisoned lock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Holders never panic while holding these locks (plain map updates); recover anyway.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Empty state for `node`.
    pub fn new(node: Option<String>) -> Shared {
        Shared {
            node,
            services: Mutex::default(),
            alarms: Mutex::default(),
            logs: Mutex::default(),
            vrrp: Mutex::new(VrrpView {
                available: false,
                reason: Some("not polled yet".into()),
                instances: Vec::new(),
            }),
            events: broadcast::channel(EVENT_BUFFER).0,
        }
    }

    /// Updates (or creates) the status of `service`.
    pub fn service(&self, service: &'static str, f: impl FnOnce(&mut ServiceStatus)) {
        let mut map = lock(&self.services);
        let entry = map.entry(service).or_insert_with(|| ServiceStatus {
            name: service.to_owned(),
            state: ServiceState::Stopped,
            pid: None,
            restarts: 0,
            since_ms: now_ms(),
            last_exit: None,
            healthy: None,
            flapping: false,
        });
        f(entry);
    }

    /// A copy of `service`'s status.
    pub fn service_status(&self, service: &str) -> Option<ServiceStatus> {
        lock(&self.services).get(service).cloned()
    }

    /// Every service's status, by name.
    pub fn services(&self) -> Vec<ServiceStatus> {
        lock(&self.services).values().cloned().collect()
    }

    /// Raises (or updates the message of) alarm `id`.
    pub fn raise(&self, id: &str, severity: Severity, message: String) {
        let mut alarms = lock(&self.alarms);
        if !alarms.contains_key(id) {
            if alarms.len() >= MAX_ALARMS {
                warn!(alarm = id, "alarm table full, alarm dropped");
                return;
            }
            warn!(alarm = id, ?severity, %message, "alarm raised");
        }
        let since_ms = alarms.get(id).map_or_else(now_ms, |a| a.since_ms);
        alarms.insert(
            id.to_owned(),
            Alarm {
                id: id.to_owned(),
                severity,
                since_ms,
                message,
            },
        );
    }

    /// Clears alarm `id` if raised.
    pub fn clear(&self, id: &str) {
        if lock(&self.alarms).remove(id).is_some() {
            info!(alarm = id, "alarm cleared");
        }
    }

    /// Raised alarms, most severe first.
    pub fn alarms(&self) -> Vec<Alarm> {
        let mut v: Vec<Alarm> = lock(&self.alarms).values().cloned().collect();
        v.sort_by_key(|a| (a.severity, a.since_ms));
        v
    }

    /// Appends a line to `service`'s log ring (the supervisor's own events use `supervisor`).
    pub fn log(&self, service: &'static str, line: &str) {
        let mut line = line.to_owned();
        if line.len() > LOG_LINE_BYTES {
            let mut cut = LOG_LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        let mut logs = lock(&self.logs);
        let ring = logs.entry(service).or_default();
        if ring.len() >= LOG_LINES {
            ring.pop_front();
        }
        ring.push_back(line);
    }

    /// The last `n` lines of `service` (all services when `None`, each prefixed by its name).
    pub fn log_tail(&self, service: Option<&str>, n: usize) -> Vec<String> {
        let logs = lock(&self.logs);
        let mut out: Vec<String> = match service {
            Some(s) => logs
                .get(s)
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default(),
            None => logs
                .iter()
                .flat_map(|(s, r)| r.iter().map(move |l| format!("{s}: {l}")))
                .collect(),
        };
        let skip = out.len().saturating_sub(n);
        out.drain(..skip);
        out
    }

    /// Replaces the VRRP view.
    pub fn set_vrrp(&self, view: VrrpView) {
        *lock(&self.vrrp) = view;
    }

    /// The VRRP view.
    pub fn vrrp(&self) -> VrrpView {
        lock(&self.vrrp).clone()
    }

    /// A supervisor event: traced, and kept in the supervisor's log ring (`logs supervisor`).
    pub fn event(&self, message: &str) {
        info!(event = message, "supervisor event");
        self.log("supervisor", message);
    }
}
