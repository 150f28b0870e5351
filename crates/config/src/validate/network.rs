//! Validation of the `network` keys: the shared section (`network`) and the nodes' overrides
//! (`cluster.nodes.<name>.network`).
//!
//! Owns: per section, the gateway families, route destinations (networks, no host bits) and
//! next-hop families, VLAN link and id (given or derived from a `LINK.ID` name), bond mode and
//! ports; per node, on the merged values, duplicate route destinations, reachability of every
//! next hop and gateway, interface names (when `interfaces` is declared), and a bond port
//! used twice.
//! Reachability uses what the model knows of a node's subnets: the VIP prefixes of the VRRP
//! instances (`vrrp[].addresses`) that contain the node's `lan_address` or `sync_address`.
//! A child of `validate` so it reports through the same [`Ctx`]; it does not touch the other
//! sections.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::Ctx;
use crate::model::{Node, VrrpInstance};
use crate::network::{Bond, Gateway, Link, Network, RawNetwork, RawStaticRoute, StaticRoute, Vlan};
use crate::values::{InterfaceName, Name, VlanId};

/// Nameservers the C library reads from `resolv.conf` (glibc's `MAXNS`).
const MAX_RESOLVERS: usize = 3;

/// Converts one section (shared or a node's) at key path `p`, checking what needs no other
/// section; invalid entries are left out (and reported).
pub(super) fn section(raw: &RawNetwork, p: &str, ctx: &mut Ctx<'_>) -> Network {
    let mut gateway = Gateway::default();
    if let Some(g) = &raw.gateway {
        for (family, value, v4) in [("ipv4", g.ipv4, true), ("ipv6", g.ipv6, false)] {
            let Some(ip) = value else { continue };
            if ip.0.is_ipv4() != v4 {
                let want = if v4 { "IPv4" } else { "IPv6" };
                ctx.error(
                    &format!("{p}.gateway.{family}"),
                    format!("expected an {want} address, found {}", ip.0),
                );
            } else if v4 {
                gateway.ipv4 = Some(ip.0);
            } else {
                gateway.ipv6 = Some(ip.0);
            }
        }
    }
    let routes = raw.routes.as_ref().map(|routes| {
        let mut out = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let at = format!("{p}.routes[{i}]");
            ctx.require(&r.to, &format!("{at}.to"));
            ctx.require(&r.via, &format!("{at}.via"));
            match route(r) {
                Some(Ok(route)) => out.push(route),
                Some(Err((key, why))) => ctx.error(&format!("{at}.{key}"), why),
                None => {}
            }
        }
        out
    });
    let interfaces = raw
        .interfaces
        .iter()
        .map(|(k, v)| (k.clone(), Link { mtu: v.mtu }))
        .collect();
    let mut vlans = BTreeMap::new();
    for (name, v) in &raw.vlans {
        let at = format!("{p}.vlans.{name}");
        let derived = name
            .as_str()
            .rsplit_once('.')
            .and_then(|(l, id)| Some((l.parse::<InterfaceName>().ok()?, id.parse::<u16>().ok()?)));
        let link = v
            .link
            .clone()
            .or_else(|| derived.as_ref().map(|d| d.0.clone()));
        let id =
            v.id.or_else(|| derived.as_ref().and_then(|d| VlanId::new(d.1)));
        if let (None, Some((_, n))) = (v.id, &derived)
            && id.is_none()
        {
            ctx.error_at_key(
                &at,
                format!(
                    "expected a VLAN id from {} to {}, found {n} (from the name `{name}`)",
                    VlanId::MIN,
                    VlanId::MAX
                ),
            );
            continue;
        }
        match (link, id) {
            (Some(link), Some(id)) => {
                vlans.insert(name.clone(), Vlan { link, id });
            }
            (link, id) => {
                let missing = match (link, id) {
                    (None, None) => "`link` and `id`",
                    (None, _) => "`link`",
                    _ => "`id`",
                };
                ctx.error_at_key(
                    &at,
                    format!(
                        "VLAN `{name}` needs {missing}: give it, or name the VLAN `LINK.ID` like `lan.120`"
                    ),
                );
            }
        }
    }
    let mut bonds = BTreeMap::new();
    for (name, b) in &raw.bonds {
        let at = format!("{p}.bonds.{name}");
        let mode = ctx.require(&b.mode, &format!("{at}.mode"));
        if b.ports.is_empty() {
            ctx.empty(&format!("{at}.ports"), "expected at least one port");
        }
        if let Some(mode) = mode
            && !b.ports.is_empty()
        {
            bonds.insert(
                name.clone(),
                Bond {
                    mode,
                    ports: b.ports.clone(),
                },
            );
        }
    }
    if let Some(dns) = &raw.dns
        && dns.len() > MAX_RESOLVERS
    {
        ctx.warn(
            &format!("{p}.dns[{MAX_RESOLVERS}]"),
            format!(
                "the resolver library uses only the first {MAX_RESOLVERS} DNS servers; this one and those after it are ignored"
            ),
        );
    }
    Network {
        gateway,
        routes,
        dns: raw.dns.as_ref().map(|l| l.iter().map(|ip| ip.0).collect()),
        ntp: raw.ntp.clone(),
        interfaces,
        vlans,
        bonds,
    }
}

