//! The daemon's error type: one [`Error`] enum with the context an operator needs.
//!
//! Owns the error vocabulary of `tandem-vrrpd` (interface, VRID, address in every variant where
//! they apply). Must not decide policy (retry, exit): callers do; the binary wraps these in
//! `anyhow` at the edge.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

/// Everything that can stop the daemon or one of its operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration has VRRP instances but no `cluster` section naming the nodes.
    #[error("vrrp needs a `cluster` section with this node's address and priority")]
    NoCluster,
    /// The node given on the command line is not in `cluster.nodes`.
    #[error("node `{node}` is not one of the cluster nodes ({known})")]
    UnknownNode {
        /// The node name asked for.
        node: String,
        /// The node names the config knows, comma-separated.
        known: String,
    },
    /// The configuration has no VRRP instance to run.
    #[error("the configuration has no `vrrp` instance to run")]
    NoInstances,
    /// vrrp-proto rejected the router configuration built from an instance.
    #[error("vrrp instance `{instance}` (vrid {vrid}) is not runnable: {source}")]
    InstanceConfig {
        /// Instance name.
        instance: String,
        /// Its VRID.
        vrid: u8,
        /// Why.
        source: tandem_vrrp_proto::ConfigError,
    },
    /// An instance lists both IPv4 and IPv6 VIPs (a virtual router is of one family).
    #[error(
        "vrrp instance `{instance}` (vrid {vrid}) mixes ipv4 and ipv6 VIPs; use one instance per family"
    )]
    MixedFamilies {
        /// Instance name.
        instance: String,
        /// Its VRID.
        vrid: u8,
    },
    /// An IPv4 instance on a node whose `lan_address` (its advert source) is IPv6.
    #[error(
        "vrrp instance `{instance}` (vrid {vrid}) has ipv4 VIPs but this node's lan_address {lan_address} is ipv6"
    )]
    LanAddressFamily {
        /// Instance name.
        instance: String,
        /// Its VRID.
        vrid: u8,
        /// The node's `lan_address`.
        lan_address: IpAddr,
    },
    /// IPv6 instances only advertise by multicast.
    #[error(
        "vrrp instance `{instance}` (vrid {vrid}) is ipv6 and unicast, which is not supported: the peer's link-local address is not configured"
    )]
    Ipv6Unicast {
        /// Instance name.
        instance: String,
        /// Its VRID.
        vrid: u8,
    },
    /// An IPv6 instance's interface has no usable link-local address to advertise from.
    #[error(
        "interface {interface} of vrrp vrid {vrid} has no usable ipv6 link-local address (ipv6 disabled, or the address is still in duplicate address detection)"
    )]
    NoLinkLocal {
        /// Interface name.
        interface: String,
        /// VRID of the instance using it.
        vrid: u8,
    },
    /// The configured interface does not exist in this network namespace.
    #[error("interface {interface} of vrrp vrid {vrid} does not exist")]
    InterfaceNotFound {
        /// Interface name.
        interface: String,
        /// VRID of the instance using it.
        vrid: u8,
    },
    /// Opening or configuring the VRRP raw socket failed.
    #[error("failed to {action} on the vrrp socket for vrid {vrid} on {interface}: {source}")]
    Socket {
        /// What was being done, e.g. "join 224.0.0.18".
        action: &'static str,
        /// Interface name.
        interface: String,
        /// VRID.
        vrid: u8,
        /// OS error.
        source: io::Error,
    },
    /// Opening the packet socket for gratuitous ARP failed.
    #[error("failed to open the packet socket for gratuitous arp on {interface}: {source}")]
    PacketSocket {
        /// Interface name.
        interface: String,
        /// OS error.
        source: io::Error,
    },
    /// A netlink request (link or address lookup) failed.
    #[error("netlink {action} failed: {source}")]
    Netlink {
        /// What was asked, e.g. "get link eth1".
        action: String,
        /// OS error (the kernel's errno for NACKs).
        source: io::Error,
    },
    /// Installing a VIP failed.
    #[error("failed to add VIP {vip}/{prefix} on {interface}: {source}")]
    AddVip {
        /// The address.
        vip: IpAddr,
        /// Its prefix length.
        prefix: u8,
        /// Interface name.
        interface: String,
        /// OS error.
        source: io::Error,
    },
    /// Removing a VIP failed.
    #[error("failed to remove VIP {vip}/{prefix} from {interface}: {source}")]
    RemoveVip {
        /// The address.
        vip: IpAddr,
        /// Its prefix length.
        prefix: u8,
        /// Interface name.
        interface: String,
        /// OS error.
        source: io::Error,
    },
    /// Starting the guardian process failed.
    #[error("failed to start the vip guardian {program}: {source}")]
    GuardianSpawn {
        /// The program run.
        program: PathBuf,
        /// OS error.
        source: io::Error,
    },
    /// Binding the control socket failed.
    #[error("failed to bind the control socket {path}: {source}")]
    ControlSocket {
        /// Socket path.
        path: PathBuf,
        /// OS error.
        source: io::Error,
    },
    /// Setting up the async runtime's plumbing (signals, fd registration) failed.
    #[error("failed to {action}: {source}")]
    Runtime {
        /// What was being done.
        action: &'static str,
        /// OS error.
        source: io::Error,
    },
}
