//! Maintenance mode (`maintenance on|off`): the node leaves the pair gracefully and stays out
//! until the operator ends it, across supervisor restarts and reboots.
//!
//! Owns the durable record `DIR/maintenance.json` (written atomically through the store's
//! [`Fs`]; read at start, before any service starts) and the VRRP hold that keeps the node
//! out: while maintenance is on, the VRRP daemon is told `{"cmd":"hold","ms":HOLD}` (a master
//! resigns with a priority-0 advert and removes its VIPs, a backup never takes over), at once
//! when maintenance is turned on, as soon as a (re)started daemon answers on its control
//! socket, and every [`REFRESH`] after, so the hold never runs out while the mode lasts.
//! `maintenance off` releases it. The split-brain guard never releases a hold while
//! maintenance is on (`splitbrain.rs`).
//! [`Maintenance`] is the mode's owner, held by the supervisor's core: the record, the alarm
//! `maintenance`, and the requests to the VRRP daemon (through [`Daemon`], a fake in tests).
//! Must not decide VRRP roles (the daemon's state machine does) nor run the proxy.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tandem_store::Fs;
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::ask::Daemon;
use crate::reply::{Failure, Reply, data};
use crate::state::{ChildEvent, Severity, Shared, lock, now_ms};

/// The record's file name in the data directory.
pub const FILE: &str = "maintenance.json";
/// How long one maintenance hold lasts in the VRRP daemon unless refreshed.
pub const HOLD: Duration = Duration::from_secs(5);
/// How often the hold is refreshed.
pub const REFRESH: Duration = Duration::from_millis(500);
/// How long a freshly started VRRP daemon is waited for to take the hold.
const START_WAIT: Duration = Duration::from_secs(3);

/// Maintenance mode as recorded in `DIR/maintenance.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Whether the node is in maintenance.
    pub on: bool,
    /// When it was turned on or off, milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// Who turned it on or off.
    pub by: String,
}

/// Why the record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// The file could not be read or written.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file does not hold a record.
    #[error("{path} is unreadable: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The record in data directory `dir`: `None` when maintenance was never turned on.
pub fn load(fs: &dyn Fs, dir: &Path) -> Result<Option<Record>, MaintenanceError> {
    let path = dir.join(FILE);
    let bytes = match fs.read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(MaintenanceError::Io {
                action: "read",
                path,
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| MaintenanceError::Corrupt {
            path,
            reason: e.to_string(),
        })
}

/// Writes `record` to data directory `dir` atomically and durably.
pub fn save(fs: &dyn Fs, dir: &Path, record: &Record) -> Result<(), MaintenanceError> {
    let path = dir.join(FILE);
    let mut bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
    bytes.push(b'\n');
    fs.write_atomic(&path, &bytes)
        .map_err(|source| MaintenanceError::Io {
            action: "write",
            path,
            source,
        })
}

/// Maintenance mode: the record as in force and the VRRP hold that goes with it.
pub struct Maintenance {
    fs: Box<dyn Fs>,
    dir: PathBuf,
    record: Mutex<Option<Record>>,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance")
            .field("dir", &self.dir)
            .field("record", &self.record())
            .finish()
    }
}

impl Maintenance {
    /// Maintenance mode recorded in data directory `dir` on `fs`; off until [`Maintenance::load`].
    pub fn new(fs: Box<dyn Fs>, dir: PathBuf) -> Maintenance {
        Maintenance {
            fs,
            dir,
            record: Mutex::new(None),
        }
    }

    /// Whether maintenance mode is on.
    pub fn on(&self) -> bool {
        lock(&self.record).is_some()
    }

    /// Since when and by whom maintenance mode is on, if it is.
    pub fn record(&self) -> Option<Record> {
        lock(&self.record).clone()
    }

    /// Turns maintenance mode on (`Some`, with its info alarm) or off.
    fn set_mode(&self, shared: &Shared, record: Option<Record>) {
        match &record {
            Some(r) => shared.raise(
                "maintenance",
                Severity::Info,
                format!(
                    "node is in maintenance mode (set by {}): it holds VRRP backup and takes no VIP, also across restarts; `maintenance off` ends it",
                    r.by
                ),
            ),
            None => shared.clear("maintenance"),
        }
        *lock(&self.record) = record;
    }