/// The route `r`, `None` when a key is missing, or the key at fault and why.
fn route(r: &RawStaticRoute) -> Option<Result<StaticRoute, (&'static str, String)>> {
    let (to, via) = (r.to?, r.via?);
    if to.network() != to {
        return Some(Err((
            "to",
            format!(
                "`{to}` has host bits set: write the network, `{}`",
                to.network()
            ),
        )));
    }
    if to.addr().is_ipv4() != via.0.is_ipv4() {
        return Some(Err((
            "via",
            format!("next hop {} is not of the family of `{to}`", via.0),
        )));
    }
    Some(Ok(StaticRoute {
        to,
        via: via.0,
        dev: r.dev.clone(),
    }))
}

/// What the cross checks need to know of the rest of the file.
pub(super) struct Context<'c> {
    /// The shared section as written, if any.
    pub shared_raw: Option<&'c RawNetwork>,
    /// The converted shared section.
    pub shared: &'c Network,
    /// The nodes (validated), by name; empty for a single-node file.
    pub nodes: &'c BTreeMap<Name, Node>,
    /// The nodes' sections as written.
    pub nodes_raw: BTreeMap<Name, &'c RawNetwork>,
    /// The VRRP instances (for the nodes' subnets).
    pub vrrp: &'c [VrrpInstance],
    /// The names in `interfaces`, when the section is present.
    pub declared: Option<&'c BTreeSet<InterfaceName>>,
}

