//! The split-brain decision, pure: given both nodes' VRRP roles (exchanged over the sync
//! link) and their priorities, which instances must this node give up.
//!
//! Owns the rule only: when both nodes are master of one instance, the node with the lower
//! configured priority steps down (ties: the higher node name steps down, so exactly one does).
//! Must not talk to the VRRP daemon (the supervisor does) nor read the clock.

use serde::{Deserialize, Serialize};

/// One VRRP instance's role on one node, as exchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Instance name.
    pub instance: String,
    /// `master`, `backup`, `init`, ...
    pub state: String,
}

/// A node's roles with its configured priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRoles {
    /// Node name.
    pub node: String,
    /// Configured base priority (`cluster.nodes.NAME.priority`).
    pub priority: u8,
    /// Roles per instance.
    pub roles: Vec<Role>,
}

/// Instances both nodes hold as master.
pub fn both_master(local: &NodeRoles, peer: &NodeRoles) -> Vec<String> {
    local
        .roles
        .iter()
        .filter(|r| r.state == "master")
        .filter(|r| {
            peer.roles
                .iter()
                .any(|p| p.instance == r.instance && p.state == "master")
        })
        .map(|r| r.instance.clone())
        .collect()
}

/// Whether `local` is the node that must step down when both are master.
pub fn local_yields(local: &NodeRoles, peer: &NodeRoles) -> bool {
    (local.priority, std::cmp::Reverse(&local.node))
        < (peer.priority, std::cmp::Reverse(&peer.node))
}

/// The instances this node must give up now.
pub fn step_down(local: &NodeRoles, peer: &NodeRoles) -> Vec<String> {
    if local_yields(local, peer) {
        both_master(local, peer)
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(node: &str, priority: u8, roles: &[(&str, &str)]) -> NodeRoles {
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
    fn exactly_one_side_steps_down() {
        let cases = [
            // (lb1 prio, lb1 roles, lb2 prio, lb2 roles, lb1 gives up, lb2 gives up)
            (
                150,
                vec![("www", "master")],
                100,
                vec![("www", "master")],
                vec![],
                vec!["www"],
            ),
            (
                100,
                vec![("www", "master")],
                150,
                vec![("www", "master")],
                vec!["www"],
                vec![],
            ),
            (
                100,
                vec![("www", "master")],
                100,
                vec![("www", "master")],
                vec![],
                vec!["www"],
            ),
            (
                150,
                vec![("www", "master")],
                100,
                vec![("www", "backup")],
                vec![],
                vec![],
            ),
            (
                150,
                vec![("www", "master"), ("api", "backup")],
                100,
                vec![("www", "master"), ("api", "master")],
                vec![],
                vec!["www"],
            ),
        ];
        for (p1, r1, p2, r2, want1, want2) in cases {
            let a = n("lb1", p1, &r1);
            let b = n("lb2", p2, &r2);
            assert_eq!(step_down(&a, &b), want1, "lb1 {a:?} vs {b:?}");
            assert_eq!(step_down(&b, &a), want2, "lb2 {b:?} vs {a:?}");
        }
    }
}
