//! The plan: from the previous and the next network settings of one node to the ordered
//! operations that turn one into the other, and the inverse operations that turn it back.
//!
//! Owns the order of operations and what each change means as operations; pure (no IO, no
//! clock). Does not know how an operation is carried out (`apply` does).
//!
//! Order: first tear down what goes away or changes (routes, then VLANs, then bond ports,
//! then bonds), then build (bonds, their ports, VLANs, MTUs, routes and default routes), then
//! the files (`resolv.conf`, chrony sources). A route whose `dev` is a VLAN or bond that is
//! recreated is removed before and added after, since the kernel drops it with the link.
//! The inverse is the inverse of each operation in reverse order, so a plan that failed
//! half-way is undone by the inverses of the steps that ran.
//! Settings a config does not give (an MTU, a gateway) are left as the host has them: going
//! from `mtu: 9000` to no `mtu` changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tandem_config::{BondMode, Cidr, Config, Host, InterfaceName, Mtu, Name, Network, StaticRoute};

/// A file the plan writes whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigFile {
    /// The resolver configuration (`resolv.conf`): the DNS resolvers.
    ResolvConf,
    /// chrony's sources file: the NTP servers.
    ChronySources,
}

/// One change to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create bond `name` in `mode` and set it up.
    CreateBond {
        /// Bond name.
        name: InterfaceName,
        /// Bonding mode.
        mode: BondMode,
    },
    /// Delete bond `name` (created in `mode`, kept for the inverse).
    DeleteBond {
        /// Bond name.
        name: InterfaceName,
        /// Its mode.
        mode: BondMode,
    },
    /// Make `port` a port of `bond`.
    Enslave {
        /// Member interface.
        port: InterfaceName,
        /// Bond.
        bond: InterfaceName,
    },
    /// Take `port` out of `bond`.
    Release {
        /// Member interface.
        port: InterfaceName,
        /// Bond.
        bond: InterfaceName,
    },
    /// Create VLAN interface `name` with tag `id` on `link`, and set it up.
    CreateVlan {
        /// VLAN interface name.
        name: InterfaceName,
        /// Parent interface.
        link: InterfaceName,
        /// VLAN id.
        id: u16,
    },
    /// Delete VLAN interface `name` (its link and id kept for the inverse).
    DeleteVlan {
        /// VLAN interface name.
        name: InterfaceName,
        /// Parent interface.
        link: InterfaceName,
        /// VLAN id.
        id: u16,
    },
    /// Set the MTU of `dev` to `mtu`; `previous` is the configured one, if any.
    SetMtu {
        /// Interface.
        dev: InterfaceName,
        /// New MTU.
        mtu: Mtu,
        /// MTU configured before (the inverse sets it back; without one it does nothing).
        previous: Option<Mtu>,
    },
    /// Add a route (a default route has destination `0.0.0.0/0` or `::/0`).
    AddRoute(StaticRoute),
    /// Remove a route.
    DelRoute(StaticRoute),
    /// Replace the route to `from.to` (same destination, other next hop or device).
    ReplaceRoute {
        /// The route as it is.
        from: StaticRoute,
        /// The route as it becomes.
        to: StaticRoute,
    },
    /// Write `file` whole with `content`; `previous` is what it held per the previous config.
    WriteFile {
        /// Which file.
        file: ConfigFile,
        /// New content.
        content: String,
        /// Content per the previous configuration (what the inverse writes back).
        previous: String,
    },
}

impl Op {
    /// The operation that undoes this one, if any (an MTU without a previous one has none).
    pub fn inverse(&self) -> Option<Op> {
        Some(match self.clone() {
            Op::CreateBond { name, mode } => Op::DeleteBond { name, mode },
            Op::DeleteBond { name, mode } => Op::CreateBond { name, mode },
            Op::Enslave { port, bond } => Op::Release { port, bond },
            Op::Release { port, bond } => Op::Enslave { port, bond },
            Op::CreateVlan { name, link, id } => Op::DeleteVlan { name, link, id },
            Op::DeleteVlan { name, link, id } => Op::CreateVlan { name, link, id },
            Op::SetMtu { dev, mtu, previous } => Op::SetMtu {
                dev,
                mtu: previous?,
                previous: Some(mtu),
            },
            Op::AddRoute(r) => Op::DelRoute(r),
            Op::DelRoute(r) => Op::AddRoute(r),
            Op::ReplaceRoute { from, to } => Op::ReplaceRoute { from: to, to: from },
            Op::WriteFile {
                file,
                content,
                previous,
            } => Op::WriteFile {
                file,
                content: previous,
                previous: content,
            },
        })
    }
}