/// Checks each node's merged network (or the shared one alone without nodes).
pub(super) fn check(c: &Context<'_>, ctx: &mut Ctx<'_>) {
    // Problems of a shared entry are the same for both nodes: report them once.
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut report = |ctx: &mut Ctx<'_>, at: String, key: bool, message: String| {
        if seen.insert((at.clone(), message.clone())) {
            if key {
                ctx.error_at_key(&at, message);
            } else {
                ctx.error(&at, message);
            }
        }
    };
    let empty = Network::default();
    let targets: Vec<(Option<&Name>, &Network, Option<&Node>)> = if c.nodes.is_empty() {
        vec![(None, &empty, None)]
    } else {
        c.nodes
            .iter()
            .map(|(n, node)| (Some(n), &node.network, Some(node)))
            .collect()
    };
    for (name, own, node) in targets {
        let merged = c.shared.merged(own);
        let own_raw = name.and_then(|n| c.nodes_raw.get(n).copied());
        let node_p = name.map(|n| format!("cluster.nodes.{n}.network"));
        // Key path of an entry: the node's when the node gives it, else the shared one.
        let path = |node_has: bool| -> String {
            match (&node_p, node_has) {
                (Some(np), true) => np.clone(),
                _ => "network".to_owned(),
            }
        };
        let routes_p = path(own.routes.is_some());
        let subnets: Vec<crate::values::Cidr> = match node {
            Some(node) => c
                .vrrp
                .iter()
                .flat_map(|v| v.addresses.iter())
                .filter(|a| a.contains(node.lan_address) || a.contains(node.sync_address))
                .map(|a| a.network())
                .collect(),
            None => Vec::new(),
        };
        let reachable = |ip: IpAddr| subnets.iter().any(|s| s.contains(ip));
        // Gateways.
        for (family, gw, node_has) in [
            ("ipv4", merged.gateway.ipv4, own.gateway.ipv4.is_some()),
            ("ipv6", merged.gateway.ipv6, own.gateway.ipv6.is_some()),
        ] {
            if let (Some(ip), Some(n)) = (gw, name)
                && !reachable(ip)
            {
                report(
                    ctx,
                    format!("{}.gateway.{family}", path(node_has)),
                    false,
                    format!(
                        "gateway {ip} is not reachable: no address of node {n} is on its subnet"
                    ),
                );
            }
        }
        // Routes, with their index in the list they come from, to point at them.
        let raw_routes = if own.routes.is_some() {
            own_raw.and_then(|r| r.routes.as_ref())
        } else {
            c.shared_raw.and_then(|r| r.routes.as_ref())
        };
        let mut firsts: BTreeMap<crate::values::Cidr, String> = BTreeMap::new();
        let located = raw_routes
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, r)| Some((i, route(r)?.ok()?)));
        for (i, route) in located {
            let at = format!("{routes_p}.routes[{i}]");
            match firsts.get(&route.to) {
                Some(first) => {
                    let line = ctx.line(first);
                    report(
                        ctx,
                        format!("{at}.to"),
                        false,
                        format!(
                            "duplicate route to {}, first defined at line {line}",
                            route.to
                        ),
                    );
                }
                None => {
                    firsts.insert(route.to, format!("{at}.to"));
                }
            }
            if let Some(n) = name
                && !reachable(route.via)
            {
                report(
                    ctx,
                    format!("{at}.via"),
                    false,
                    format!(
                        "route via {} is not reachable: no address of node {n} is on its subnet",
                        route.via
                    ),
                );
            }
            if let Some(dev) = &route.dev
                && let Some(why) = unknown(c.declared, &merged, dev)
            {
                report(ctx, format!("{at}.dev"), false, why);
            }
        }
        // Interfaces, VLANs and bonds.
        for name_if in merged.interfaces.keys() {
            let p = path(own.interfaces.contains_key(name_if));
            if let Some(why) = unknown(c.declared, &merged, name_if) {
                report(ctx, format!("{p}.interfaces.{name_if}"), true, why);
            }
        }
        for (vname, vlan) in &merged.vlans {
            let p = path(own.vlans.contains_key(vname));
            if let Some(why) =
                unknown(c.declared, &merged, &vlan.link).filter(|_| &vlan.link != vname)
            {
                let given = own_raw
                    .filter(|_| own.vlans.contains_key(vname))
                    .or(c.shared_raw)
                    .and_then(|r| r.vlans.get(vname))
                    .is_some_and(|v| v.link.is_some());
                let (at, key) = if given {
                    (format!("{p}.vlans.{vname}.link"), false)
                } else {
                    (format!("{p}.vlans.{vname}"), true)
                };
                report(
                    ctx,
                    at,
                    key,
                    format!("VLAN `{vname}` is on an unknown link: {why}"),
                );
            }
        }
        let mut ports: BTreeMap<&InterfaceName, &InterfaceName> = BTreeMap::new();
        for (bname, bond) in &merged.bonds {
            let p = path(own.bonds.contains_key(bname));
            for (j, port) in bond.ports.iter().enumerate() {
                let at = format!("{p}.bonds.{bname}.ports[{j}]");
                if let Some(other) = ports.get(port) {
                    report(
                        ctx,
                        at,
                        false,
                        format!("port `{port}` is already a port of bond `{other}`"),
                    );
                    continue;
                }
                ports.insert(port, bname);
                if let Some(why) = unknown(c.declared, &merged, port) {
                    report(ctx, at, false, why);
                }
            }
        }
    }
}

