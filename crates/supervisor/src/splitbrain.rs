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
//! [`SplitBrain`] is the guard's owner, held by the supervisor's core: its memory between peer
//! messages, the decision ([`plan`], pure) and the requests to the VRRP daemon (through
//! [`Daemon`], a fake in tests).
//! Must not run the VRRP protocol (the daemon's state machine does) nor speak the sync protocol.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
#[cfg(test)]
use serde_json::json;
use tandem_store::Generation;
use tandem_sync::guard::{NodeRoles, Role, step_down};
use tracing::{info, warn};

use crate::ask::Daemon;
use crate::maintenance::Maintenance;
use crate::state::{Severity, Shared, lock};

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
}

/// What the guard acts through: this node's name, the node state (VRRP view, alarms, events),
/// the VRRP daemon, and maintenance mode (whose hold the guard never releases).
pub struct Env<'a, D> {
    /// This node's name (`--node`), if any.
    pub node: Option<&'a str>,
    /// The node state.
    pub shared: &'a Shared,
    /// The VRRP daemon's control socket.
    pub vrrp: &'a D,
    /// Maintenance mode.
    pub maintenance: &'a Maintenance,
}

/// The split-brain guard.
#[derive(Debug, Default)]
pub struct SplitBrain {
    state: Mutex<GuardState>,
    /// Serializes checks (runtime messages are imported concurrently).
    turn: tokio::sync::Mutex<()>,
}

/// The roles in `items` (objects naming the instance under `key`, with a `state`).
fn roles_of(items: &[Value], key: &str) -> Vec<Role> {
    items
        .iter()
        .filter_map(|i| {
            Some(Role {
                instance: i.get(key)?.as_str()?.to_owned(),
                state: i.get("state")?.as_str()?.to_owned(),
            })
        })
        .collect()
}

/// Each instance's state as the local VRRP daemon reports it (`[{name, state}]`).
fn local_roles(instances: &[Value]) -> Vec<Role> {
    roles_of(instances, "name")
}

/// The peer's roles from its runtime message (`vrrp`: `[{instance, state}]`).
fn peer_roles(peer_state: &Value) -> Vec<Role> {
    peer_state
        .get("vrrp")
        .and_then(Value::as_array)
        .map(|a| roles_of(a, "instance"))
        .unwrap_or_default()
}