    /// At start, before any service: maintenance mode as recorded. An unreadable record counts
    /// as on (the operator asked for it; `maintenance off` rewrites it), with an alarm.
    pub fn load(&self, shared: &Shared) {
        match load(self.fs.as_ref(), &self.dir) {
            Ok(Some(r)) if r.on => {
                shared.event(&format!(
                    "maintenance mode is on (set by {} at {} ms): holding VRRP backup",
                    r.by, r.since_ms
                ));
                self.set_mode(shared, Some(r));
            }
            Ok(_) => {}
            Err(e) => {
                warn!(cause = %e, "cannot read the maintenance record; staying in maintenance");
                shared.raise(
                    "maintenance-record",
                    Severity::Warning,
                    format!("{e}; the node stays in maintenance mode until `maintenance off`"),
                );
                self.set_mode(
                    shared,
                    Some(Record {
                        on: true,
                        since_ms: now_ms(),
                        by: "unknown (unreadable record)".into(),
                    }),
                );
            }
        }
    }

    /// `maintenance on|off`: recorded durably first, then the VRRP hold is taken (the VIPs go
    /// to the peer) or released. `vrrp_running`: whether a VRRP daemon runs on this node;
    /// `guarded`: the instances the split-brain guard holds (asked when releasing).
    pub async fn set(
        &self,
        on: bool,
        author: &str,
        shared: &Shared,
        vrrp: &impl Daemon,
        vrrp_running: bool,
        guarded: impl FnOnce() -> Vec<String>,
    ) -> Reply {
        let record = Record {
            on,
            since_ms: now_ms(),
            by: author.to_owned(),
        };
        save(self.fs.as_ref(), &self.dir, &record).map_err(|e| {
            Failure::new(
                format!("maintenance mode was not changed: {e}"),
                "check the data directory (disk full or read-only?) and `logs supervisor`",
            )
        })?;
        shared.clear("maintenance-record");
        self.set_mode(shared, on.then(|| record.clone()));
        shared.event(&format!(
            "maintenance {} by {author}",
            if on { "on" } else { "off" }
        ));
        let vrrp = if !vrrp_running {
            json!({"skipped": "no vrrp daemon runs on this node"})
        } else if on {
            match hold(vrrp).await {
                Ok(v) => v,
                Err(e) => json!({"skipped": e}),
            }
        } else {
            let guarded = guarded();
            release(vrrp, &shared.vrrp().instances, &guarded).await
        };
        data(tandem_control::supervisor::MaintenanceReply {
            maintenance: Some(on),
            since_ms: Some(record.since_ms),
            by: Some(author.to_owned()),
            switchover: vrrp,
        })
    }

    /// Keeps the maintenance hold while maintenance is on: on every start of the VRRP daemon
    /// (as soon as its control socket answers) and every [`REFRESH`]. `vrrp_running` says
    /// whether a VRRP daemon runs on this node, `None` once the supervisor is gone (the task
    /// ends).
    pub fn spawn_guard<D: Daemon + 'static>(
        self: &Arc<Self>,
        mut events: broadcast::Receiver<ChildEvent>,
        vrrp: D,
        vrrp_running: impl Fn() -> Option<bool> + Send + 'static,
    ) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let started = tokio::select! {
                    _ = tick.tick() => false,
                    ev = events.recv() => match ev {
                        Ok(ChildEvent::Started { service: "vrrp", .. }) => true,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return,
                    },
                };
                let Some(running) = vrrp_running() else {
                    return;
                };
                let Some(mode) = weak.upgrade() else { return };
                if !mode.on() || !running {
                    continue;
                }
                if started {
                    // A new daemon starts backup and would take over after its master-down
                    // interval: hold it as soon as it answers.
                    let t0 = Instant::now();
                    loop {
                        match hold(&vrrp).await {
                            Ok(_) => {
                                info!(
                                    after_ms = t0.elapsed().as_millis() as u64,
                                    "maintenance: the started vrrp daemon holds backup"
                                );
                                break;
                            }
                            Err(e) if t0.elapsed() > START_WAIT => {
                                warn!(cause = %e, "maintenance: the started vrrp daemon did not take the hold");
                                break;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                } else if let Err(e) = hold(&vrrp).await {
                    warn!(cause = %e, "maintenance: cannot refresh the vrrp hold");
                }
            }
        });
    }
}

/// Tells the VRRP daemon to hold backup on every instance for [`HOLD`].
async fn hold(vrrp: &impl Daemon) -> Result<Value, String> {
    let req = tandem_control::vrrp::Request::Hold {
        instance: None,
        ms: Some(HOLD.as_millis() as u64),
    }
    .to_value();
    let v = vrrp.ask(&req).await?;
    let skipped = v
        .get("skipped")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    if v.get("ok") == Some(&Value::Bool(true)) && !skipped {
        Ok(v)
    } else {
        Err(format!("the vrrp daemon refused the hold: {v}"))
    }
}

