//! The `network` section in the file: default gateways, static routes, DNS resolvers, NTP
//! servers, MTUs, 802.1Q VLAN interfaces and bonds; shared once at the top level
//! (`network:`) and overridden per node (`cluster.nodes.<name>.network`).
//!
//! Owns, for these keys only, the file shape ([`RawNetwork`] and its parts, whose doc comments
//! land in `tandem schema`), the validated model ([`Network`]) and the merge of a node's
//! values over the shared ones ([`Network::merged`]); kept together so the feature is one
//! file, and re-exported where the other sections are. The checks are in `validate::network`.
//! Does no IO and knows nothing of `ip` or netlink: `tandem-netcfg` plans and applies a
//! [`Network`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::values::{Cidr, Host, InterfaceName, Ip, Mtu, VlanId};

/// The `network` section, as written (top level or under a node).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawNetwork {
    /// Default gateway per address family, `{ ipv4: IP, ipv6: IP }`; each must lie in a subnet of the node's addresses; default none.
    pub gateway: Option<RawGateway>,
    /// Static routes, `{ to: NETWORK/PREFIX, via: IP, dev: INTERFACE }`; a node's list replaces the shared one; default none.
    pub routes: Option<Vec<RawStaticRoute>>,
    /// DNS resolvers (IP addresses), in order of preference, written to `/etc/resolv.conf`; a node's list replaces the shared one; default none.
    pub dns: Option<Vec<Ip>>,
    /// NTP servers (host names or IP addresses) for chrony; a node's list replaces the shared one; default none.
    pub ntp: Option<Vec<Host>>,
    /// Link settings per interface name (physical, VLAN or bond); merged per interface with a node's.
    pub interfaces: BTreeMap<InterfaceName, RawLink>,
    /// 802.1Q VLAN interfaces by name, e.g. `lan.120: { link: lan, id: 120 }`; `link` and `id` default to the parts of a `LINK.ID` name.
    pub vlans: BTreeMap<InterfaceName, RawVlan>,
    /// Bonds by name, e.g. `bond0: { mode: active-backup, ports: [eth1, eth2] }`.
    pub bonds: BTreeMap<InterfaceName, RawBond>,
}

/// Default gateways.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawGateway {
    /// IPv4 default gateway; default none.
    pub ipv4: Option<Ip>,
    /// IPv6 default gateway; default none.
    pub ipv6: Option<Ip>,
}

/// A static route.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawStaticRoute {
    /// Destination network with prefix length and no host bits, e.g. `198.19.0.0/24`; required.
    pub to: Option<Cidr>,
    /// Next hop, of the same family as `to`, in a subnet of the node's addresses; required.
    pub via: Option<Ip>,
    /// Interface the next hop is on; default: the kernel picks it from the next hop.
    pub dev: Option<InterfaceName>,
}

/// Link settings of one interface.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawLink {
    /// MTU in bytes, 68 to 9216; default: left as it is.
    pub mtu: Option<Mtu>,
}

/// An 802.1Q VLAN interface.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawVlan {
    /// Interface the tagged frames go out on; default the part of the name before the last `.`.
    pub link: Option<InterfaceName>,
    /// VLAN id, 1 to 4094; default the part of the name after the last `.`.
    pub id: Option<VlanId>,
}

/// A bond (Linux bonding driver).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawBond {
    /// `active-backup` (one port carries traffic, another takes over) or `802.3ad` (LACP); required.
    pub mode: Option<BondMode>,
    /// Member interfaces, at least one; a port belongs to one bond only.
    pub ports: Vec<InterfaceName>,
}

/// Bonding mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
pub enum BondMode {
    /// One active port; on its link loss another takes over (needs no switch support).
    #[serde(rename = "active-backup")]
    ActiveBackup,
    /// IEEE 802.3ad dynamic link aggregation (LACP); the switch must be configured for it.
    #[serde(rename = "802.3ad")]
    Lacp,
}

impl BondMode {
    /// The kernel's name of the mode (`ip link add ... type bond mode NAME`).
    pub fn kernel_name(self) -> &'static str {
        match self {
            BondMode::ActiveBackup => "active-backup",
            BondMode::Lacp => "802.3ad",
        }
    }
}

/// Validated network settings: the shared ones, a node's overrides, or the two merged.
/// An absent list (`None`) inherits; an empty one (`Some(vec![])`) clears.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Network {
    /// Default gateways.
    #[serde(skip_serializing_if = "Gateway::is_empty")]
    pub gateway: Gateway,
    /// Static routes, in file order; destinations are networks, unique per node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<StaticRoute>>,
    /// DNS resolvers in order of preference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<IpAddr>>,
    /// NTP servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ntp: Option<Vec<Host>>,
    /// Link settings per interface.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub interfaces: BTreeMap<InterfaceName, Link>,
    /// VLAN interfaces by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub vlans: BTreeMap<InterfaceName, Vlan>,
    /// Bonds by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub bonds: BTreeMap<InterfaceName, Bond>,
}

impl Network {
    /// Whether nothing is set (the section is left out when written back).
    pub fn is_empty(&self) -> bool {
        *self == Network::default()
    }

    /// `over` (a node's values) merged over `self` (the shared values): a gateway family,
    /// a list, or an interface, VLAN or bond entry given in `over` replaces the shared one.
    pub fn merged(&self, over: &Network) -> Network {
        Network {
            gateway: Gateway {
                ipv4: over.gateway.ipv4.or(self.gateway.ipv4),
                ipv6: over.gateway.ipv6.or(self.gateway.ipv6),
            },
            routes: over.routes.clone().or_else(|| self.routes.clone()),
            dns: over.dns.clone().or_else(|| self.dns.clone()),
            ntp: over.ntp.clone().or_else(|| self.ntp.clone()),
            interfaces: overlay(&self.interfaces, &over.interfaces),
            vlans: overlay(&self.vlans, &over.vlans),
            bonds: overlay(&self.bonds, &over.bonds),
        }
    }
}

/// `base` with the entries of `over` replacing or added to its own.
fn overlay<V: Clone>(
    base: &BTreeMap<InterfaceName, V>,
    over: &BTreeMap<InterfaceName, V>,
) -> BTreeMap<InterfaceName, V> {
    let mut m = base.clone();
    m.extend(over.iter().map(|(k, v)| (k.clone(), v.clone())));
    m
}

/// Default gateways per family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Gateway {
    /// IPv4 default gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<IpAddr>,
    /// IPv6 default gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<IpAddr>,
}

impl Gateway {
    /// Whether neither family has a gateway.
    pub fn is_empty(&self) -> bool {
        self.ipv4.is_none() && self.ipv6.is_none()
    }
}

/// A static route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct StaticRoute {
    /// Destination network (host bits clear).
    pub to: Cidr,
    /// Next hop, same family as `to`.
    pub via: IpAddr,
    /// Interface of the next hop, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<InterfaceName>,
}

/// Link settings of an interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Link {
    /// MTU, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<Mtu>,
}

/// An 802.1Q VLAN interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vlan {
    /// Parent interface.
    pub link: InterfaceName,
    /// VLAN id.
    pub id: VlanId,
}

/// A bond.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bond {
    /// Bonding mode.
    pub mode: BondMode,
    /// Member interfaces, at least one, each in no other bond.
    pub ports: Vec<InterfaceName>,
}
