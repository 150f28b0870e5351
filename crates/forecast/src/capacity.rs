//! Capacity and utilisation: what a backend and each of its servers can carry, how loaded
//! they are, and how many servers keep a backend under the threshold.
//!
//! Owns the rules; pure. Must not read configuration files or the store: the caller passes
//! each server's `max_connections` (or a measured saturation point), its sessions and the
//! load it reports.
//!
//! Rules:
//! - A server's capacity is its `max_connections`, or else a measured saturation point (the
//!   sessions at which its response time degrades); without either it has no capacity and
//!   only its own reported load, if any, counts.
//! - A server's utilisation is the larger of sessions / capacity and the load it reports
//!   (0 to 1): the pessimistic of the proxy's and the server's view.
//! - A backend's utilisation is its servers' utilisations weighted by capacity (servers
//!   without a capacity weigh as the average server); backup servers are left out, since they
//!   only carry traffic when every other server is down.
//! - Active/passive sizing: the load is what ONE node carries alone after a failover, which
//!   is the sum of what both nodes carry now (normally all of it on the master). Sessions
//!   passed here must be that sum; [`one_node_load`] makes it.

use serde::Serialize;

/// One server, as the capacity model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Its name.
    pub name: String,
    /// `max_connections` from the configuration.
    pub max_connections: Option<u32>,
    /// A measured saturation point, sessions (used when `max_connections` is not set).
    pub saturation: Option<f64>,
    /// A backup server (left out of the backend's capacity).
    pub backup: bool,
    /// Concurrent sessions, summed over both nodes ([`one_node_load`]).
    pub sessions: f64,
    /// The load the server reports itself (agent check), 0 to 1.
    pub reported: Option<f64>,
}

impl Server {
    /// Its capacity in sessions, if known.
    pub fn capacity(&self) -> Option<f64> {
        self.max_connections
            .map(f64::from)
            .or(self.saturation)
            .filter(|c| *c > 0.0)
    }

    /// Its utilisation (0 to 1, above 1 when overloaded), if anything tells.
    pub fn utilisation(&self) -> Option<f64> {
        let by_sessions = self.capacity().map(|c| self.sessions / c);
        match (by_sessions, self.reported) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A backend's utilisation and how it was reached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Utilisation {
    /// Capacity-weighted utilisation of the non-backup servers; `None` when no server has a
    /// capacity or reports its load.
    pub backend: Option<f64>,
    /// Sum of the known capacities of the non-backup servers, sessions.
    pub capacity: f64,
    /// Each server's utilisation, in the order given (`None`: unknown).
    pub servers: Vec<(String, Option<f64>)>,
    /// Non-backup servers that neither have a capacity nor report a load.
    pub unknown: Vec<String>,
}

/// The utilisation of a backend made of `servers`.
pub fn utilisation(servers: &[Server]) -> Utilisation {
    let primary: Vec<&Server> = servers.iter().filter(|s| !s.backup).collect();
    let caps: Vec<f64> = primary.iter().filter_map(|s| s.capacity()).collect();
    let capacity: f64 = caps.iter().sum();
    let mean_cap = if caps.is_empty() {
        1.0
    } else {
        capacity / caps.len() as f64
    };
    let (mut num, mut den) = (0.0, 0.0);
    let mut unknown = Vec::new();
    for s in &primary {
        match s.utilisation() {
            Some(u) => {
                let w = s.capacity().unwrap_or(mean_cap);
                num += u * w;
                den += w;
            }
            None => unknown.push(s.name.clone()),
        }
    }
    Utilisation {
        backend: (den > 0.0).then(|| num / den),
        capacity,
        servers: servers
            .iter()
            .map(|s| (s.name.clone(), s.utilisation()))
            .collect(),
        unknown,
    }
}

/// The load one node must carry alone after a failover: what both nodes carry now.
pub fn one_node_load(per_node: &[f64]) -> f64 {
    per_node.iter().filter(|v| v.is_finite()).sum()
}

/// Utilisation of a node resource (connections, CPU) against ONE node's capacity, with the
/// load of both nodes: what the survivor will see after a failover.
pub fn failover_utilisation(per_node: &[f64], one_node_capacity: f64) -> Option<f64> {
    (one_node_capacity > 0.0).then(|| one_node_load(per_node) / one_node_capacity)
}

/// How many servers like the current `servers` keep a backend whose utilisation peaks at
/// `peak` under `threshold` (utilisation scales as 1 / servers). At least 1.
pub fn servers_needed(servers: u32, peak: f64, threshold: f64) -> u32 {
    if !(peak.is_finite() && threshold > 0.0) || servers == 0 {
        return servers.max(1);
    }
    let need = (f64::from(servers) * peak / threshold - 1e-9).ceil();
    (need.max(1.0)).min(f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, max: Option<u32>, sessions: f64, reported: Option<f64>) -> Server {
        Server {
            name: name.into(),
            max_connections: max,
            saturation: None,
            backup: false,
            sessions,
            reported,
        }
    }

    #[test]
    fn backend_utilisation_weighs_servers_by_capacity_and_trusts_the_worse_view() {
        let u = utilisation(&[
            server("a", Some(100), 50.0, None),
            server("b", Some(300), 60.0, Some(0.9)), // reports 90 % although 20 % of maxconn
            server("c", None, 10.0, None),
            Server {
                backup: true,
                ..server("spare", Some(1000), 0.0, None)
            },
        ]);
        assert_eq!(u.capacity, 400.0);
        assert_eq!(u.servers[1], ("b".into(), Some(0.9)));
        assert!((u.backend.unwrap() - (0.5 * 100.0 + 0.9 * 300.0) / 400.0).abs() < 1e-12);
        assert_eq!(u.unknown, vec!["c".to_owned()]);
        let none = utilisation(&[server("x", None, 5.0, None)]);
        assert_eq!(none.backend, None);
    }

    #[test]
    fn active_passive_counts_both_nodes_against_one() {
        // Split traffic during a brief double-master: the survivor carries the sum.
        assert_eq!(failover_utilisation(&[300.0, 100.0], 1000.0), Some(0.4));
        assert_eq!(failover_utilisation(&[300.0], 0.0), None);
    }

    #[test]
    fn servers_needed_scales_inversely() {
        assert_eq!(servers_needed(10, 0.84, 0.7), 12);
        assert_eq!(servers_needed(10, 0.70, 0.7), 10);
        assert_eq!(servers_needed(10, 0.20, 0.7), 3);
        assert_eq!(servers_needed(0, 0.5, 0.7), 1);
    }
}
