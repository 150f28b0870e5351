//! One VRRP instance: the task that drives a `tandem_vrrp_proto::Router` with real IO.
//!
//! Owns the event loop of one virtual router: receive adverts from its raw socket, fire its
//! timer, follow link and tracked-interface state (netlink link notifications, plus a re-read
//! every [`TRACK_POLL`] that catches carrier changes the kernel notifies late and lost
//! notifications) and the proxy probe's verdict, and execute the router's
//! outputs in order (send adverts, add/remove VIPs with lifetimes, gratuitous ARP bursts,
//! heartbeats to the guardian, state events). It is the only code that adds or removes VIPs
//! while the daemon runs (the guardian only removes them when the daemon is gone or frozen).
//! Must not implement protocol rules: every decision comes from the router's outputs.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

use serde_json::Value;
use tandem_vrrp_proto::frames::announcement_frame;
use tandem_vrrp_proto::{Command, InvalidReason, Output, Reason, Router, State};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::control::{Event, Events, InstanceRequest};
use crate::garp::{GarpSchedule, GarpSocket};
use crate::guardian::GuardianLink;
use crate::netlink::{LinkEvents, Netlink};
use crate::socket::{RX_BUFFER, Rx, VrrpSocket};
use crate::{TRACK_POLL, VIP_LIFETIME, VIP_RENEW};
use tandem_control::vrrp::{InstanceCounters, InstanceStatus};

/// Daemon-side counters of one instance (the protocol's own are in `Router::counters`).
#[derive(Debug, Default, Clone)]
struct ShellCounters {
    /// Datagrams that were not a well-formed protocol 112 packet (or lacked IPv6 metadata).
    rx_malformed: u64,
    /// recvmsg failures.
    rx_errors: u64,
    /// Adverts that could not be sent.
    tx_errors: u64,
    /// VIP add/remove/renew failures.
    vip_errors: u64,
    /// Gratuitous ARP / unsolicited NA frames that could not be sent.
    garp_errors: u64,
    /// Gratuitous ARP / unsolicited NA frames sent.
    garp_sent: u64,
    /// Netlink link reads (and link notification receives) that failed.
    track_errors: u64,
    /// Link notification wake-ups.
    link_events: u64,
    /// Times a resumed daemon found its heartbeat gap too long and reinstalled its VIPs.
    resyncs: u64,
    /// VIP lifetime renewals.
    renewals: u64,
}

/// Everything an instance task needs, built by `run`.
pub struct Instance {
    pub(crate) name: String,
    pub(crate) vrid: u8,
    pub(crate) interface: String,
    pub(crate) ifindex: u32,
    pub(crate) mac: Option<[u8; 6]>,
    pub(crate) vips: Vec<(IpAddr, u8)>,
    pub(crate) router: Router,
    pub(crate) socket: VrrpSocket,
    pub(crate) garp: Option<GarpSocket>,
    pub(crate) nl: Netlink,
    pub(crate) guardian: Option<Arc<Mutex<GuardianLink>>>,
    /// Tracked interfaces and the weight their failure subtracts.
    pub(crate) track_interfaces: Vec<(String, u8)>,
    /// Proxy health (`true` = healthy) and its weight; `None` when the proxy is not tracked.
    pub(crate) proxy: Option<(u8, watch::Receiver<bool>)>,
    pub(crate) events: Arc<Events>,
    pub(crate) status: Arc<Mutex<Value>>,
    /// Epoch of the protocol clock.
    pub(crate) start: StdInstant,
    /// Priority-0 adverts (destination, encoded message) the guardian resigns with on our behalf.
    pub(crate) resign: Vec<(IpAddr, Vec<u8>)>,
    /// Adopted from the previous daemon's guardian: it was master within Master_Down_Interval
    /// and its VIPs are still installed, so start with `ResumeMaster` and keep them.
    pub(crate) resume: bool,
    /// Fired once the instance started (its guardian `hold` is written when resumed).
    pub(crate) started: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Mutable shell state beside the router.
#[derive(Debug)]
struct Shell {
    /// VIPs installed by us and not removed since.
    held: bool,
    /// When the last heartbeat was written (master only).
    last_beat: Option<StdInstant>,
    /// When the VIP lifetimes must next be renewed.
    renew_at: Option<StdInstant>,
    garp: GarpSchedule,
    link_up: bool,
    penalty: u8,
    failed_tracks: Vec<String>,
    /// When the last valid advert from another router of this VRID was processed.
    last_advert: Option<StdInstant>,
    counters: ShellCounters,
}

impl Instance {
    fn key(&self) -> String {
        format!("{}-{}", self.interface, self.vrid)
    }

