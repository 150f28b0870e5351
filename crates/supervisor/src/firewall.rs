//! The host firewall: an nftables ruleset generated from the configuration and loaded by the
//! supervisor at every apply (`--firewall`, set by the appliance's unit), and at boot, before
//! any address is set, by `tandem-firewall.service` from the copy the last apply left in
//! `DATA/firewall.nft`. Design and rules: `docs/security.md`.
//!
//! Owns [`plan`] and [`render`] (pure: configuration in, nft text out, snapshot-tested),
//! loading the text with `nft -f` ([`load`]: one netlink transaction, so the previous table
//! is replaced whole or not at all) and the supervisor's hook ([`Core::apply_firewall`]).
//! Must not decide what listens where (the configuration does) nor touch any table but
//! `inet tandem`. Stateless on purpose: the data plane runs without connection tracking
//! (the board denies `nf_conntrack`), so no rule uses `ct`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tandem_config::{Config, InterfaceRole};
use tandem_store::{Store, StoreError};

use crate::core::Core;

/// The nftables table the supervisor owns (`nft list table inet tandem`).
pub const TABLE: &str = "tandem";
/// The copy of the last loaded ruleset under the data directory, loaded at boot.
pub const BOOT_COPY: &str = "firewall.nft";
/// Longest `nft -f` may take before it is killed (it takes milliseconds).
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The appliance's port names (board `.link` files): the interfaces of a role the
/// configuration does not declare.
pub const DEFAULT_LAN: &str = "lan";
/// See [`DEFAULT_LAN`].
pub const DEFAULT_SYNC: &str = "sync";
/// See [`DEFAULT_LAN`].
pub const DEFAULT_MGMT: &str = "mgmt";
/// ICMP and ICMPv6 echo requests accepted per second (a ping flood is dropped beyond).
pub const PING_RATE: u32 = 100;
/// IP protocol number of VRRP.
const PROTO_VRRP: u8 = 112;
/// IP protocol number of IGMP (queries of multicast-snooping switches, for VRRP's group).
const PROTO_IGMP: u8 = 2;

/// Why a firewall could not be generated or loaded.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// An interface name that cannot be written into an nft rule.
    #[error(
        "interface `{0}` cannot be used in a firewall rule: its name contains `\"`, `\\` or `*`"
    )]
    InterfaceName(String),
    /// The ruleset file could not be written.
    #[error("cannot write the firewall rules to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `nft` could not be run or refused the rules (nothing was changed).
    #[error("nft refused the firewall rules of {path} (the previous rules stay): {detail}")]
    Load {
        /// The file.
        path: PathBuf,
        /// nft's message, or why it could not run.
        detail: String,
    },
}

/// Where config sync's peer connects from and to (see [`plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPeer {
    /// The peer's node name.
    pub peer: String,
    /// This node's sync address and port (the listener).
    pub local: SocketAddr,
    /// The peer's sync address (the connection's source).
    pub remote: SocketAddr,
}

/// What the firewall lets in. Interface lists are sorted and deduplicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The lan side: interfaces of role `lan` or `wan` (else the appliance's `lan` port),
    /// plus every VRRP interface. Frontends are reachable here.
    pub lan: Vec<String>,
    /// Interfaces of role `sync` (else `sync`). Only config sync from the peer.
    pub sync: Vec<String>,
    /// Interfaces of role `mgmt` (else `mgmt`). Only management services.
    pub mgmt: Vec<String>,
    /// Interfaces of the VRRP instances: VRRP adverts and IGMP queries.
    pub vrrp: Vec<String>,
    /// Frontend binds reachable from the lan side: (frontend name, address). Loopback binds
    /// are left out (loopback is always accepted).
    pub frontends: Vec<(String, SocketAddr)>,
    /// Config sync's peer, when this node syncs with one.
    pub sync_peer: Option<SyncPeer>,
    /// Management services reachable from the mgmt side: (service, address).
    pub management: Vec<(String, SocketAddr)>,
}

/// Config sync's endpoints on `node` for `config`: when the cluster has two nodes and `node`
/// is one of them (the same rule as config sync's own, `sync.rs`).
pub fn sync_peer(config: &Config, node: Option<&str>) -> Option<SyncPeer> {
    let node = node?;
    let cluster = config.cluster.as_ref()?;
    if cluster.nodes.len() != 2 {
        return None;
    }
    let (_, me) = cluster.nodes.iter().find(|(k, _)| k.to_string() == node)?;
    let (peer, other) = cluster.nodes.iter().find(|(k, _)| k.to_string() != node)?;
    let port = config.sync.port.get();
    Some(SyncPeer {
        peer: peer.to_string(),
        local: SocketAddr::new(me.sync_address, port),
        remote: SocketAddr::new(other.sync_address, port),
    })
}