/// Route text as `ip route` takes it: `198.19.0.0/24 via 198.18.0.254 dev lan`.
fn route_text(r: &StaticRoute) -> String {
    let to = if r.to.prefix() == 0 {
        "default".to_owned()
    } else {
        r.to.to_string()
    };
    match &r.dev {
        Some(dev) => format!("{to} via {} dev {dev}", r.via),
        None => format!("{to} via {}", r.via),
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateBond { name, mode } => {
                write!(f, "create bond {name} mode {}", mode.kernel_name())
            }
            Op::DeleteBond { name, .. } => write!(f, "delete bond {name}"),
            Op::Enslave { port, bond } => write!(f, "add port {port} to bond {bond}"),
            Op::Release { port, bond } => write!(f, "remove port {port} from bond {bond}"),
            Op::CreateVlan { name, link, id } => {
                write!(f, "create VLAN {name} on {link} id {id}")
            }
            Op::DeleteVlan { name, .. } => write!(f, "delete VLAN {name}"),
            Op::SetMtu { dev, mtu, .. } => write!(f, "set MTU of {dev} to {mtu}"),
            Op::AddRoute(r) => write!(f, "add route {}", route_text(r)),
            Op::DelRoute(r) => write!(f, "remove route {}", route_text(r)),
            Op::ReplaceRoute { to, .. } => write!(f, "replace route {}", route_text(to)),
            Op::WriteFile { file, .. } => write!(f, "write {file:?}"),
        }
    }
}

/// Ordered operations from one network to another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The operations, in the order they run.
    pub ops: Vec<Op>,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The plan that undoes this one: each operation's inverse, in reverse order.
    pub fn inverse(&self) -> Plan {
        Plan {
            ops: self.ops.iter().rev().filter_map(Op::inverse).collect(),
        }
    }
}

/// The content of `/etc/resolv.conf` for `dns`.
pub fn resolv_conf(dns: &[IpAddr]) -> String {
    let mut out = String::from("# written by tandem from network.dns\n");
    for ip in dns {
        out.push_str(&format!("nameserver {ip}\n"));
    }
    out
}

/// The content of chrony's sources file for `ntp` (`server NAME iburst` per server).
pub fn chrony_sources(ntp: &[Host]) -> String {
    let mut out = String::from("# written by tandem from network.ntp\n");
    for h in ntp {
        out.push_str(&format!("server {h} iburst\n"));
    }
    out
}

/// The gateways of `n` as default routes.
fn default_routes(n: &Network) -> Vec<StaticRoute> {
    let v4 = Cidr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    let v6 = Cidr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0);
    [(n.gateway.ipv4, v4), (n.gateway.ipv6, v6)]
        .into_iter()
        .filter_map(|(via, to)| {
            Some(StaticRoute {
                to: to?,
                via: via?,
                dev: None,
            })
        })
        .collect()
}

/// Every route of `n` (static and default), by destination.
fn routes(n: &Network) -> BTreeMap<Cidr, StaticRoute> {
    n.routes
        .iter()
        .flatten()
        .cloned()
        .chain(default_routes(n))
        .map(|r| (r.to, r))
        .collect()
}

/// The plan for node `node` from `prev` (`None`: nothing applied yet) to `next`.
pub fn plan_for(prev: Option<&Config>, next: &Config, node: Option<&Name>) -> Plan {
    let before = prev.map(|c| c.network_of(node)).unwrap_or_default();
    plan(&before, &next.network_of(node))
}

