//! The VRRP daemon of the Tandem appliance: the IO shell around `tandem-vrrp-proto`.
//!
//! [`run`] starts one `Router` per `vrrp:` instance of the configuration for this node and
//! gives it real IO: a raw IP protocol 112 socket on the instance's interface (multicast to
//! 224.0.0.18, or unicast to the peer's `lan_address`; IPv6: ff02::12 from the link-local
//! address), VIPs added and removed through netlink with finite lifetimes, gratuitous ARP
//! (IPv4) and unsolicited Neighbor Advertisement (IPv6) bursts on takeover, link and proxy tracking, a control
//! socket ([`control`]) and a guardian process that removes the VIPs if the daemon dies or
//! freezes ([`guardian`]).
//!
//! **This crate is the only code in Tandem that changes interface addresses** (architecture
//! invariant): the daemon adds and removes VIPs, its guardian only removes them.
//! It must not implement protocol rules (vrrp-proto decides; this shell executes) and does not
//! talk to systemd (the supervisor does).
//!
//! # Signals and shutdown
//!
//! The binary maps SIGTERM and SIGINT to the `shutdown` future: every instance resigns (a
//! priority-0 advert through the state machine's Shutdown when master), removes its VIPs, the
//! guardian is told and closed, and `run` returns `Ok(())` (exit 0).
//!
//! # Limits of this version
//!
//! * An instance is IPv4 or IPv6 (by its VIPs; one family per instance, as RFC 5798 wants).
//!   IPv6 instances advertise from the interface's link-local address to ff02::12 and are
//!   multicast only: `unicast: true` is refused ([`Error::Ipv6Unicast`]) because the config has
//!   no IPv6 peer address. IPv6 VIPs are added with `IFA_F_NODAD` ([`netlink`]) and announced
//!   with unsolicited Neighbor Advertisements.
//! * Accept_Mode is not enforced: a master always accepts traffic to its VIPs, which is what a
//!   load balancer needs (the proxy binds them); `accept: false` is logged as unenforced.
//! * Proxy tracking probes the proxy's runtime API (`runtime.socket`, see [`track`]); the API
//!   has no per-listener state, so a proxy that answers counts as listening.

pub mod control;
pub mod error;
pub mod garp;
pub mod guardian;
mod instance;
pub mod netlink;
pub mod socket;
pub mod track;

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tandem_config::Config;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

pub use error::Error;
pub use guardian::{GuardianCommand, guardian_main};

/// How long a starting daemon waits for a previous guardian to report what it holds (it
/// notices its daemon's death within 10 ms; a guardian whose daemon still runs never answers).
const ADOPT_WAIT: Duration = Duration::from_millis(300);
/// How long the adoption confirmation waits for the resumed instances to start.
const ADOPT_CONFIRM: Duration = Duration::from_secs(1);

/// The guardian's adoption socket beside the daemon's control socket: `<control>.guardian`.
pub fn guardian_socket(control_socket: &std::path::Path) -> PathBuf {
    let mut s = control_socket.as_os_str().to_owned();
    s.push(".guardian");
    PathBuf::from(s)
}
pub use track::{ProbeTiming, ProxyProbe, RuntimeApiProbe, TcpConnectProbe};

use crate::control::{ControlState, Events, InstanceHandle};
use crate::instance::Instance;

/// Valid and preferred lifetime of an installed VIP (whole seconds: the kernel's granularity).
/// The backstop when both the daemon and its guardian are gone: the kernel drops the VIP.
pub const VIP_LIFETIME: Duration = Duration::from_secs(10);
/// How often a master renews its VIPs' lifetime (a third of it, so two renewals can be lost).
pub const VIP_RENEW: Duration = Duration::from_secs(3);
/// How often link state (the VRRP interface and tracked interfaces) is re-read besides the
/// `RTMGRP_LINK` notifications, which wake the instance at once.
///
/// The re-read is the resync safety net (lost notifications, `ENOBUFS`) *and* what bounds the
/// reaction to carrier loss: the kernel flips `IFF_LOWER_UP` at once but sends the link
/// notification from its linkwatch work, which batches non-urgent devices (physical NICs, and
/// a veth whose peer has the same ifindex in its namespace) to one run per second, so the
/// notification can lag the carrier by up to 1 s (measured: 540 ms in the tracked-interface
/// test). Admin down/up, removed links and urgent devices are notified immediately.
pub const TRACK_POLL: Duration = Duration::from_millis(25);
/// How long shutdown waits for every instance to resign.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Default path of the control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/tandem/vrrp.sock";

/// How to run the daemon besides the configuration.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Where to serve the control socket; `None` for no control socket.
    pub control_socket: Option<PathBuf>,
    /// How to start the guardian; `None` runs without one (only the lifetime backstop).
    pub guardian: Option<GuardianCommand>,
    /// Health probe of the local proxy for `track.proxy`, overriding the default: the proxy's
    /// runtime API on the config's `runtime.socket` ([`RuntimeApiProbe`]).
    pub proxy_probe: Option<Arc<dyn ProxyProbe>>,
}

