//! The split-brain guard: both nodes master of one VRRP instance while the LAN heartbeat is
//! lost, resolved over the sync link.
//!
//! Every runtime message from the peer (every 250 ms, `crates/sync`) carries its VRRP roles and
//! the instances it holds backup. With both roles at hand this node decides with
//! [`tandem_sync::guard::step_down`] (configured `cluster.nodes` priorities, ties by name):
//! the yielding node tells its VRRP daemon `{"cmd":"hold","instance":...,"ms":HOLD}`, so it
//! resigns and stays backup. It refreshes the hold on every peer message while the peer still
//! says it is master and this node hears no adverts from it (the both-master situation would
//! otherwise come back), and releases it as soon as adverts are heard again (the LAN works: the
//! protocol decides again) or the sync link goes down.
//!
//! **Never hold without a live peer.** A hold is only ever set or refreshed on a fresh message
//! from the peer saying it is master: holding on stale information, or after the sync link
//! went down, could leave *no* master at all (the peer may have died meanwhile), which is worse
//! than a double master for a moment. An unrefreshed hold also runs out by itself after
//! [`HOLD`] in the VRRP daemon, so a supervisor that dies mid-hold cannot pin the node backup.
//!
//! Alarm `split-brain` (critical) on both nodes: on the yielding one while it holds, on the
//! other while the peer reports holding; cleared (with an event) when the LAN heartbeat is back.
//! Must not run the VRRP protocol (the daemon's state machine does) nor speak the sync protocol.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tandem_store::Store;
use tandem_sync::guard::{NodeRoles, Role, step_down};
use tracing::{info, warn};

use crate::core::{Core, ask};
use crate::state::Severity;

/// How long one hold lasts in the VRRP daemon unless refreshed (4 peer messages).
pub const HOLD: Duration = Duration::from_millis(1000);
/// Adverts heard within this many advert intervals mean the LAN heartbeat works.
const HEARD_INTERVALS: u32 = 3;
/// The alarm id.
pub const ALARM: &str = "split-brain";

/// The guard's memory between peer messages.
#[derive(Debug, Default)]
pub struct GuardState {
    /// Instances this node holds backup.
    pub holding: BTreeSet<String>,
    /// What happened, for the alarm text.
    pub what: Option<String>,
    /// Instances the peer said it holds backup, in its last message.
    pub peer_holding: Vec<String>,
    /// When persistence tables were last exported (they go every second, roles every 250 ms).
    pub last_persistence: Option<Instant>,
}

/// One instance's state as the local VRRP daemon reports it.
fn local_roles(instances: &[Value]) -> Vec<Role> {
    instances
        .iter()
        .filter_map(|i| {
            Some(Role {
                instance: i.get("name")?.as_str()?.to_owned(),
                state: i.get("state")?.as_str()?.to_owned(),
            })
        })
        .collect()
}

impl Core {
    fn guard_state(&self) -> std::sync::MutexGuard<'_, GuardState> {
        self.split_brain.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Instances this node holds backup (exported to the peer).
    pub(crate) fn holding(&self) -> Vec<String> {
        self.guard_state().holding.iter().cloned().collect()
    }