/// What `config` (`None`: nothing committed yet) needs reachable, with `sync_peer`.
pub fn plan(config: Option<&Config>, sync_peer: Option<SyncPeer>) -> Result<Plan, FirewallError> {
    let declared = |roles: &[InterfaceRole]| -> BTreeSet<String> {
        config
            .and_then(|c| c.interfaces.as_ref())
            .into_iter()
            .flatten()
            .filter(|(_, i)| i.role.is_some_and(|r| roles.contains(&r)))
            .map(|(name, _)| name.to_string())
            .collect()
    };
    let or_default = |set: BTreeSet<String>, default: &str| {
        if set.is_empty() {
            BTreeSet::from([default.to_owned()])
        } else {
            set
        }
    };
    let vrrp: BTreeSet<String> = config
        .into_iter()
        .flat_map(|c| &c.vrrp)
        .map(|v| v.interface.to_string())
        .collect();
    let mut lan = or_default(
        declared(&[InterfaceRole::Lan, InterfaceRole::Wan]),
        DEFAULT_LAN,
    );
    lan.extend(vrrp.iter().cloned());
    let sync = or_default(declared(&[InterfaceRole::Sync]), DEFAULT_SYNC);
    let mgmt = or_default(declared(&[InterfaceRole::Mgmt]), DEFAULT_MGMT);
    for name in lan.iter().chain(&sync).chain(&mgmt) {
        if name.contains(['"', '\\', '*']) {
            return Err(FirewallError::InterfaceName(name.clone()));
        }
    }
    let mut frontends = Vec::new();
    let mut management = Vec::new();
    if let Some(c) = config {
        for f in &c.frontends {
            for b in &f.bind {
                let addr = b.address.socket_addr();
                if !addr.ip().is_loopback() && !frontends.contains(&(f.name.to_string(), addr)) {
                    frontends.push((f.name.to_string(), addr));
                }
            }
        }
        if let Some(m) = &c.metrics {
            let addr = m.listen.socket_addr();
            if !addr.ip().is_loopback() {
                management.push(("metrics".to_owned(), addr));
            }
        }
    }
    Ok(Plan {
        lan: lan.into_iter().collect(),
        sync: sync.into_iter().collect(),
        mgmt: mgmt.into_iter().collect(),
        vrrp: vrrp.into_iter().collect(),
        frontends,
        sync_peer,
        management,
    })
}

/// `iifname "a"` or `iifname { "a", "b" }`.
fn iifname(names: &[String]) -> String {
    match names {
        [one] => format!("iifname \"{one}\""),
        many => format!(
            "iifname {{ {} }}",
            many.iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `ip daddr A ` / `ip6 daddr A ` / nothing for a wildcard v6 bind (both families) /
/// `meta nfproto ipv4 ` for a wildcard v4 bind.
fn daddr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v) if v.is_unspecified() => "meta nfproto ipv4 ".to_owned(),
        IpAddr::V6(v) if v.is_unspecified() => String::new(),
        IpAddr::V4(v) => format!("ip daddr {v} "),
        IpAddr::V6(v) => format!("ip6 daddr {v} "),
    }
}

fn saddr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v) => format!("ip saddr {v} "),
        IpAddr::V6(v) => format!("ip6 saddr {v} "),
    }
}