/// Runs every VRRP instance of `config` as node `node` until `shutdown` completes, then resigns
/// and returns. Errors are startup errors; failures while running are logged and counted.
pub async fn run(
    config: &Config,
    node: &str,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let cluster = config.cluster.as_ref().ok_or(Error::NoCluster)?;
    let me = cluster
        .nodes
        .iter()
        .find(|(n, _)| n.as_str() == node)
        .map(|(_, n)| n)
        .ok_or_else(|| Error::UnknownNode {
            node: node.to_owned(),
            known: cluster
                .nodes
                .keys()
                .map(|n| n.as_str().to_owned())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let peer = cluster
        .nodes
        .iter()
        .find(|(n, _)| n.as_str() != node)
        .map(|(_, n)| n.lan_address);
    if config.vrrp.is_empty() {
        return Err(Error::NoInstances);
    }

    let start = Instant::now();
    let events = Arc::new(Events::new());
    // A previous daemon of this node died: adopt its guardian's VIPs before our own guardian
    // takes the socket name over (see `guardian`).
    let adoption = options
        .guardian
        .as_ref()
        .and_then(|g| g.listen.as_deref())
        .and_then(|path| guardian::Adoption::connect(path, ADOPT_WAIT));
    let mut resumed = Vec::new();
    let mut started = Vec::new();
    let guardian = match &options.guardian {
        Some(cmd) => Some(Arc::new(Mutex::new(guardian::GuardianLink::spawn(cmd)?))),
        None => {
            warn!(
                "running without a vip guardian: after a crash VIPs stay until their lifetime ends"
            );
            None
        }
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut handles = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut probe_tasks = Vec::new();
    // One probe of the local proxy shared by every instance that tracks it, as often as the
    // fastest of them needs.
    let proxy_health = config
        .vrrp
        .iter()
        .filter(|v| v.track.proxy.is_some())
        .map(|v| v.advert_interval.as_std())
        .min()
        .map(|fastest| {
            let probe = options.proxy_probe.clone().unwrap_or_else(|| {
                Arc::new(RuntimeApiProbe {
                    socket: config.runtime.socket.clone(),
                    expect_frontends: !config.frontends.is_empty(),
                })
            });
            let (rx, task) = track::spawn_probe(probe, ProbeTiming::for_advert_interval(fastest));
            probe_tasks.push(task);
            rx
        });

    for inst in &config.vrrp {
        let vrid = inst.vrid.get();
        let name = inst.name.as_str().to_owned();
        let interface = inst.interface.as_str().to_owned();
        let vips: Vec<(IpAddr, u8)> = inst
            .addresses
            .iter()
            .map(|c| (c.addr(), c.prefix()))
            .collect();
        let ipv6 = vips.first().is_some_and(|(a, _)| a.is_ipv6());
        if vips.iter().any(|(a, _)| a.is_ipv6() != ipv6) {
            return Err(Error::MixedFamilies {
                instance: name,
                vrid,
            });
        }
        let mut nl = netlink::Netlink::new().map_err(|source| Error::Netlink {
            action: "open a route netlink socket".into(),
            source,
        })?;
        let link = nl
            .link_by_name(&interface)
            .map_err(|source| Error::Netlink {
                action: format!("get link {interface}"),
                source,
            })?
            .ok_or_else(|| Error::InterfaceNotFound {
                interface: interface.clone(),
                vrid,
            })?;
        let primary = if ipv6 {
            if inst.unicast {
                return Err(Error::Ipv6Unicast {
                    instance: name,
                    vrid,
                });
            }
            primary_v6(&mut nl, &interface, link.index, vrid, &vips)?
        } else {
            match me.lan_address {
                IpAddr::V4(v4) => IpAddr::V4(v4),
                lan_address @ IpAddr::V6(_) => {
                    return Err(Error::LanAddressFamily {
                        instance: name,
                        vrid,
                        lan_address,
                    });
                }
            }
        };
        let mut rc =
            tandem_vrrp_proto::Config::new(vrid, primary, vips.iter().map(|(a, _)| *a).collect());
        rc.priority = me.priority.get();
        rc.advert_interval_cs =
            u16::try_from(inst.advert_interval.as_millis() / 10).unwrap_or(u16::MAX);
        rc.preempt = inst.preempt;
        rc.preempt_delay = inst.preempt_delay.as_std();
        rc.accept_mode = inst.accept;
        if inst.unicast {
            rc.unicast_peers = peer.into_iter().collect();
        }
        if !inst.accept {
            warn!(instance = %name, vrid, "accept: false is not enforced; the master accepts traffic to its VIPs");
        }
        let resign = resign_adverts(&rc);
        let router = tandem_vrrp_proto::Router::new(rc, tandem_vrrp_proto::Instant::ZERO).map_err(
            |source| Error::InstanceConfig {
                instance: name.clone(),
                vrid,
                source,
            },
        )?;
        let key = format!("{interface}-{vrid}");
        let resume = adoption
            .as_ref()
            .and_then(|a| a.held.get(&key))
            .is_some_and(|since| *since < router.master_down_interval());
        if resume {
            resumed.push(key);
        }
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        started.push(started_rx);
        info!(instance = %name, vrid, %primary, ipv6, resume, "vrrp instance configured");
        let socket =
            socket::VrrpSocket::open(&interface, link.index, primary, vrid, !inst.unicast)?;
        let garp = match garp::GarpSocket::open(&interface, link.index) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(instance = %name, vrid, cause = %e, "no gratuitous arp on takeover");
                None
            }
        };
        let proxy = match (inst.track.proxy, &proxy_health) {
            (Some(weight), Some(rx)) => Some((weight.get(), rx.clone())),
            _ => None,
        };
        let status = Arc::new(Mutex::new(
            serde_json::json!({"name": name, "state": "initialize"}),
        ));
        let (req_tx, req_rx) = mpsc::channel(8);
        handles.push(InstanceHandle {
            name: name.clone(),
            status: Arc::clone(&status),
            requests: req_tx,
        });
        let instance = Instance {
            name,
            vrid,
            interface,
            ifindex: link.index,
            mac: link.mac,
            vips,
            router,
            socket,
            garp,
            nl,
            guardian: guardian.clone(),
            track_interfaces: inst
                .track
                .interfaces
                .iter()
                .map(|(n, w)| (n.as_str().to_owned(), w.get()))
                .collect(),
            proxy,
            events: Arc::clone(&events),
            status,
            start,
            resign,
            resume,
            started: Some(started_tx),
        };
        tasks.spawn(instance.run(req_rx, shutdown_rx.clone()));
    }

    if let Some(adoption) = adoption {
        // Confirm once every resumed instance told our own guardian what it holds: until then
        // the previous guardian keeps them, so some guardian guards the VIPs at every moment.
        tokio::spawn(async move {
            for rx in started {
                let _ = tokio::time::timeout(ADOPT_CONFIRM, rx).await;
            }
            info!(adopted = ?resumed, "adoption confirmed to the previous vip guardian");
            adoption.finish(&resumed);
        });
    }

    let control_path = options.control_socket.clone();
    let control_task = match &control_path {
        Some(path) => {
            let listener = control::bind(path)?;
            info!(path = %path.display(), "control socket listening");
            let state = Arc::new(ControlState {
                node: node.to_owned(),
                instances: handles,
                events: Arc::clone(&events),
            });
            Some(tokio::spawn(control::serve(listener, state, path.clone())))
        }
        None => None,
    };

    info!(node, instances = config.vrrp.len(), "vrrp daemon running");
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => info!("shutdown requested"),
        done = tasks.join_next() => {
            warn!(result = ?done.map(|r| r.map_err(|e| e.to_string())), "an instance task ended unexpectedly; shutting down");
        }
    }
    let _ = shutdown_tx.send(true);
    let wait_all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, wait_all)
        .await
        .is_err()
    {
        warn!("instances did not finish resigning in time");
    }
    if let Some(task) = control_task {
        task.abort();
    }
    for task in probe_tasks {
        task.abort();
    }
    if let Some(path) = control_path {
        let _ = std::fs::remove_file(path);
    }
    if let Some(g) = guardian {
        match Arc::try_unwrap(g) {
            Ok(m) => m
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .close(Duration::from_secs(2)),
            Err(_) => warn!("vip guardian still shared at shutdown; leaving it to exit on EOF"),
        }
    }
    info!("vrrp daemon stopped");
    Ok(())
}