/// Why `name` is not a known interface, when `interfaces` is declared: known are the declared
/// names, the VLANs and the bonds.
fn unknown(
    declared: Option<&BTreeSet<InterfaceName>>,
    net: &Network,
    name: &InterfaceName,
) -> Option<String> {
    let declared = declared?;
    if declared.contains(name) || net.vlans.contains_key(name) || net.bonds.contains_key(name) {
        return None;
    }
    // A VLAN is not a candidate for its own link.
    let known = declared
        .iter()
        .chain(
            net.vlans
                .iter()
                .filter(|(_, v)| v.link != *name)
                .map(|(k, _)| k),
        )
        .chain(net.bonds.keys())
        .map(|n| n.as_str());
    let hint = crate::de::suggest(name.as_str(), known)
        .map(|s| format!(", did you mean `{s}`?"))
        .unwrap_or_default();
    Some(format!(
        "interface `{name}` is not declared in `interfaces` nor as a VLAN or bond{hint}"
    ))
}

#[cfg(test)]
mod tests {
    use crate::{MemoryCertFiles, Name};

    const PAIR: &str = "version: 1
cluster:
  name: shop
  nodes:
    lb1: { lan_address: 198.18.0.11, sync_address: 198.18.1.1, priority: 150 }
    lb2:
      lan_address: 198.18.0.12
      sync_address: 198.18.1.2
      priority: 100
      network:
        gateway: { ipv4: 198.18.0.2 }
        dns: []
        vlans: { lan.120: { link: lan, id: 121 } }
interfaces:
  lan: {}
  eth1: {}
  eth2: {}
vrrp:
  - { name: www, interface: lan, vrid: 51, addresses: [198.18.0.100/24] }
network:
  gateway: { ipv4: 198.18.0.1 }
  routes: [{ to: 198.19.0.0/24, via: 198.18.0.254, dev: lan }]
  dns: [198.18.0.53]
  ntp: [ntp.example.com]
  interfaces: { lan: { mtu: 1500 } }
  vlans: { lan.120: {} }
  bonds: { bond0: { mode: active-backup, ports: [eth1, eth2] } }
frontends:
  - { name: www, bind: [\"198.18.0.100:80\"], default_backend: shop }
backends:
  - { name: shop, servers: [{ name: web1, address: 198.18.2.21:8080 }] }
";

    fn name(s: &str) -> Name {
        s.parse().unwrap()
    }

    #[test]
    fn a_node_overrides_the_shared_values_and_the_file_round_trips() {
        let config = crate::parse(
            PAIR,
            "pair.yaml",
            &MemoryCertFiles::new(Vec::<String>::new()),
        )
        .unwrap()
        .config;
        let lb1 = config.network_of(Some(&name("lb1")));
        let lb2 = config.network_of(Some(&name("lb2")));
        assert_eq!(lb1.gateway.ipv4, Some("198.18.0.1".parse().unwrap()));
        assert_eq!(lb2.gateway.ipv4, Some("198.18.0.2".parse().unwrap()));
        assert_eq!(lb1.dns.as_deref().map(<[_]>::len), Some(1));
        assert_eq!(lb2.dns, Some(vec![]), "an empty list clears the shared one");
        assert_eq!(lb2.routes, lb1.routes, "an absent list inherits");
        let vlan = |n: &crate::Network| n.vlans[&"lan.120".parse().unwrap()].id.get();
        assert_eq!((vlan(&lb1), vlan(&lb2)), (120, 121));
        let again = crate::parse(
            &config.to_yaml(),
            "again.yaml",
            &MemoryCertFiles::new(Vec::<String>::new()),
        )
        .unwrap()
        .config;
        assert_eq!(again, config);
    }
}