/// The nft text for `plan`: replaces table `inet tandem` atomically when loaded with `nft -f`.
pub fn render(plan: &Plan) -> String {
    let lan = iifname(&plan.lan);
    let mut rules: Vec<String> = vec![
        "iif \"lo\" accept".into(),
        "# Replies to this node's own connections (to the servers, to the peer, downloads):"
            .into(),
        "# every TCP segment that does not open a connection. Stateless on purpose: the data"
            .into(),
        "# plane runs without connection tracking, and new connections need a rule below.".into(),
        "tcp flags & (syn | ack) != syn accept".into(),
        "icmp type { echo-reply, destination-unreachable, time-exceeded, parameter-problem } accept"
            .into(),
        format!("icmp type echo-request limit rate {PING_RATE}/second burst {PING_RATE} packets accept"),
        "icmpv6 type { echo-reply, destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept"
            .into(),
        format!("icmpv6 type echo-request limit rate {PING_RATE}/second burst {PING_RATE} packets accept"),
        "# Neighbour discovery comes from the link itself (hop limit 255, RFC 4861).".into(),
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } ip6 hoplimit 255 accept"
            .into(),
        "icmpv6 type mld-listener-query ip6 saddr fe80::/10 accept".into(),
    ];
    if !plan.vrrp.is_empty() {
        let vrrp = iifname(&plan.vrrp);
        rules.push(
            "# VRRP adverts (IP protocol 112) and the IGMP queries of snooping switches.".into(),
        );
        rules.push(format!(
            "{vrrp} meta l4proto {PROTO_VRRP} counter name \"accepted_vrrp\" accept"
        ));
        rules.push(format!("{vrrp} meta l4proto {PROTO_IGMP} accept"));
    }
    for (name, addr) in &plan.frontends {
        rules.push(format!(
            "{lan} {}tcp dport {} accept comment \"frontend {name}\"",
            daddr(addr.ip()),
            addr.port()
        ));
    }
    if let Some(p) = &plan.sync_peer {
        rules.push(format!(
            "{} {}{}tcp dport {} counter name \"accepted_sync\" accept comment \"config sync from {}\"",
            iifname(&plan.sync),
            saddr(p.remote.ip()),
            daddr(p.local.ip()),
            p.local.port(),
            p.peer
        ));
    }
    for (name, addr) in &plan.management {
        rules.push(format!(
            "{} {}tcp dport {} accept comment \"{name}\"",
            iifname(&plan.mgmt),
            daddr(addr.ip()),
            addr.port()
        ));
    }
    rules.push("# Everything else is dropped and counted by the side it came from.".into());
    rules.push(format!("{lan} counter name \"dropped_lan\" drop"));
    rules.push(format!(
        "{} counter name \"dropped_sync\" drop",
        iifname(&plan.sync)
    ));
    rules.push(format!(
        "{} counter name \"dropped_mgmt\" drop",
        iifname(&plan.mgmt)
    ));
    rules.push("counter name \"dropped_other\" drop".into());

    let mut out = String::from(
        "#!/usr/sbin/nft -f\n\
         # Generated by the Tandem supervisor from the configuration; do not edit (docs/security.md).\n\
         # One transaction: the previous table is replaced whole, or nothing changes.\n",
    );
    out.push_str(&format!(
        "table inet {TABLE}\ndelete table inet {TABLE}\n\ntable inet {TABLE} {{\n"
    ));
    for c in [
        "accepted_vrrp",
        "accepted_sync",
        "dropped_lan",
        "dropped_sync",
        "dropped_mgmt",
        "dropped_other",
    ] {
        out.push_str(&format!("\tcounter {c} {{\n\t}}\n"));
    }
    out.push_str("\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n");
    for r in &rules {
        out.push_str(&format!("\t\t{r}\n"));
    }
    out.push_str(
        "\t}\n\n\t# A proxy, never a router (net.ipv4.ip_forward=0 as well).\n\
         \tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n",
    );
    out
}

/// Serializes loads: a commit's and a pairing's refresh must not interleave.
static LOADING: Mutex<()> = Mutex::new(());

/// Loads `text` with `nft -f` (atomically) and, once it loaded, keeps it as `boot_copy`
/// (written to a temporary file first, renamed after the load) for the next boot.
pub fn load(text: &str, boot_copy: &Path) -> Result<(), FirewallError> {
    let mut tmp = boot_copy.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write_err = |source| FirewallError::Write {
        path: tmp.clone(),
        source,
    };
    let mut f = std::fs::File::create(&tmp).map_err(write_err)?;
    f.write_all(text.as_bytes()).map_err(write_err)?;
    f.sync_all().map_err(write_err)?;
    drop(f);
    let result = run_nft(&tmp);
    if result.is_ok() {
        std::fs::rename(&tmp, boot_copy).map_err(|source| FirewallError::Write {
            path: boot_copy.to_owned(),
            source,
        })?;
    } else {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `nft -f file`, bounded by [`LOAD_TIMEOUT`].
fn run_nft(file: &Path) -> Result<(), FirewallError> {
    let fail = |detail: String| FirewallError::Load {
        path: file.to_owned(),
        detail,
    };
    let mut child = Command::new("nft")
        .arg("-f")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run nft: {e}")))?;
    let deadline = Instant::now() + LOAD_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "nft did not finish within {}s",
                    LOAD_TIMEOUT.as_secs()
                )));
            }
            Err(e) => return Err(fail(format!("waiting for nft: {e}"))),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut s, &mut err);
    }
    let err: Vec<&str> = err
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Err(fail(if err.is_empty() {
        format!("nft exited with {status}")
    } else {
        err.join("; ")
    }))
}