/// The primary address of an IPv6 instance (RFC 5798 §5.1.2.1): the interface's first usable
/// link-local address that is not itself one of the instance's VIPs.
fn primary_v6(
    nl: &mut netlink::Netlink,
    interface: &str,
    ifindex: u32,
    vrid: u8,
    vips: &[(IpAddr, u8)],
) -> Result<IpAddr, Error> {
    let candidates = nl.link_local_v6(ifindex).map_err(|source| Error::Netlink {
        action: format!("list the ipv6 addresses of {interface}"),
        source,
    })?;
    candidates
        .into_iter()
        .map(IpAddr::V6)
        .find(|a| !vips.iter().any(|(v, _)| v == a))
        .ok_or_else(|| Error::NoLinkLocal {
            interface: interface.to_owned(),
            vrid,
        })
}

/// The priority-0 adverts this router would send when resigning, one per destination (the
/// group, or each unicast peer), for the guardian to send if the daemon dies.
fn resign_adverts(rc: &tandem_vrrp_proto::Config) -> Vec<(IpAddr, Vec<u8>)> {
    let advert = tandem_vrrp_proto::Advertisement {
        vrid: rc.vrid,
        priority: 0,
        max_adver_int_cs: rc.advert_interval_cs,
        addresses: rc.virtual_addresses.clone(),
    };
    let dsts = if rc.unicast_peers.is_empty() {
        vec![rc.group()]
    } else {
        rc.unicast_peers.clone()
    };
    dsts.into_iter()
        .filter_map(|dst| match advert.encode(rc.primary_address, dst) {
            Ok(payload) => Some((dst, payload)),
            Err(e) => {
                warn!(vrid = rc.vrid, %dst, cause = %e, "cannot encode the resignation advert");
                None
            }
        })
        .collect()
}