/// The instances the peer says it holds backup (`holding`).
fn peer_holding(peer_state: &Value) -> Vec<String> {
    peer_state
        .get("holding")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The decision on one peer message: the instances to hold (set or refresh) and those to
/// release. `holding`: what this node holds now; `hearing(i)`: adverts from the peer heard
/// recently on instance `i` (the LAN heartbeat works there).
pub fn plan(
    local: &NodeRoles,
    peer: &NodeRoles,
    holding: &BTreeSet<String>,
    hearing: impl Fn(&str) -> bool,
) -> (Vec<String>, Vec<String>) {
    let peer_master = |inst: &str| {
        peer.roles
            .iter()
            .any(|r| r.instance == inst && r.state == "master")
    };
    let mut hold = Vec::new();
    let mut release = Vec::new();
    for inst in step_down(local, peer) {
        // Both master, and we yield: only when the heartbeat is really lost (a role change
        // in flight, e.g. a switchover, shows both master for a moment while adverts flow).
        if !hearing(&inst) {
            hold.push(inst);
        }
    }
    for inst in holding {
        if hold.contains(inst) {
            continue;
        }
        if peer_master(inst) && !hearing(inst) {
            hold.push(inst.clone());
        } else {
            release.push(inst.clone());
        }
    }
    (hold, release)
}

impl SplitBrain {
    fn guard_state(&self) -> std::sync::MutexGuard<'_, GuardState> {
        lock(&self.state)
    }

    /// Instances this node holds backup (exported to the peer).
    pub fn holding(&self) -> Vec<String> {
        self.guard_state().holding.iter().cloned().collect()
    }

    /// Runs the guard on one runtime message from the peer (sync link up by definition);
    /// `current` loads the current generation (the cluster's priorities, the advert intervals).
    pub async fn check<D: Daemon>(
        &self,
        env: &Env<'_, D>,
        current: impl FnOnce() -> Option<Generation>,
        peer_state: &Value,
    ) {
        let _turn = self.turn.lock().await;
        let (Some(node), Some(current)) = (env.node.map(str::to_owned), current()) else {
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
        let view = env.shared.vrrp();
        if !view.available {
            // Our own roles are unknown: decide nothing, drop holds (the daemon restarts clean).
            // This check holds the turn already (a second lock would wait for ever).
            self.release_all_in_turn(env, "the local vrrp daemon does not answer")
                .await;
            return;
        }
        let local = NodeRoles {
            node: node.clone(),
            priority: my_prio,
            roles: local_roles(&view.instances),
        };
        let peer = NodeRoles {
            node: peer_name.to_owned(),
            priority: peer_prio,
            roles: peer_roles(peer_state),
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
        let holding: BTreeSet<String> = self.guard_state().holding.clone();
        let (hold, release) = plan(&local, &peer, &holding, hearing);
        for inst in &hold {
            let req = tandem_control::vrrp::Request::Hold {
                instance: Some(inst.clone()),
                ms: Some(HOLD.as_millis() as u64),
            }
            .to_value();
            match env.vrrp.ask(&req).await {
                Ok(v) if v.get("ok") == Some(&Value::Bool(true)) => {
                    let newly = self.guard_state().holding.insert(inst.clone());
                    if newly {
                        let what = format!(
                            "{node} and {peer_name} were both master of vrrp instance {inst} with no adverts between them (LAN heartbeat lost, both alive on the sync link); {node} (priority {my_prio}) holds backup, {peer_name} (priority {peer_prio}) keeps the VIPs"
                        );
                        warn!(instance = %inst, peer = %peer_name, "split brain: holding backup");
                        self.guard_state().what = Some(what.clone());
                        env.shared.event(&format!("split brain: {what}"));
                    }
                }
                Ok(v) => warn!(instance = %inst, reply = %v, "vrrp daemon refused the hold"),
                Err(e) => warn!(instance = %inst, cause = %e, "cannot hold backup"),
            }
        }
        for inst in &release {
            self.release(
                env,
                inst,
                "adverts heard again or the peer is no longer master",
            )
            .await;
        }
        // Alarm on both: here while holding, or while the peer says it holds.
        let peer_holding = peer_holding(peer_state);
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
                let req = tandem_control::vrrp::Request::Announce {
                    instance: Some(inst.clone()),
                }
                .to_value();
                match env.vrrp.ask(&req).await {
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
            env.shared.raise(ALARM, Severity::Critical, what);
        } else if !peer_holding.is_empty() {
            env.shared.raise(
                ALARM,
                Severity::Critical,
                format!(
                    "{node} and {peer_name} were both master of vrrp instance(s) {} with no adverts between them (LAN heartbeat lost, both alive on the sync link); {peer_name} (priority {peer_prio}) holds backup, {node} (priority {my_prio}) keeps the VIPs",
                    peer_holding.join(", ")
                ),
            );
        } else {
            clear_alarm(env.shared);
        }
    }

    async fn release<D: Daemon>(&self, env: &Env<'_, D>, inst: &str, why: &str) {
        // In maintenance the daemon's hold is maintenance's (`maintenance.rs`): keep it.
        if !env.maintenance.on() {
            let req = tandem_control::vrrp::Request::Release {
                instance: Some(inst.to_owned()),
            }
            .to_value();
            match env.vrrp.ask(&req).await {
                Ok(_) => {}
                // The hold runs out by itself in the daemon.
                Err(e) => warn!(instance = %inst, cause = %e, "cannot release the backup hold"),
            }
        }
        if self.guard_state().holding.remove(inst) {
            info!(instance = %inst, why, "split brain: hold released");
            env.shared.event(&format!(
                "split brain: released the backup hold of {inst}: {why}"
            ));
        }
    }

    /// Drops every hold: the peer can no longer be confirmed alive (sync link down) or our
    /// own roles are unknown. Holding on would risk having no master at all.
    pub async fn release_all<D: Daemon>(&self, env: &Env<'_, D>, why: &str) {
        let _turn = self.turn.lock().await;
        self.release_all_in_turn(env, why).await;
    }

    /// [`SplitBrain::release_all`] by a caller that holds the turn.
    async fn release_all_in_turn<D: Daemon>(&self, env: &Env<'_, D>, why: &str) {
        let holding = self.holding();
        for inst in &holding {
            self.release(env, inst, why).await;
        }
        let none_held = {
            let mut st = self.guard_state();
            st.peer_holding.clear();
            st.holding.is_empty()
        };
        if none_held {
            clear_alarm(env.shared);
        }
    }
}

fn clear_alarm(shared: &Shared) {
    if shared.alarms().iter().any(|a| a.id == ALARM) {
        shared.clear(ALARM);
        shared.event("split brain resolved: the LAN heartbeat is back, no hold in force");
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tandem_config::MemoryCertFiles;
    use tandem_store::{CommitInfo, MemFs, Store};

    use super::*;
    use crate::ask::FakeDaemon as FakeVrrp;
    use crate::state::VrrpView;

    /// One node's guard with its state, a fake VRRP daemon and the pair's configuration.
    struct Node {
        name: &'static str,
        g: Generation,
        shared: Shared,
        vrrp: FakeVrrp,
        maintenance: Maintenance,
        guard: SplitBrain,
    }

    impl Node {
        fn new(name: &'static str) -> Node {
            Node {
                name,
                g: generation(),
                shared: Shared::new(Some(name.into())),
                vrrp: FakeVrrp::default(),
                maintenance: Maintenance::new(Box::new(MemFs::new()), PathBuf::from("/data")),
                guard: SplitBrain::default(),
            }
        }

        fn env(&self) -> Env<'_, FakeVrrp> {
            Env {
                node: Some(self.name),
                shared: &self.shared,
                vrrp: &self.vrrp,
                maintenance: &self.maintenance,
            }
        }
    }

    const PAIR: &str = "version: 1\ncluster:\n  name: shop\n  nodes:\n    lb1: { lan_address: 198.18.0.11, sync_address: 198.18.1.1, priority: 150 }\n    lb2: { lan_address: 198.18.0.12, sync_address: 198.18.1.2, priority: 100 }\ninterfaces:\n  lan: { role: lan }\n  sync: { role: sync }\nvrrp:\n  - name: www\n    interface: lan\n    vrid: 51\n    advert_interval: 100ms\n    addresses: [198.18.0.100/24]\nfrontends:\n  - name: web\n    bind: [\"198.18.0.100:80\"]\n    default_backend: app\nbackends:\n  - name: app\n    servers:\n      - { name: app1, address: 198.18.2.1:80 }\n";

    fn generation() -> Generation {
        let fs = MemFs::new();
        let store = Store::with_fs(
            Box::new(fs),
            PathBuf::from("/data/config"),
            Box::new(MemoryCertFiles::default()),
        )
        .expect("store");
        store
            .commit(PAIR, &CommitInfo::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn roles(node: &str, priority: u8, roles: &[(&str, &str)]) -> NodeRoles {
        NodeRoles {
            node: node.into(),
            priority,
            roles: roles
                .iter()
                .map(|(i, s)| Role {
                    instance: (*i).into(),
                    state: (*s).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_lower_priority_node_holds_only_when_no_adverts_are_heard() {
        let me = roles("lb2", 100, &[("www", "master"), ("db", "backup")]);
        let peer = roles("lb1", 150, &[("www", "master"), ("db", "master")]);
        let none = BTreeSet::new();
        assert_eq!(
            plan(&me, &peer, &none, |_| false),
            (vec!["www".into()], vec![])
        );
        // Adverts still flow: a role change in flight, the protocol decides.
        assert_eq!(plan(&me, &peer, &none, |_| true), (vec![], vec![]));
        // The winner never holds.
        assert_eq!(plan(&peer, &me, &none, |_| false), (vec![], vec![]));
        // A hold is refreshed while the peer is master and silent, released otherwise.
        let held: BTreeSet<String> = ["www".to_owned()].into();
        let me_backup = roles("lb2", 100, &[("www", "backup")]);
        assert_eq!(
            plan(&me_backup, &peer, &held, |_| false),
            (vec!["www".into()], vec![])
        );
        assert_eq!(
            plan(&me_backup, &peer, &held, |_| true),
            (vec![], vec!["www".into()])
        );
        let peer_backup = roles("lb1", 150, &[("www", "backup")]);
        assert_eq!(
            plan(&me_backup, &peer_backup, &held, |_| false),
            (vec![], vec!["www".into()])
        );
    }

    fn view(state: &str, last_advert_ms: u64) -> VrrpView {
        VrrpView {
            available: true,
            reason: None,
            instances: vec![
                json!({"name": "www", "state": state, "last_advert_ms": last_advert_ms}),
            ],
        }
    }

    #[tokio::test]
    async fn a_double_master_is_held_then_released_when_adverts_come_back() {
        let node = Node::new("lb2");
        let (g, shared, vrrp, guard) = (&node.g, &node.shared, &node.vrrp, &node.guard);
        let env = node.env();
        let peer =
            json!({"node": "lb1", "vrrp": [{"instance": "www", "state": "master"}], "holding": []});
        shared.set_vrrp(view("master", 5000));
        guard.check(&env, || Some(g.clone()), &peer).await;
        assert_eq!(
            vrrp.take(),
            [json!({"cmd": "hold", "instance": "www", "ms": 1000})]
        );
        assert_eq!(guard.holding(), ["www"]);
        assert!(shared.alarms().iter().any(|a| a.id == ALARM));
        // Adverts heard again (within 3 intervals of 100 ms): released, alarm cleared.
        shared.set_vrrp(view("backup", 50));
        guard.check(&env, || Some(g.clone()), &peer).await;
        assert_eq!(vrrp.take(), [json!({"cmd": "release", "instance": "www"})]);
        assert!(guard.holding().is_empty());
        assert!(!shared.alarms().iter().any(|a| a.id == ALARM));
    }

    #[tokio::test]
    async fn the_winner_re_announces_when_the_peer_holds() {
        let node = Node::new("lb1");
        let (g, shared, vrrp, guard) = (&node.g, &node.shared, &node.vrrp, &node.guard);
        let env = node.env();
        shared.set_vrrp(view("master", 5000));
        let peer = json!({"node": "lb2", "vrrp": [{"instance": "www", "state": "backup"}], "holding": ["www"]});
        guard.check(&env, || Some(g.clone()), &peer).await;
        assert_eq!(vrrp.take(), [json!({"cmd": "announce", "instance": "www"})]);
        assert!(guard.holding().is_empty());
        assert!(shared.alarms().iter().any(|a| a.id == ALARM));
        // Only once per hold of the peer.
        guard.check(&env, || Some(g.clone()), &peer).await;
        assert!(vrrp.take().is_empty());
        // The sync link goes down: nothing held, the alarm goes.
        guard.release_all(&env, "sync link down").await;
        assert!(!shared.alarms().iter().any(|a| a.id == ALARM));
    }

    #[tokio::test]
    async fn an_unanswering_local_daemon_drops_the_holds_without_blocking_the_guard() {
        let node = Node::new("lb2");
        let (g, shared, vrrp, guard) = (&node.g, &node.shared, &node.vrrp, &node.guard);
        let env = node.env();
        let peer =
            json!({"node": "lb1", "vrrp": [{"instance": "www", "state": "master"}], "holding": []});
        shared.set_vrrp(view("master", 5000));
        guard.check(&env, || Some(g.clone()), &peer).await;
        assert_eq!(guard.holding(), ["www"]);
        vrrp.take();
        shared.set_vrrp(VrrpView {
            available: false,
            reason: Some("no answer".into()),
            instances: Vec::new(),
        });
        let bounded = Duration::from_secs(5);
        tokio::time::timeout(bounded, guard.check(&env, || Some(g.clone()), &peer))
            .await
            .expect("the check returns (it must not wait for its own turn)");
        assert_eq!(vrrp.take(), [json!({"cmd": "release", "instance": "www"})]);
        assert!(guard.holding().is_empty());
        assert!(!shared.alarms().iter().any(|a| a.id == ALARM));
        // And the guard still takes its turn afterwards.
        tokio::time::timeout(bounded, guard.release_all(&env, "sync link down"))
            .await
            .expect("release_all returns");
    }
}