impl Core {
    /// Generates and loads the firewall for `config` (`None`: nothing committed yet, then
    /// the sync peer recorded by `pair`, if any) when the supervisor runs with `--firewall`;
    /// does nothing otherwise. Runs inline: `nft -f` takes milliseconds.
    pub(crate) fn apply_firewall(&self, config: Option<&Config>) -> Result<(), String> {
        if !self.opts.firewall {
            return Ok(());
        }
        let _turn = crate::core::lock(&LOADING);
        let peer = match config {
            Some(c) => sync_peer(c, self.opts.node.as_deref()),
            None => crate::sync::Bootstrap::load(&self.opts.data_dir).map(|b| SyncPeer {
                peer: b.peer,
                local: b.local,
                remote: b.remote,
            }),
        };
        let plan = plan(config, peer).map_err(|e| e.to_string())?;
        load(&render(&plan), &self.opts.data_dir.join(BOOT_COPY)).map_err(|e| e.to_string())?;
        tracing::info!(
            frontends = plan.frontends.len(),
            sync = plan.sync_peer.is_some(),
            "firewall loaded"
        );
        Ok(())
    }

    /// [`Core::apply_firewall`] for the current generation (or none), e.g. after `pair`
    /// recorded a peer on a node without configuration; failures raise alarm `firewall`.
    pub(crate) fn refresh_firewall(&self) {
        let current = match self.store(Store::load_current) {
            Ok(g) => Some(g.config),
            Err(StoreError::Empty(_)) => None,
            Err(e) => {
                tracing::warn!(cause = %e, "firewall not refreshed: the current generation cannot be read");
                return;
            }
        };
        match self.apply_firewall(current.as_ref()) {
            Ok(()) => self.shared.clear("firewall"),
            Err(e) => self.shared.raise(
                "firewall",
                crate::state::Severity::Critical,
                format!("the host firewall could not be loaded: {e}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, expect_file};

    fn config(text: &str) -> Config {
        tandem_config::parse(
            text,
            "test.yaml",
            &tandem_config::MemoryCertFiles::default(),
        )
        .unwrap_or_else(|r| panic!("test config is invalid:\n{r}"))
        .config
    }

    fn rules(text: Option<&str>, node: Option<&str>) -> String {
        let c = text.map(config);
        let peer = c.as_ref().and_then(|c| sync_peer(c, node));
        render(&plan(c.as_ref(), peer).expect("plan"))
    }

    /// The shipped pair configuration of the system tier, seen from lb1.
    const PAIR: &str = include_str!("../../../xtask/data/system-pair.yaml");

    #[test]
    fn the_pair_config_opens_the_vip_vrrp_and_sync_from_the_peer_only() {
        expect![[r#"
            #!/usr/sbin/nft -f
            # Generated by the Tandem supervisor from the configuration; do not edit (docs/security.md).
            # One transaction: the previous table is replaced whole, or nothing changes.
            table inet tandem
            delete table inet tandem

            table inet tandem {
            	counter accepted_vrrp {
            	}
            	counter accepted_sync {
            	}
            	counter dropped_lan {
            	}
            	counter dropped_sync {
            	}
            	counter dropped_mgmt {
            	}
            	counter dropped_other {
            	}

            	chain input {
            		type filter hook input priority filter; policy drop;
            		iif "lo" accept
            		# Replies to this node's own connections (to the servers, to the peer, downloads):
            		# every TCP segment that does not open a connection. Stateless on purpose: the data
            		# plane runs without connection tracking, and new connections need a rule below.
            		tcp flags & (syn | ack) != syn accept
            		icmp type { echo-reply, destination-unreachable, time-exceeded, parameter-problem } accept
            		icmp type echo-request limit rate 100/second burst 100 packets accept
            		icmpv6 type { echo-reply, destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept
            		icmpv6 type echo-request limit rate 100/second burst 100 packets accept
            		# Neighbour discovery comes from the link itself (hop limit 255, RFC 4861).
            		icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } ip6 hoplimit 255 accept
            		icmpv6 type mld-listener-query ip6 saddr fe80::/10 accept
            		# VRRP adverts (IP protocol 112) and the IGMP queries of snooping switches.
            		iifname "lan" meta l4proto 112 counter name "accepted_vrrp" accept
            		iifname "lan" meta l4proto 2 accept
            		iifname "lan" ip daddr 198.18.0.100 tcp dport 80 accept comment "frontend www"
            		iifname "sync" ip saddr 198.18.1.2 ip daddr 198.18.1.1 tcp dport 7400 counter name "accepted_sync" accept comment "config sync from lb2"
            		# Everything else is dropped and counted by the side it came from.
            		iifname "lan" counter name "dropped_lan" drop
            		iifname "sync" counter name "dropped_sync" drop
            		iifname "mgmt" counter name "dropped_mgmt" drop
            		counter name "dropped_other" drop
            	}

            	# A proxy, never a router (net.ipv4.ip_forward=0 as well).
            	chain forward {
            		type filter hook forward priority filter; policy drop;
            	}
            }
        "#]]
        .assert_eq(&rules(Some(PAIR), Some("lb1")));
    }

    #[test]
    fn the_peer_sees_the_mirror_image_of_the_sync_rule() {
        let r = rules(Some(PAIR), Some("lb2"));
        assert!(
            r.contains("ip saddr 198.18.1.1 ip daddr 198.18.1.2 tcp dport 7400"),
            "{r}"
        );
    }

    #[test]
    fn without_a_node_name_or_a_second_node_there_is_no_sync_rule() {
        assert!(!rules(Some(PAIR), None).contains("tcp dport 7400"));
        let single = "version: 1\nfrontends:\n  - name: web\n    bind: [\"0.0.0.0:80\"]\n    default_backend: app\nbackends:\n  - name: app\n    servers: [{ name: a, address: 198.18.0.21:80 }]\n";
        assert!(!rules(Some(single), Some("lb1")).contains("accepted_sync\" accept"));
    }

    #[test]
    fn undeclared_roles_use_the_appliance_port_names_and_wildcards_and_metrics_are_handled() {
        // No `interfaces:` section, VRRP on eth1, a wildcard v4 and v6 bind, a loopback bind
        // (no rule: loopback is always accepted), metrics on every address (mgmt side).
        let text = r#"
version: 1
cluster:
  name: lab
  nodes:
    lb1: { lan_address: 198.18.0.11, sync_address: 198.18.1.1, priority: 150 }
vrrp:
  - { name: v, interface: eth1, vrid: 7, addresses: [198.18.0.100/24] }
frontends:
  - name: any4
    bind: ["0.0.0.0:443", "127.0.0.1:8080"]
    default_backend: app
  - name: any6
    bind: ["[::]:8443", "[2001:2::10]:80"]
    default_backend: app
backends:
  - name: app
    servers: [{ name: a, address: 198.18.0.21:80 }]
metrics: { listen: 0.0.0.0:9100 }
"#;
        let r = rules(Some(text), Some("lb1"));
        let input: Vec<&str> = r
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("iifname"))
            .collect();
        expect![[r#"
            [
                "iifname \"eth1\" meta l4proto 112 counter name \"accepted_vrrp\" accept",
                "iifname \"eth1\" meta l4proto 2 accept",
                "iifname { \"eth1\", \"lan\" } meta nfproto ipv4 tcp dport 443 accept comment \"frontend any4\"",
                "iifname { \"eth1\", \"lan\" } tcp dport 8443 accept comment \"frontend any6\"",
                "iifname { \"eth1\", \"lan\" } ip6 daddr 2001:2::10 tcp dport 80 accept comment \"frontend any6\"",
                "iifname \"mgmt\" meta nfproto ipv4 tcp dport 9100 accept comment \"metrics\"",
                "iifname { \"eth1\", \"lan\" } counter name \"dropped_lan\" drop",
                "iifname \"sync\" counter name \"dropped_sync\" drop",
                "iifname \"mgmt\" counter name \"dropped_mgmt\" drop",
            ]
        "#]]
        .assert_debug_eq(&input);
    }

    #[test]
    fn an_interface_name_nft_cannot_quote_is_refused_with_its_name() {
        let text = "version: 1\ninterfaces:\n  'e\"1': { role: lan }\nfrontends:\n  - name: web\n    bind: [\"0.0.0.0:80\"]\n    default_backend: app\nbackends:\n  - name: app\n    servers: [{ name: a, address: 198.18.0.21:80 }]\n";
        let c = config(text);
        let err = plan(Some(&c), None).expect_err("a quote in a name");
        assert_eq!(
            err.to_string(),
            "interface `e\"1` cannot be used in a firewall rule: its name contains `\"`, `\\` or `*`"
        );
    }

    /// The ruleset `tandem-firewall.service` loads at boot when no apply has left one yet
    /// (a node that is not set up): nothing but loopback, replies and ICMP gets in.
    /// `UPDATE_EXPECT=1 cargo test -p tandem-supervisor firewall` rewrites the shipped file.
    #[test]
    fn the_shipped_boot_default_is_the_rules_of_no_configuration() {
        expect_file!["../../../image/overlay/usr/lib/tandem/firewall-default.nft"]
            .assert_eq(&rules(None, None));
    }
}