    /// How long the guardian waits for a heartbeat: three advert intervals.
    fn guardian_timeout(&self) -> Duration {
        3 * self.router.config().advert_interval()
    }

    fn now(&self) -> tandem_vrrp_proto::Instant {
        tandem_vrrp_proto::Instant::from_nanos(
            u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX),
        )
    }

    fn to_tokio(&self, t: tandem_vrrp_proto::Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.start + Duration::from_nanos(t.as_nanos()))
    }

    /// Runs until `shutdown` flips to true (or its sender is dropped), then resigns: a
    /// priority-0 advert if master, VIPs removed.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<InstanceRequest>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let span = info_span!("vrrp", name = %self.name, vrid = self.vrid, iface = %self.interface);
        async move {
            let mut shell = Shell {
                held: false,
                last_beat: None,
                renew_at: None,
                garp: GarpSchedule::default(),
                link_up: true,
                penalty: 0,
                failed_tracks: Vec::new(),
                last_advert: None,
                counters: ShellCounters::default(),
            };
            if !self.resume {
                self.remove_stale_vips(&mut shell);
            }
            self.poll_track(&mut shell);
            let now = self.now();
            let command = if self.resume {
                Command::ResumeMaster
            } else {
                Command::Startup
            };
            if let Err(e) = self.router.handle_command(now, command) {
                error!(cause = %e, resume = self.resume, "startup rejected by the state machine");
            }
            self.drain(&mut shell);
            if let Some(tx) = self.started.take() {
                let _ = tx.send(());
            }
            self.publish_status(&shell);
            info!(vips = ?self.vips, priority = self.router.effective_priority(), resume = self.resume,
                since_daemon_start_ms = self.start.elapsed().as_millis() as u64,
                advert_interval_ms = self.router.config().advert_interval().as_millis() as u64,
                "vrrp instance started");

            let mut buf = vec![0u8; RX_BUFFER];
            let mut link_events = match LinkEvents::open() {
                Ok(ev) => Some(ev),
                Err(e) => {
                    shell.counters.track_errors += 1;
                    warn!(cause = %e, poll_ms = TRACK_POLL.as_millis() as u64,
                        "cannot subscribe to link notifications; polling link state only");
                    None
                }
            };
            // Read once more: a change between the first read and the subscription is not lost.
            self.poll_track(&mut shell);
            self.drain(&mut shell);
            let mut track_tick = tokio::time::interval(TRACK_POLL);
            track_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut proxy_rx = self.proxy.as_ref().map(|(_, rx)| rx.clone());
            let mut requests_open = true;
            loop {
                let timer = self.router.poll_timeout().map(|t| self.to_tokio(t));
                let garp_at = shell.garp.deadline().map(tokio::time::Instant::from_std);
                let renew_at = shell.renew_at.map(tokio::time::Instant::from_std);
                tokio::select! {
                    biased;
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            break;
                        }
                    }
                    rx = self.socket.recv(&mut buf) => {
                        if !self.on_receive(&mut shell, rx, &buf) {
                            // Persistent socket errors must not spin the loop.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    () = sleep_opt(timer) => {
                        let now = self.now();
                        self.router.handle_timeout(now);
                    }
                    req = requests.recv(), if requests_open => match req {
                        Some(r) => self.on_request(&mut shell, r),
                        None => requests_open = false,
                    },
                    ev = link_changed(&mut link_events) => {
                        match ev {
                            Ok(_) => shell.counters.link_events += 1,
                            Err(e) => {
                                shell.counters.track_errors += 1;
                                warn!(cause = %e, poll_ms = TRACK_POLL.as_millis() as u64,
                                    "link notifications failed; polling link state only");
                                link_events = None;
                            }
                        }
                        self.poll_track(&mut shell);
                    }
                    _ = track_tick.tick() => self.poll_track(&mut shell),
                    changed = proxy_changed(&mut proxy_rx) => {
                        if changed.is_err() {
                            proxy_rx = None; // the probe is gone (shutdown)
                        }
                        self.poll_track(&mut shell);
                    }
                    () = sleep_opt(garp_at) => {
                        if shell.garp.due(StdInstant::now()) {
                            self.send_garp(&mut shell);
                        }
                    }
                    () = sleep_opt(renew_at) => self.renew(&mut shell),
                }
                self.drain(&mut shell);
                self.publish_status(&shell);
            }

            info!("shutting down: resigning");
            let now = self.now();
            if let Err(e) = self.router.handle_command(now, Command::Shutdown) {
                debug!(cause = %e, "shutdown in a state that needs no resignation");
            }
            self.drain(&mut shell);
            if shell.held {
                // Not requested by the router any more but still on the interface (e.g. mid-resync).
                self.remove_vips(&mut shell);
            }
            self.publish_status(&shell);
        }
        .instrument(span)
        .await;
    }

    /// Handles one receive result; false when it was an error (the caller backs off).
    fn on_receive(&mut self, shell: &mut Shell, rx: std::io::Result<Rx>, buf: &[u8]) -> bool {
        match rx {
            Err(e) => {
                shell.counters.rx_errors += 1;
                warn!(cause = %e, errors = shell.counters.rx_errors, "failed to receive on the vrrp socket");
                false
            }
            Ok(Rx::Malformed(why)) => {
                shell.counters.rx_malformed += 1;
                debug!(
                    why,
                    count = shell.counters.rx_malformed,
                    "malformed ip packet dropped"
                );
                true
            }
            Ok(Rx::Packet { meta, start, end }) => {
                let now = self.now();
                let payload = buf.get(start..end).unwrap_or(&[]);
                // Invalid adverts are counted by the router and logged at debug there.
                if let Ok(tandem_vrrp_proto::RxDisposition::Processed) =
                    self.router.handle_packet(now, &meta, payload)
                {
                    shell.last_advert = Some(StdInstant::now());
                }
                true
            }
        }
    }

    fn on_request(&mut self, shell: &mut Shell, req: InstanceRequest) {
        match req {
            InstanceRequest::Announce(reply) => {
                let result = if self.router.state() == State::Master && shell.held {
                    info!("re-announcing the VIPs on request");
                    self.send_garp(shell);
                    shell.garp.start(StdInstant::now());
                    Ok(())
                } else {
                    Err(format!(
                        "not master (state {})",
                        state_text(self.router.state())
                    ))
                };
                let _ = reply.send(result);
            }
            InstanceRequest::Hold(d, reply) => {
                let now = self.now();
                let result = self
                    .router
                    .handle_command(now, Command::HoldBackup { until: now + d })
                    .map_err(|e| e.to_string());
                match &result {
                    Ok(()) => debug!(
                        hold_ms = d.as_millis() as u64,
                        "backup hold set on the control socket"
                    ),
                    Err(e) => info!(cause = %e, "hold request does not apply"),
                }
                let _ = reply.send(result);
            }
            InstanceRequest::Release(reply) => {
                let now = self.now();
                let result = self
                    .router
                    .handle_command(now, Command::ReleaseHold)
                    .map_err(|e| e.to_string());
                if result.is_ok() {
                    info!("backup hold released on the control socket");
                }
                let _ = reply.send(result);
            }
            InstanceRequest::Switchover(reply) => {
                let now = self.now();
                let result = self
                    .router
                    .handle_command(now, Command::Switchover)
                    .map_err(|e| e.to_string());
                match &result {
                    Ok(()) => info!("planned switchover requested on the control socket"),
                    Err(e) => info!(cause = %e, "switchover request does not apply"),
                }
                let _ = reply.send(result);
            }
        }
    }

    /// Executes every pending router output, in order.
    fn drain(&mut self, shell: &mut Shell) {
        while let Some(out) = self.router.poll_output() {
            match out {
                Output::StateChanged { from, to, reason } => {
                    info!(from = ?from, to = ?to, reason = ?reason, "vrrp state change");
                    if to != State::Master {
                        shell.garp.stop();
                    }
                    let (reason, detail) = reason_text(reason);
                    self.events.publish(Event {
                        event: "state".into(),
                        seq: 0,
                        ts_ms: 0,
                        instance: self.name.clone(),
                        vrid: self.vrid,
                        interface: self.interface.clone(),
                        from: Some(state_text(from).to_owned()),
                        to: Some(state_text(to).to_owned()),
                        reason: reason.to_owned(),
                        detail,
                    });
                }
                Output::Transmit(t) => {
                    if let Err(e) = self.socket.send(&t) {
                        shell.counters.tx_errors += 1;
                        warn!(dst = %t.dst, priority = t.advert.priority, cause = %e,
                            errors = shell.counters.tx_errors, "failed to send vrrp advert");
                    }
                    if t.advert.priority > 0 && self.router.state() == State::Master && shell.held {
                        self.heartbeat(shell);
                    }
                }
                Output::AddVips { .. } => self.install_vips(shell),
                Output::RemoveVips { .. } => self.remove_vips(shell),
                Output::SendGratuitous { .. } => {
                    self.send_garp(shell);
                    shell.garp.start(StdInstant::now());
                }
            }
        }
    }

    /// Tells the guardian we are alive; after a gap longer than its timeout (we were frozen and
    /// it may have removed our VIPs) reinstalls them and re-announces them.
    fn heartbeat(&mut self, shell: &mut Shell) {
        let now = StdInstant::now();
        let gap = shell.last_beat.map(|t| now.duration_since(t));
        shell.last_beat = Some(now);
        if gap.is_some_and(|g| g > self.guardian_timeout()) {
            shell.counters.resyncs += 1;
            warn!(
                gap_ms = gap.unwrap_or_default().as_millis() as u64,
                "heartbeat gap longer than the guardian timeout (daemon was frozen?); reinstalling VIPs"
            );
            self.install_vips(shell);
            self.send_garp(shell);
            shell.garp.start(now);
            self.events.publish(Event {
                event: "resync".into(),
                seq: 0,
                ts_ms: 0,
                instance: self.name.clone(),
                vrid: self.vrid,
                interface: self.interface.clone(),
                from: None,
                to: None,
                reason: "heartbeat_gap".to_owned(),
                detail: Some(format!("{} ms", gap.unwrap_or_default().as_millis())),
            });
            return;
        }
        if let Some(g) = &self.guardian {
            g.lock()
                .unwrap_or_else(|p| p.into_inner())
                .beat(&self.key());
        }
    }

    /// Adds (or replaces, renewing the lifetime of) every VIP, after telling the guardian.
    fn install_vips(&mut self, shell: &mut Shell) {
        if let Some(g) = &self.guardian {
            g.lock().unwrap_or_else(|p| p.into_inner()).hold(
                &self.key(),
                self.ifindex,
                self.guardian_timeout(),
                &self.vips,
                self.router.config().primary_address,
                &self.resign,
            );
        }
        for &(vip, prefix) in &self.vips {
            match self
                .nl
                .add_address(self.ifindex, vip, prefix, Some(VIP_LIFETIME))
            {
                Ok(()) => {
                    info!(vip = %vip, prefix, lifetime_s = VIP_LIFETIME.as_secs(), "VIP added")
                }
                Err(e) => {
                    shell.counters.vip_errors += 1;
                    error!(vip = %vip, prefix, cause = %e, "failed to add VIP {vip}/{prefix} on {}: {e}", self.interface);
                }
            }
        }
        let now = StdInstant::now();
        shell.held = true;
        shell.last_beat = Some(now);
        shell.renew_at = Some(now + VIP_RENEW);
    }

    fn remove_vips(&mut self, shell: &mut Shell) {
        for &(vip, prefix) in &self.vips {
            match self.nl.del_address(self.ifindex, vip, prefix) {
                Ok(true) => info!(vip = %vip, prefix, "VIP removed"),
                Ok(false) => info!(vip = %vip, prefix, "VIP already absent"),
                Err(e) => {
                    shell.counters.vip_errors += 1;
                    error!(vip = %vip, prefix, cause = %e, "failed to remove VIP {vip}/{prefix} from {}: {e}", self.interface);
                }
            }
        }
        if let Some(g) = &self.guardian {
            g.lock()
                .unwrap_or_else(|p| p.into_inner())
                .release(&self.key());
        }
        shell.held = false;
        shell.last_beat = None;
        shell.renew_at = None;
    }

    /// A previous run may have left VIPs behind (its guardian died with it): remove them before
    /// starting, as keepalived does.
    fn remove_stale_vips(&mut self, shell: &mut Shell) {
        for &(vip, prefix) in &self.vips {
            match self.nl.del_address(self.ifindex, vip, prefix) {
                Ok(true) => warn!(vip = %vip, prefix, "removed a VIP left over by a previous run"),
                Ok(false) => {}
                Err(e) => {
                    shell.counters.vip_errors += 1;
                    error!(vip = %vip, prefix, cause = %e, "failed to remove stale VIP");
                }
            }
        }
    }

    /// Renews the VIP lifetimes while held (NLM_F_REPLACE also restores a VIP someone removed).
    fn renew(&mut self, shell: &mut Shell) {
        if !shell.held {
            shell.renew_at = None;
            return;
        }
        shell.counters.renewals += 1;
        for &(vip, prefix) in &self.vips {
            if let Err(e) = self
                .nl
                .add_address(self.ifindex, vip, prefix, Some(VIP_LIFETIME))
            {
                shell.counters.vip_errors += 1;
                error!(vip = %vip, prefix, cause = %e, "failed to renew VIP lifetime");
            }
        }
        shell.renew_at = Some(StdInstant::now() + VIP_RENEW);
    }

    fn send_garp(&mut self, shell: &mut Shell) {
        let (Some(sock), Some(mac)) = (&self.garp, self.mac) else {
            return;
        };
        for &(ip, _) in &self.vips {
            // Gratuitous ARP for an IPv4 VIP, unsolicited Neighbor Advertisement for IPv6.
            match sock.send(&announcement_frame(mac, ip)) {
                Ok(()) => shell.counters.garp_sent += 1,
                Err(e) => {
                    shell.counters.garp_errors += 1;
                    warn!(vip = %ip, cause = %e, errors = shell.counters.garp_errors, "failed to send gratuitous arp / unsolicited na");
                }
            }
        }
    }

    /// Reads link state of the VRRP interface and of tracked interfaces, and proxy health;
    /// feeds changes to the router.
    fn poll_track(&mut self, shell: &mut Shell) {
        let link = match self.nl.link_by_index(self.ifindex) {
            Ok(l) => l.is_some_and(|l| l.up),
            Err(e) => {
                shell.counters.track_errors += 1;
                warn!(cause = %e, errors = shell.counters.track_errors, "failed to read link state");
                return;
            }
        };
        let now = self.now();
        if link != shell.link_up {
            shell.link_up = link;
            let cmd = if link {
                Command::LinkUp
            } else {
                Command::LinkDown
            };
            info!(link_up = link, "interface link state changed");
            if let Err(e) = self.router.handle_command(now, cmd) {
                debug!(cause = %e, "link command did not apply");
            }
        }
        let mut penalty: u8 = 0;
        let mut failed = Vec::new();
        for (name, weight) in &self.track_interfaces {
            let up = match self.nl.link_by_name(name) {
                Ok(l) => l.is_some_and(|l| l.up),
                Err(e) => {
                    shell.counters.track_errors += 1;
                    warn!(interface = %name, cause = %e, "failed to read tracked link state");
                    false
                }
            };
            if !up {
                penalty = penalty.saturating_add(*weight);
                failed.push(format!("interface {name}"));
            }
        }
        if let Some((weight, rx)) = &self.proxy
            && !*rx.borrow()
        {
            penalty = penalty.saturating_add(*weight);
            failed.push("proxy".to_owned());
        }
        if penalty != shell.penalty {
            info!(penalty, failed = ?failed, "track penalty changed");
            shell.penalty = penalty;
            if let Err(e) = self
                .router
                .handle_command(now, Command::SetTrackPenalty(penalty))
            {
                debug!(cause = %e, "track penalty not applied");
            }
        }
        shell.failed_tracks = failed;
    }

    fn publish_status(&self, shell: &Shell) {
        let c = self.router.counters();
        let invalid: std::collections::BTreeMap<String, u64> = InvalidReason::ALL
            .iter()
            .filter(|r| c.invalid(**r) > 0)
            .map(|r| (r.as_str().to_owned(), c.invalid(*r)))
            .collect();
        let invalid_total: u64 = InvalidReason::ALL.iter().map(|r| c.invalid(*r)).sum();
        let s = &shell.counters;
        let vips: Vec<String> = self.vips.iter().map(|(a, p)| format!("{a}/{p}")).collect();
        let status = InstanceStatus {
            name: self.name.clone(),
            vrid: self.vrid,
            interface: self.interface.clone(),
            state: state_text(self.router.state()).to_owned(),
            priority: self.router.config().priority,
            effective_priority: self.router.effective_priority(),
            master: self.router.master_address().map(|a| a.to_string()),
            vips,
            vips_held: shell.held,
            link_up: shell.link_up,
            track_penalty: shell.penalty,
            failed_tracks: shell.failed_tracks.clone(),
            hold_ms: self
                .router
                .hold_until()
                .map(|u| u.saturating_duration_since(self.now()).as_millis() as u64)
                .filter(|ms| *ms > 0),
            last_advert_ms: shell.last_advert.map(|t| t.elapsed().as_millis() as u64),
            proxy_tracking: match &self.proxy {
                Some((_, rx)) if *rx.borrow() => "up",
                Some(_) => "down",
                None => "off",
            }
            .to_owned(),
            counters: InstanceCounters {
                adverts_sent: c.adverts_sent,
                adverts_received: c.adverts_received,
                adverts_invalid: invalid_total,
                invalid_by_reason: invalid,
                priority_zero_sent: c.priority_zero_sent,
                priority_zero_received: c.priority_zero_received,
                transitions: c.transitions,
                became_master: c.became_master,
                became_backup: c.became_backup,
                rx_malformed: s.rx_malformed,
                rx_errors: s.rx_errors,
                tx_errors: s.tx_errors,
                vip_errors: s.vip_errors,
                garp_sent: s.garp_sent,
                garp_errors: s.garp_errors,
                track_errors: s.track_errors,
                link_events: s.link_events,
                resyncs: s.resyncs,
                renewals: s.renewals,
                guardian_write_errors: self
                    .guardian
                    .as_ref()
                    .map(|g| g.lock().unwrap_or_else(|p| p.into_inner()).write_errors),
            },
        };
        // Through `Value`: keys sorted, as the status always was.
        let status = serde_json::to_value(&status).unwrap_or(Value::Null);
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }
}

/// The next link notification, or never without a subscription.
async fn link_changed(events: &mut Option<LinkEvents>) -> std::io::Result<usize> {
    match events {
        Some(ev) => ev.changed().await,
        None => std::future::pending().await,
    }
}

/// The next change of the proxy's health, or never when the proxy is not tracked.
async fn proxy_changed(
    rx: &mut Option<watch::Receiver<bool>>,
) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever when `None`.
async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn state_text(s: State) -> &'static str {
    match s {
        State::Initialize => "initialize",
        State::Backup => "backup",
        State::Master => "master",
        State::Fault => "fault",
    }
}

fn reason_text(r: Reason) -> (&'static str, Option<String>) {
    match r {
        Reason::Startup => ("startup", None),
        Reason::AddressOwner => ("address_owner", None),
        Reason::MasterDown => ("master_down", None),
        Reason::Preempted { by, priority } => {
            ("preempted", Some(format!("by {by} priority {priority}")))
        }
        Reason::Shutdown => ("shutdown", None),
        Reason::Switchover => ("switchover", None),
        Reason::LinkDown => ("link_down", None),
        Reason::LinkUp => ("link_up", None),
        Reason::Hold => ("hold", None),
        Reason::Resumed => ("resumed", None),
    }
}