/// The requests that end the maintenance hold, except on instances the split-brain guard
/// holds (`guarded`): one `release` of everything when it holds none, else one per other
/// instance of `instances` (as the VRRP daemon reports them).
fn release_requests(instances: &[Value], guarded: &[String]) -> Vec<Value> {
    if guarded.is_empty() {
        return vec![tandem_control::vrrp::Request::Release { instance: None }.to_value()];
    }
    instances
        .iter()
        .filter_map(|i| i.get("name").and_then(Value::as_str).map(str::to_owned))
        .filter(|n| !guarded.contains(n))
        .map(|i| tandem_control::vrrp::Request::Release { instance: Some(i) }.to_value())
        .collect()
}

/// Ends the maintenance hold, except on instances the split-brain guard holds.
async fn release(vrrp: &impl Daemon, instances: &[Value], guarded: &[String]) -> Value {
    let mut replies = Vec::new();
    for req in release_requests(instances, guarded) {
        match vrrp.ask(&req).await {
            Ok(v) => replies.push(v),
            Err(e) => {
                warn!(cause = %e, "cannot release the maintenance hold; it ends by itself");
                replies.push(json!({"skipped": e}));
            }
        }
    }
    json!({"released": replies})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ask::FakeDaemon as FakeVrrp;
    use tandem_store::MemFs;

    #[test]
    fn the_record_survives_a_restart_and_an_absent_one_is_off() {
        let fs = MemFs::new();
        let dir = Path::new("/data");
        assert_eq!(load(&fs, dir).unwrap(), None);
        let r = Record {
            on: true,
            since_ms: 42,
            by: "alice".into(),
        };
        save(&fs, dir, &r).unwrap();
        assert_eq!(load(&fs, dir).unwrap(), Some(r));
        fs.write_atomic(&dir.join(FILE), b"{").unwrap();
        assert!(matches!(
            load(&fs, dir),
            Err(MaintenanceError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn on_holds_backup_and_off_releases_all_but_the_guarded_instances() {
        let fs = MemFs::new();
        let dir = PathBuf::from("/data");
        let mode = Maintenance::new(Box::new(fs.clone()), dir.clone());
        let shared = Shared::new(Some("lb1".into()));
        let vrrp = FakeVrrp::default();
        let r = mode
            .set(true, "alice", &shared, &vrrp, true, Vec::new)
            .await
            .expect("on");
        assert_eq!(r["maintenance"], true);
        assert!(mode.on());
        assert!(shared.alarms().iter().any(|a| a.id == "maintenance"));
        assert_eq!(vrrp.take(), [json!({"cmd": "hold", "ms": 5000})]);
        // Recorded: a new supervisor starts in maintenance.
        let again = Maintenance::new(Box::new(fs.clone()), dir.clone());
        again.load(&shared);
        assert_eq!(again.record().map(|r| r.by), Some("alice".into()));

        shared.set_vrrp(crate::state::VrrpView {
            available: true,
            reason: None,
            instances: vec![json!({"name": "www"}), json!({"name": "db"})],
        });
        mode.set(false, "bob", &shared, &vrrp, true, || vec!["db".into()])
            .await
            .expect("off");
        assert!(!mode.on());
        assert!(!shared.alarms().iter().any(|a| a.id == "maintenance"));
        assert_eq!(vrrp.take(), [json!({"cmd": "release", "instance": "www"})]);
        assert_eq!(
            release_requests(&[json!({"name": "www"})], &[]),
            [json!({"cmd": "release"})]
        );
        // Without a vrrp daemon nothing is asked.
        mode.set(true, "alice", &shared, &vrrp, false, Vec::new)
            .await
            .expect("on");
        assert!(vrrp.take().is_empty());
    }

    #[test]
    fn an_unreadable_record_counts_as_on() {
        let fs = MemFs::new();
        fs.write_atomic(Path::new("/data/maintenance.json"), b"{")
            .unwrap();
        let mode = Maintenance::new(Box::new(fs), PathBuf::from("/data"));
        let shared = Shared::new(None);
        mode.load(&shared);
        assert!(mode.on());
        assert!(shared.alarms().iter().any(|a| a.id == "maintenance-record"));
    }
}