/// The plan from network `prev` to network `next` of one node (both already merged for the
/// node: [`Config::network_of`]).
pub fn plan(prev: &Network, next: &Network) -> Plan {
    let mut ops = Vec::new();
    // Links that go away or change (and so are recreated).
    let bonds_gone: BTreeSet<&InterfaceName> = prev
        .bonds
        .iter()
        .filter(|(n, b)| next.bonds.get(*n).is_none_or(|nb| nb.mode != b.mode))
        .map(|(n, _)| n)
        .collect();
    let vlans_gone: BTreeSet<&InterfaceName> = prev
        .vlans
        .iter()
        .filter(|(n, v)| next.vlans.get(*n) != Some(v) || bonds_gone.contains(&v.link))
        .map(|(n, _)| n)
        .collect();
    let recreated = |dev: &Option<InterfaceName>| {
        dev.as_ref()
            .is_some_and(|d| vlans_gone.contains(d) || bonds_gone.contains(d))
    };
    let (old_routes, new_routes) = (routes(prev), routes(next));

    // Tear down: routes, VLANs, ports, bonds.
    for (to, r) in &old_routes {
        if !new_routes.contains_key(to) || recreated(&r.dev) {
            ops.push(Op::DelRoute(r.clone()));
        }
    }
    for name in &vlans_gone {
        let v = &prev.vlans[*name];
        ops.push(Op::DeleteVlan {
            name: (*name).clone(),
            link: v.link.clone(),
            id: v.id.get(),
        });
    }
    for (name, b) in &prev.bonds {
        let kept = next.bonds.get(name).filter(|_| !bonds_gone.contains(name));
        for port in &b.ports {
            if kept.is_none_or(|nb| !nb.ports.contains(port)) {
                ops.push(Op::Release {
                    port: port.clone(),
                    bond: name.clone(),
                });
            }
        }
        if bonds_gone.contains(name) {
            ops.push(Op::DeleteBond {
                name: name.clone(),
                mode: b.mode,
            });
        }
    }

    // Build: bonds and ports, VLANs, MTUs, routes.
    for (name, b) in &next.bonds {
        let existed = prev.bonds.contains_key(name) && !bonds_gone.contains(name);
        if !existed {
            ops.push(Op::CreateBond {
                name: name.clone(),
                mode: b.mode,
            });
        }
        for port in &b.ports {
            let had = existed && prev.bonds[name].ports.contains(port);
            if !had {
                ops.push(Op::Enslave {
                    port: port.clone(),
                    bond: name.clone(),
                });
            }
        }
    }
    for (name, v) in &next.vlans {
        if !prev.vlans.contains_key(name) || vlans_gone.contains(name) {
            ops.push(Op::CreateVlan {
                name: name.clone(),
                link: v.link.clone(),
                id: v.id.get(),
            });
        }
    }
    // Parents before VLANs: a VLAN's MTU may not exceed its link's.
    let mut mtus: Vec<(&InterfaceName, Mtu)> = next
        .interfaces
        .iter()
        .filter_map(|(n, l)| Some((n, l.mtu?)))
        .collect();
    mtus.sort_by_key(|(n, _)| next.vlans.contains_key(*n));
    for (dev, mtu) in mtus {
        let previous = prev.interfaces.get(dev).and_then(|l| l.mtu);
        let recreated_link = vlans_gone.contains(dev) || bonds_gone.contains(dev);
        if previous != Some(mtu) || recreated_link {
            ops.push(Op::SetMtu {
                dev: dev.clone(),
                mtu,
                previous,
            });
        }
    }
    // Static routes first, then the default routes (`0/0` sorts first: put it last).
    let mut ordered: Vec<&StaticRoute> = new_routes.values().collect();
    ordered.sort_by_key(|r| r.to.prefix() == 0);
    for r in ordered {
        match old_routes.get(&r.to) {
            Some(old) if recreated(&old.dev) || recreated(&r.dev) => {
                ops.push(Op::AddRoute(r.clone()))
            }
            Some(old) if old != r => ops.push(Op::ReplaceRoute {
                from: old.clone(),
                to: r.clone(),
            }),
            Some(_) => {}
            None => ops.push(Op::AddRoute(r.clone())),
        }
    }

    // Files.
    let files = [
        (
            ConfigFile::ResolvConf,
            resolv_conf(prev.dns.as_deref().unwrap_or_default()),
            resolv_conf(next.dns.as_deref().unwrap_or_default()),
        ),
        (
            ConfigFile::ChronySources,
            chrony_sources(prev.ntp.as_deref().unwrap_or_default()),
            chrony_sources(next.ntp.as_deref().unwrap_or_default()),
        ),
    ];
    for (file, previous, content) in files {
        if previous != content {
            ops.push(Op::WriteFile {
                file,
                content,
                previous,
            });
        }
    }
    Plan { ops }
}

#[cfg(test)]
mod tests;