    /// Whether the persistence tables are due in this runtime export (once a second).
    pub(crate) fn persistence_due(&self) -> bool {
        let mut st = self.guard_state();
        let due = st
            .last_persistence
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(950));
        if due {
            st.last_persistence = Some(Instant::now());
        }
        due
    }

    /// Runs the guard on one runtime message from the peer (sync link up by definition).
    pub(crate) async fn split_brain_check(&self, peer_state: &Value) {
        let _turn = self.split_brain_turn.lock().await;
        let (Some(node), Ok(current)) = (self.opts.node.clone(), self.store(Store::load_current))
        else {
            return;
        };
        let Some(cluster) = current.config.cluster.as_ref() else {
            return;
        };
        let Some(peer_name) = peer_state.get("node").and_then(Value::as_str) else {
            return;
        };
        let priority = |n: &str| {
            cluster
                .nodes
                .iter()
                .find(|(k, _)| k.to_string() == n)
                .map(|(_, v)| v.priority.get())
        };
        let (Some(my_prio), Some(peer_prio)) = (priority(&node), priority(peer_name)) else {
            return;
        };
        let view = self.shared.vrrp();
        if !view.available {
            // Our own roles are unknown: decide nothing, drop holds (the daemon restarts clean).
            self.release_all("the local vrrp daemon does not answer")
                .await;
            return;
        }
        let local = NodeRoles {
            node: node.clone(),
            priority: my_prio,
            roles: local_roles(&view.instances),
        };
        let peer_roles: Vec<Role> = peer_state
            .get("vrrp")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|r| {
                        Some(Role {
                            instance: r.get("instance")?.as_str()?.to_owned(),
                            state: r.get("state")?.as_str()?.to_owned(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let peer = NodeRoles {
            node: peer_name.to_owned(),
            priority: peer_prio,
            roles: peer_roles,
        };
        // Adverts from the peer heard recently: the LAN heartbeat works for that instance.
        let hearing = |inst: &str| {
            let window = current
                .config
                .vrrp
                .iter()
                .find(|v| v.name.as_str() == inst)
                .map_or(Duration::from_secs(1), |v| {
                    HEARD_INTERVALS * v.advert_interval.as_std()
                });
            view.instances
                .iter()
                .find(|i| i.get("name").and_then(Value::as_str) == Some(inst))
                .and_then(|i| i.get("last_advert_ms").and_then(Value::as_u64))
                .is_some_and(|ms| Duration::from_millis(ms) <= window)
        };
        let peer_master = |inst: &str| {
            peer.roles
                .iter()
                .any(|r| r.instance == inst && r.state == "master")
        };
        let holding: BTreeSet<String> = self.guard_state().holding.clone();
        let mut hold = Vec::new();
        let mut release = Vec::new();
        for inst in step_down(&local, &peer) {
            // Both master, and we yield: only when the heartbeat is really lost (a role change
            // in flight, e.g. a switchover, shows both master for a moment while adverts flow).
            if !hearing(&inst) {
                hold.push(inst);
            }
        }
        for inst in &holding {
            if hold.contains(inst) {
                continue;
            }
            if peer_master(inst) && !hearing(inst) {
                hold.push(inst.clone());
            } else {
                release.push(inst.clone());
            }
        }
        for inst in &hold {
            let req = json!({"cmd": "hold", "instance": inst, "ms": HOLD.as_millis() as u64});
            match ask(&self.opts.vrrp_socket, &req).await {
                Ok(v) if v.get("ok") == Some(&Value::Bool(true)) => {
                    let newly = self.guard_state().holding.insert(inst.clone());
                    if newly {
                        let what = format!(
                            "{node} and {peer_name} were both master of vrrp instance {inst} with no adverts between them (LAN heartbeat lost, both alive on the sync link); {node} (priority {my_prio}) holds backup, {peer_name} (priority {peer_prio}) keeps the VIPs"
                        );
                        warn!(instance = %inst, peer = %peer_name, "split brain: holding backup");
                        self.guard_state().what = Some(what.clone());
                        self.event(&format!("split brain: {what}"));
                    }
                }
                Ok(v) => warn!(instance = %inst, reply = %v, "vrrp daemon refused the hold"),
                Err(e) => warn!(instance = %inst, cause = %e, "cannot hold backup"),
            }
        }
        for inst in &release {
            self.release(inst, "adverts heard again or the peer is no longer master")
                .await;
        }
        // Alarm on both: here while holding, or while the peer says it holds.
        let peer_holding: Vec<String> = peer_state
            .get("holding")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let peer_newly_holding = {
            let mut st = self.guard_state();
            let newly = !peer_holding.is_empty() && st.peer_holding.is_empty();
            st.peer_holding = peer_holding.clone();
            newly
        };
        if peer_newly_holding {
            // The peer announced the VIPs when it became master; now that it gave them up,
            // announce them again so clients (ARP/ND caches) come back to this node.
            for inst in &peer_holding {
                let req = json!({"cmd": "announce", "instance": inst});
                match ask(&self.opts.vrrp_socket, &req).await {
                    Ok(v) => {
                        info!(instance = %inst, reply = %v, "split brain: the peer holds backup, VIPs re-announced")
                    }
                    Err(e) => warn!(instance = %inst, cause = %e, "cannot re-announce the VIPs"),
                }
            }
        }
        let (holding_now, what) = {
            let st = self.guard_state();
            (!st.holding.is_empty(), st.what.clone().unwrap_or_default())
        };
        if holding_now {
            self.shared.raise(ALARM, Severity::Critical, what);
        } else if !peer_holding.is_empty() {
            self.shared.raise(
                ALARM,
                Severity::Critical,
                format!(
                    "{node} and {peer_name} were both master of vrrp instance(s) {} with no adverts between them (LAN heartbeat lost, both alive on the sync link); {peer_name} (priority {peer_prio}) holds backup, {node} (priority {my_prio}) keeps the VIPs",
                    peer_holding.join(", ")
                ),
            );
        } else {
            self.clear_split_brain_alarm();
        }
    }

    fn clear_split_brain_alarm(&self) {
        if self.shared.alarms().iter().any(|a| a.id == ALARM) {
            self.shared.clear(ALARM);
            self.event("split brain resolved: the LAN heartbeat is back, no hold in force");
        }
    }

    async fn release(&self, inst: &str, why: &str) {
        // In maintenance the daemon's hold is maintenance's (`maintenance.rs`): keep it.
        if !self.shared.maintenance() {
            let req = json!({"cmd": "release", "instance": inst});
            match ask(&self.opts.vrrp_socket, &req).await {
                Ok(_) => {}
                // The hold runs out by itself in the daemon.
                Err(e) => warn!(instance = %inst, cause = %e, "cannot release the backup hold"),
            }
        }
        if self.guard_state().holding.remove(inst) {
            info!(instance = %inst, why, "split brain: hold released");
            self.event(&format!(
                "split brain: released the backup hold of {inst}: {why}"
            ));
        }
    }

    /// Drops every hold: the peer can no longer be confirmed alive (sync link down) or our
    /// own roles are unknown. Holding on would risk having no master at all.
    pub(crate) async fn release_all(&self, why: &str) {
        let _turn = self.split_brain_turn.lock().await;
        let holding = self.holding();
        for inst in &holding {
            self.release(inst, why).await;
        }
        let none_held = {
            let mut st = self.guard_state();
            st.peer_holding.clear();
            st.holding.is_empty()
        };
        if none_held {
            self.clear_split_brain_alarm();
        }
    }
}
