//! The VRRPv3 router state machine of RFC 5798 §6 for one virtual router, sans-IO.
//!
//! Owns [`Router`] (states, timers, priorities, preemption, switchover) and its input
//! ([`Command`]) and output ([`Output`]) vocabularies. States, transitions and timers are
//! described in `LIFECYCLE.md` next to the crate manifest.
//! Must not perform IO or read the clock: outputs are *requests* the shell executes, and every
//! input carries the caller's `now`.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::codec::Advertisement;
use crate::config::{Config, ConfigError, OWNER_PRIORITY, centis};
use crate::counters::Counters;
use crate::time::Instant;
use crate::timer::{Timer, TimerTable};
use crate::validate::{Received, RxError, RxMeta, validate};

/// Protocol state of a virtual router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Not running: created, or after [`Command::Shutdown`]. No timers, no VIPs.
    Initialize,
    /// Monitoring the master; Master_Down_Timer armed. No VIPs.
    Backup,
    /// Forwarding for the VIPs and advertising; Adver_Timer armed. VIPs requested.
    Master,
    /// Administratively up but the link is down (keepalived's FAULT; not an RFC state).
    /// No timers, no VIPs. Left on [`Command::LinkUp`] through the startup event.
    Fault,
}

/// Why a transition happened, carried by [`Output::StateChanged`] and logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// [`Command::Startup`] as a non-owner: Initialize → Backup.
    Startup,
    /// [`Command::Startup`] with priority 255: Initialize → Master immediately.
    AddressOwner,
    /// Master_Down_Timer expired: Backup → Master.
    MasterDown,
    /// An advert with a higher priority (or equal priority and a greater primary address)
    /// arrived: Master → Backup.
    Preempted {
        /// Source (primary address) of the winning advert.
        by: IpAddr,
        /// Its priority.
        priority: u8,
    },
    /// [`Command::Shutdown`]: any state → Initialize.
    Shutdown,
    /// [`Command::Switchover`]: Master → Backup with a priority-0 advert.
    Switchover,
    /// [`Command::LinkDown`] (or Startup while the link is down): → Fault.
    LinkDown,
    /// [`Command::LinkUp`]: Fault → Backup, or Master for an address owner.
    LinkUp,
    /// [`Command::HoldBackup`] while Master: Master → Backup with a priority-0 advert.
    Hold,
    /// [`Command::ResumeMaster`]: Initialize → Master at once (a restarted daemon adopting a
    /// live master's VIPs).
    Resumed,
}

/// Operator and environment inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// RFC Startup event: Initialize → Backup (or Master if priority 255), or Fault if the link is down.
    Startup,
    /// RFC Shutdown event: a master resigns with a priority-0 advert and drops its VIPs;
    /// every state goes to Initialize.
    Shutdown,
    /// Sets the base priority (1..=255). Takes effect in the next advert / comparison;
    /// running timers are not re-armed.
    SetPriority(u8),
    /// Sets the total weight of failed tracked objects (computed by the shell). The effective
    /// priority is `base − penalty`, clamped to 1..=254 when the penalty is non-zero.
    SetTrackPenalty(u8),
    /// Planned hand-over: a (non-owner) master sends a priority-0 advert, drops its VIPs and goes
    /// Backup; for [`Config::switchover_hold`] it does not preempt. See `LIFECYCLE.md`.
    Switchover,
    /// The interface went down: Master/Backup → Fault (VIPs dropped, no advert can be sent).
    LinkDown,
    /// The interface came back: Fault → startup event (and the preempt delay restarts).
    LinkUp,
    /// Stay Backup until `until` (the split-brain guard): a master resigns (priority-0 advert,
    /// VIPs dropped); a backup whose Master_Down_Timer expires before `until` re-arms it at
    /// `until` instead of taking over. Adverts are still received and processed as usual.
    /// Sending it again with a later `until` refreshes the hold; at `until` (or on
    /// [`Command::ReleaseHold`]) the router behaves as a plain backup again: with no adverts
    /// heard it becomes master. Refused in Initialize and for an address owner.
    HoldBackup {
        /// End of the hold (protocol time, as `now`).
        until: Instant,
    },
    /// Ends a [`Command::HoldBackup`] early: the Master_Down_Timer is pulled in to at most
    /// `now + Master_Down_Interval`. Refused when no hold is in force.
    ReleaseHold,
    /// Startup mode of a successor daemon that adopted the VIPs of a master that ran
    /// moments ago (same node, previous process): Initialize → Master at once (advert now,
    /// VIPs requested again, gratuitous announcements), without the Master_Down wait of
    /// [`Command::Startup`]. The shell must only use it when this node was master within the
    /// last Master_Down_Interval and the VIPs are still installed; if a peer took over
    /// meanwhile, the normal advert comparison settles it. Link down: → Fault as Startup.
    ResumeMaster,
}

/// A command that does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The command has no effect in the current state (e.g. Switchover while Backup).
    #[error("vrrp command {command:?} for vrid {vrid} does not apply in state {state:?}")]
    NotApplicable {
        /// The virtual router.
        vrid: u8,
        /// The command.
        command: Command,
        /// The state it arrived in.
        state: State,
    },
    /// Priority 0 is reserved for resigning adverts.
    #[error("vrrp priority 0 for vrid {vrid} is reserved, use 1..=255")]
    Priority {
        /// The virtual router.
        vrid: u8,
    },
}

/// One advert to put on the wire as the payload of an IP packet with protocol 112.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// IP source: the router's primary address (the checksum covers it).
    pub src: IpAddr,
    /// IP destination: the VRRP group, or one unicast peer.
    pub dst: IpAddr,
    /// TTL / hop limit to send with: always 255.
    pub ttl: u8,
    /// The encoded VRRP message, checksum included.
    pub payload: Vec<u8>,
    /// The same advert, decoded, for logs and tests.
    pub advert: Advertisement,
}

/// Requests drained with [`Router::poll_output`]; execute them in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this advert.
    Transmit(Transmit),
    /// Install these VIPs on the interface (and start answering ARP/ND for them).
    AddVips {
        /// The configured virtual addresses.
        addresses: Vec<IpAddr>,
    },
    /// Remove these VIPs from the interface.
    RemoveVips {
        /// The configured virtual addresses.
        addresses: Vec<IpAddr>,
    },
    /// Announce these VIPs: one gratuitous ARP per IPv4 address ([`crate::garp_frame`]), one
    /// unsolicited NA per IPv6 address ([`crate::unsolicited_na_frame`]). The shell owns the
    /// repetition policy (e.g. keepalived sends 5, and 5 more 5 s later).
    SendGratuitous {
        /// The configured virtual addresses.
        addresses: Vec<IpAddr>,
    },
    /// The state changed; emitted before the actions of the transition.
    StateChanged {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
        /// Why.
        reason: Reason,
    },
}

/// What [`Router::handle_packet`] did with a packet that passed validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxDisposition {
    /// A valid advert for us, fed to the state machine (it may still have been discarded by the
    /// RFC rules, e.g. a lower priority seen by a preempting backup).
    Processed,
    /// For another virtual router.
    OtherVrid {
        /// Its VRID.
        vrid: u8,
    },
    /// Our own advert looped back.
    Looped,
    /// Valid, but we are in Initialize or Fault.
    NotRunning,
}

/// One VRRPv3 virtual router (RFC 5798 §6), driven by the caller.
///
/// # Contract
///
/// * **Inputs** are the `handle_*` methods, each taking `now`:
///   [`handle_packet`](Self::handle_packet) for every received IP packet with protocol 112
///   (payload trimmed to the IP length, plus [`RxMeta`]),
///   [`handle_timeout`](Self::handle_timeout) when the instant returned by
///   [`poll_timeout`](Self::poll_timeout) has been reached (calling it early or spuriously is
///   harmless), and [`handle_command`](Self::handle_command) for operator/environment events.
/// * **Call order**: [`Router::new`] (state Initialize, nothing queued), then
///   `handle_command(Startup)`. After *every* `handle_*` call, drain
///   [`poll_output`](Self::poll_output) until `None`, executing each [`Output`] in the order
///   returned, then re-read [`poll_timeout`](Self::poll_timeout) and re-arm the shell's single timer.
/// * **Drain order** within one input: `StateChanged` first (if any), then the transition's
///   actions in RFC order: `Transmit` adverts, then `AddVips`, then `SendGratuitous`
///   (becoming master), or `Transmit` (priority 0), then `RemoveVips` (resigning).
/// * **Time** must not go backwards between calls (checked with `debug_assert!`; release
///   builds clamp to the latest instant seen). A large forward jump is legal: expired timers
///   fire once, late, and re-arm from `now` (no burst of adverts).
/// * **Outputs are requests.** The core assumes they succeed; VIPs are "requested" from
///   `AddVips` until `RemoveVips`. If the shell fails to apply one it should log, count and retry.
/// * **Hostile input** never panics: invalid packets return an [`RxError`] and bump
///   [`Counters::invalid`]; the shell logs and drops.
/// * In debug builds every mutating method ends with `check_invariants()`.
#[derive(Debug)]
pub struct Router {
    config: Config,
    state: State,
    /// Startup received and no Shutdown since.
    admin_up: bool,
    /// Last link state reported (assumed up at creation).
    link_up: bool,
    base_priority: u8,
    track_penalty: u8,
    /// Master_Adver_Interval: learned from the master's adverts while Backup.
    master_adver_interval: Duration,
    timers: TimerTable,
    outputs: VecDeque<Output>,
    /// AddVips emitted and no RemoveVips since.
    vips_requested: bool,
    counters: Counters,
    /// Latest `now` seen, to enforce monotonic time.
    now: Instant,
    /// End of the keepalived-style preempt delay window, started at startup / link up.
    preempt_delay_until: Option<Instant>,
    /// End of the no-preempt hold started by a switchover.
    switchover_hold_until: Option<Instant>,
    /// End of the hold set by [`Command::HoldBackup`]; in force while `now < until`.
    hold_until: Option<Instant>,
    /// Primary address of the master whose advert we last accepted (Backup), or ours (Master).
    master: Option<IpAddr>,
    /// An address-list mismatch was already logged; cleared by a matching advert.
    mismatch_logged: bool,
}

impl Router {
    /// Creates a router in Initialize. Nothing happens until [`Command::Startup`].
    pub fn new(config: Config, now: Instant) -> Result<Router, ConfigError> {
        config.validate()?;
        let router = Router {
            state: State::Initialize,
            admin_up: false,
            link_up: true,
            base_priority: config.priority,
            track_penalty: 0,
            master_adver_interval: config.advert_interval(),
            timers: TimerTable::default(),
            outputs: VecDeque::new(),
            vips_requested: false,
            counters: Counters::default(),
            now,
            preempt_delay_until: None,
            switchover_hold_until: None,
            hold_until: None,
            master: None,
            mismatch_logged: false,
            config,
        };
        router.check_invariants();
        Ok(router)
    }

    // ----- inputs -------------------------------------------------------------------------

    /// Feeds one received VRRP packet (the IP payload) with its IP metadata.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        meta: &RxMeta,
        bytes: &[u8],
    ) -> Result<RxDisposition, RxError> {
        let now = self.advance(now);
        let result = self.process_packet(now, meta, bytes);
        self.check_invariants();
        result
    }

    /// Fires every timer whose deadline is `<= now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        while let Some(timer) = self.timers.take_expired(now) {
            match timer {
                Timer::MasterDown => {
                    debug_assert_eq!(
                        self.state,
                        State::Backup,
                        "master down timer outside backup"
                    );
                    match self.hold_until.filter(|u| now < *u) {
                        // Held: no take-over before the hold ends.
                        Some(until) => self.timers.set(Timer::MasterDown, until),
                        None => self.become_master(now, Reason::MasterDown),
                    }
                }
                Timer::Adver => {
                    debug_assert_eq!(self.state, State::Master, "adver timer outside master");
                    self.send_advert(self.effective_priority());
                    self.timers
                        .set(Timer::Adver, now + self.config.advert_interval());
                }
            }
        }
        self.check_invariants();
    }

    /// Applies an operator or environment command.
    pub fn handle_command(&mut self, now: Instant, command: Command) -> Result<(), CommandError> {
        let now = self.advance(now);
        let result = self.process_command(now, command);
        if result.is_err() {
            self.counters.commands_ignored += 1;
        }
        self.check_invariants();
        result
    }

    // ----- outputs ------------------------------------------------------------------------

    /// Next request to execute, in order; `None` when drained.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Earliest instant at which [`Router::handle_timeout`] must be called, if any timer is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ----- observers ----------------------------------------------------------------------

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The validated configuration (base priority as configured, see [`Router::effective_priority`]).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Priority used in adverts and comparisons: base minus track penalty (see [`Command::SetTrackPenalty`]).
    pub fn effective_priority(&self) -> u8 {
        if self.track_penalty == 0 {
            self.base_priority
        } else {
            self.base_priority
                .saturating_sub(self.track_penalty)
                .clamp(1, OWNER_PRIORITY - 1)
        }
    }

    /// Whether this router currently owns the addresses (effective priority 255).
    pub fn is_owner(&self) -> bool {
        self.effective_priority() == OWNER_PRIORITY
    }

    /// Master_Adver_Interval (RFC 5798 §6.1).
    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// Skew_Time = ((256 − priority) × Master_Adver_Interval) / 256, computed in nanoseconds.
    pub fn skew_time(&self) -> Duration {
        let mai = self.master_adver_interval.as_nanos();
        let skew = (256 - u128::from(self.effective_priority())) * mai / 256;
        Duration::from_nanos(u64::try_from(skew).unwrap_or(u64::MAX))
    }

    /// Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        3 * self.master_adver_interval + self.skew_time()
    }

    /// Deadline of `timer`, if armed.
    pub fn timer(&self, timer: Timer) -> Option<Instant> {
        self.timers.get(timer)
    }

    /// Primary address of the current master as far as we know (ours when Master).
    pub fn master_address(&self) -> Option<IpAddr> {
        self.master
    }

    /// End of the [`Command::HoldBackup`] hold, if one was set and not released (it may
    /// already lie in the past: a hold is in force while `now < until`).
    pub fn hold_until(&self) -> Option<Instant> {
        self.hold_until
    }

    /// Whether VIPs are currently requested (AddVips emitted, no RemoveVips since).
    pub fn vips_requested(&self) -> bool {
        self.vips_requested
    }

    /// Whether the shell should accept packets addressed to the VIPs: Master and either owner
    /// or Accept_Mode (RFC 5798 §6.4.3).
    pub fn accepts_vip_traffic(&self) -> bool {
        self.state == State::Master && (self.is_owner() || self.config.accept_mode)
    }

    /// Event counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    // ----- internals ----------------------------------------------------------------------

    /// Records `now`, enforcing monotonic time; returns the instant to use.
    fn advance(&mut self, now: Instant) -> Instant {
        debug_assert!(
            now >= self.now,
            "vrrp vrid {}: time went backwards ({now:?} < {:?})",
            self.config.vrid,
            self.now
        );
        self.now = self.now.max(now);
        self.now
    }

    fn process_packet(
        &mut self,
        now: Instant,
        meta: &RxMeta,
        bytes: &[u8],
    ) -> Result<RxDisposition, RxError> {
        let vrid = self.config.vrid;
        let received = match validate(meta, bytes, &self.config, self.effective_priority()) {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, RxError::AddressList { .. }) {
                    self.counters.address_list_mismatch += 1;
                }
                self.counters.count_invalid(e.reason());
                debug!(vrid, src = %meta.src, reason = e.reason().as_str(), error = %e, "vrrp packet discarded");
                return Err(e);
            }
        };
        let (advert, address_mismatch) = match received {
            Received::OtherVrid { vrid } => {
                self.counters.other_vrid += 1;
                return Ok(RxDisposition::OtherVrid { vrid });
            }
            Received::Looped => {
                self.counters.own_looped += 1;
                return Ok(RxDisposition::Looped);
            }
            Received::Ours {
                advert,
                address_mismatch,
            } => (advert, address_mismatch),
        };
        if address_mismatch {
            self.counters.address_list_mismatch += 1;
            if !self.mismatch_logged {
                warn!(vrid, src = %meta.src, advertised = ?advert.addresses, configured = ?self.config.virtual_addresses,
                    "vrrp advert address list differs from configuration");
                self.mismatch_logged = true;
            }
        } else {
            self.mismatch_logged = false;
        }
        if matches!(self.state, State::Initialize | State::Fault) {
            self.counters.received_while_down += 1;
            return Ok(RxDisposition::NotRunning);
        }
        self.counters.adverts_received += 1;
        if advert.priority == 0 {
            self.counters.priority_zero_received += 1;
        }
        match self.state {
            State::Backup => self.backup_receive(now, meta.src, &advert),
            State::Master => self.master_receive(now, meta.src, &advert),
            State::Initialize | State::Fault => {}
        }
        Ok(RxDisposition::Processed)
    }

    /// RFC 5798 §6.4.2, "If an ADVERTISEMENT is received".
    fn backup_receive(&mut self, now: Instant, src: IpAddr, advert: &Advertisement) {
        if advert.priority == 0 {
            self.timers.set(Timer::MasterDown, now + self.skew_time());
            return;
        }
        if !self.preempting(now) || advert.priority >= self.effective_priority() {
            self.master_adver_interval = centis(advert.max_adver_int_cs);
            self.timers
                .set(Timer::MasterDown, now + self.master_down_interval());
            self.master = Some(src);
        }
        // Otherwise: preempting and the sender is lower priority; discard, so that our
        // Master_Down_Timer expires and we take over.
    }

    /// RFC 5798 §6.4.3, "If an ADVERTISEMENT is received".
    fn master_receive(&mut self, now: Instant, src: IpAddr, advert: &Advertisement) {
        if advert.priority == 0 {
            // Another router resigned: assert ourselves at once so backups don't take over.
            self.send_advert(self.effective_priority());
            self.timers
                .set(Timer::Adver, now + self.config.advert_interval());
            return;
        }
        let local = self.effective_priority();
        let wins = advert.priority > local
            || (advert.priority == local && address_greater(src, self.config.primary_address));
        if wins {
            self.master_adver_interval = centis(advert.max_adver_int_cs);
            self.master = Some(src);
            self.become_backup(
                now,
                Reason::Preempted {
                    by: src,
                    priority: advert.priority,
                },
            );
        }
        // Otherwise discard: we stay master and our next advert makes the other one yield.
    }

    fn process_command(&mut self, now: Instant, command: Command) -> Result<(), CommandError> {
        let vrid = self.config.vrid;
        let not_applicable = Err(CommandError::NotApplicable {
            vrid,
            command,
            state: self.state,
        });
        match command {
            Command::Startup => {
                if self.state != State::Initialize {
                    return not_applicable;
                }
                self.admin_up = true;
                if self.link_up {
                    self.startup_event(now, Reason::Startup);
                } else {
                    self.transition(State::Fault, Reason::LinkDown);
                }
            }
            Command::Shutdown => {
                if self.state == State::Initialize {
                    return not_applicable;
                }
                self.admin_up = false;
                self.hold_until = None;
                let was = self.state;
                self.transition(State::Initialize, Reason::Shutdown);
                self.timers.stop_all();
                if was == State::Master {
                    self.send_advert(0);
                    self.remove_vips();
                }
                self.clear_role();
            }
            Command::SetPriority(p) => {
                if p == 0 {
                    return Err(CommandError::Priority { vrid });
                }
                self.base_priority = p;
            }
            Command::SetTrackPenalty(w) => self.track_penalty = w,
            Command::Switchover => {
                if self.state != State::Master || self.is_owner() {
                    return not_applicable;
                }
                self.switchover_hold_until = Some(now + self.config.switchover_hold);
                self.transition(State::Backup, Reason::Switchover);
                self.timers.stop(Timer::Adver);
                self.send_advert(0);
                self.remove_vips();
                self.master = None;
                self.timers
                    .set(Timer::MasterDown, now + self.master_down_interval());
            }
            Command::HoldBackup { until } => {
                if self.state == State::Initialize || self.is_owner() {
                    return not_applicable;
                }
                self.hold_until = Some(until);
                if self.state == State::Master && now < until {
                    self.transition(State::Backup, Reason::Hold);
                    self.timers.stop(Timer::Adver);
                    self.send_advert(0);
                    self.remove_vips();
                    self.master = None;
                    self.timers
                        .set(Timer::MasterDown, now + self.master_down_interval());
                }
            }
            Command::ReleaseHold => {
                if self.hold_until.take().is_none() {
                    return not_applicable;
                }
                if self.state == State::Backup {
                    let latest = now + self.master_down_interval();
                    if self
                        .timers
                        .get(Timer::MasterDown)
                        .is_none_or(|t| t > latest)
                    {
                        self.timers.set(Timer::MasterDown, latest);
                    }
                }
            }
            Command::ResumeMaster => {
                if self.state != State::Initialize {
                    return not_applicable;
                }
                self.admin_up = true;
                if self.link_up {
                    self.preempt_delay_until = None;
                    self.master_adver_interval = self.config.advert_interval();
                    self.become_master(now, Reason::Resumed);
                } else {
                    self.transition(State::Fault, Reason::LinkDown);
                }
            }
            Command::LinkDown => {
                if !self.link_up {
                    return not_applicable;
                }
                self.link_up = false;
                if matches!(self.state, State::Master | State::Backup) {
                    let was = self.state;
                    self.transition(State::Fault, Reason::LinkDown);
                    self.timers.stop_all();
                    if was == State::Master {
                        self.remove_vips();
                    }
                    self.clear_role();
                }
            }
            Command::LinkUp => {
                if self.link_up {
                    return not_applicable;
                }
                self.link_up = true;
                if self.state == State::Fault {
                    self.startup_event(now, Reason::LinkUp);
                }
            }
        }
        Ok(())
    }

    /// RFC 5798 §6.4.1 "If a Startup event is received" (also used when leaving Fault).
    fn startup_event(&mut self, now: Instant, reason: Reason) {
        self.preempt_delay_until =
            (!self.config.preempt_delay.is_zero()).then(|| now + self.config.preempt_delay);
        self.master_adver_interval = self.config.advert_interval();
        // A hold (split-brain guard) outranks ownership: an owner under hold starts as Backup.
        if self.is_owner() && self.hold_until.is_none_or(|u| now >= u) {
            let reason = if reason == Reason::Startup {
                Reason::AddressOwner
            } else {
                reason
            };
            self.become_master(now, reason);
        } else {
            self.transition(State::Backup, reason);
            self.timers
                .set(Timer::MasterDown, now + self.master_down_interval());
        }
    }

    fn become_master(&mut self, now: Instant, reason: Reason) {
        self.transition(State::Master, reason);
        self.timers.stop(Timer::MasterDown);
        self.send_advert(self.effective_priority());
        self.vips_requested = true;
        let addresses = self.config.virtual_addresses.clone();
        self.outputs.push_back(Output::AddVips {
            addresses: addresses.clone(),
        });
        self.outputs.push_back(Output::SendGratuitous { addresses });
        self.master = Some(self.config.primary_address);
        self.timers
            .set(Timer::Adver, now + self.config.advert_interval());
    }

    /// Master → Backup on a better advert (Master_Adver_Interval already learned).
    fn become_backup(&mut self, now: Instant, reason: Reason) {
        self.transition(State::Backup, reason);
        self.timers.stop(Timer::Adver);
        self.remove_vips();
        self.timers
            .set(Timer::MasterDown, now + self.master_down_interval());
    }

    fn remove_vips(&mut self) {
        if self.vips_requested {
            self.vips_requested = false;
            let addresses = self.config.virtual_addresses.clone();
            self.outputs.push_back(Output::RemoveVips { addresses });
        }
    }

    /// Forgets role-specific state when leaving Backup/Master for Initialize/Fault.
    fn clear_role(&mut self) {
        self.master = None;
        self.switchover_hold_until = None;
        self.preempt_delay_until = None;
    }

    /// Whether Preempt_Mode is in force right now (configured, and no delay/hold window open).
    fn preempting(&self, now: Instant) -> bool {
        let open = |until: Option<Instant>| until.is_some_and(|u| now < u);
        self.config.preempt && !open(self.preempt_delay_until) && !open(self.switchover_hold_until)
    }

    fn transition(&mut self, to: State, reason: Reason) {
        let from = self.state;
        debug_assert_ne!(from, to, "vrrp vrid {}: self-transition", self.config.vrid);
        self.state = to;
        self.counters.transitions += 1;
        match to {
            State::Master => self.counters.became_master += 1,
            State::Backup => self.counters.became_backup += 1,
            State::Initialize | State::Fault => {}
        }
        info!(vrid = self.config.vrid, from = ?from, to = ?to, reason = ?reason, "vrrp state change");
        self.outputs
            .push_back(Output::StateChanged { from, to, reason });
    }

    /// Queues one advert per destination (the group, or each unicast peer).
    fn send_advert(&mut self, priority: u8) {
        let advert = Advertisement {
            vrid: self.config.vrid,
            priority,
            max_adver_int_cs: self.config.advert_interval_cs,
            addresses: self.config.virtual_addresses.clone(),
        };
        let src = self.config.primary_address;
        let group = [self.config.group()];
        let dsts: &[IpAddr] = if self.config.unicast_peers.is_empty() {
            &group
        } else {
            &self.config.unicast_peers
        };
        for &dst in dsts {
            match advert.encode(src, dst) {
                Ok(payload) => {
                    self.counters.adverts_sent += 1;
                    if priority == 0 {
                        self.counters.priority_zero_sent += 1;
                    }
                    let t = Transmit {
                        src,
                        dst,
                        ttl: crate::VRRP_TTL,
                        payload,
                        advert: advert.clone(),
                    };
                    self.outputs.push_back(Output::Transmit(t));
                }
                Err(e) => {
                    // Config::validate guarantees families, counts and interval; this is a bug.
                    debug_assert!(false, "validated config failed to encode: {e}");
                    tracing::error!(vrid = self.config.vrid, error = %e, "vrrp advert not sent");
                }
            }
        }
    }

    /// Read-only consistency checks, run at the end of every public mutating method in debug builds.
    #[cfg(debug_assertions)]
    fn check_invariants(&self) {
        let vrid = self.config.vrid;
        let (down, adver) = (
            self.timers.get(Timer::MasterDown),
            self.timers.get(Timer::Adver),
        );
        match self.state {
            State::Initialize => {
                assert!(!self.admin_up, "vrid {vrid}: Initialize while admin up");
                assert!(
                    down.is_none() && adver.is_none(),
                    "vrid {vrid}: timers armed in Initialize"
                );
                assert!(
                    !self.vips_requested,
                    "vrid {vrid}: VIPs requested in Initialize"
                );
            }
            State::Fault => {
                assert!(
                    self.admin_up && !self.link_up,
                    "vrid {vrid}: Fault without link down"
                );
                assert!(
                    down.is_none() && adver.is_none(),
                    "vrid {vrid}: timers armed in Fault"
                );
                assert!(!self.vips_requested, "vrid {vrid}: VIPs requested in Fault");
            }
            State::Backup => {
                assert!(
                    self.admin_up && self.link_up,
                    "vrid {vrid}: Backup while down"
                );
                assert!(
                    down.is_some() && adver.is_none(),
                    "vrid {vrid}: Backup needs exactly Master_Down_Timer"
                );
                assert!(
                    !self.vips_requested,
                    "vrid {vrid}: VIPs requested in Backup"
                );
            }
            State::Master => {
                assert!(
                    self.admin_up && self.link_up,
                    "vrid {vrid}: Master while down"
                );
                assert!(
                    adver.is_some() && down.is_none(),
                    "vrid {vrid}: Master needs exactly Adver_Timer"
                );
                assert!(self.vips_requested, "vrid {vrid}: Master without VIPs");
                assert!(
                    self.hold_until.is_none_or(|u| u <= self.now),
                    "vrid {vrid}: Master while a backup hold is in force"
                );
                assert_eq!(
                    self.master,
                    Some(self.config.primary_address),
                    "vrid {vrid}: Master not self"
                );
            }
        }
        assert!(
            self.effective_priority() >= 1,
            "vrid {vrid}: effective priority 0"
        );
        assert!(
            !self.master_adver_interval.is_zero(),
            "vrid {vrid}: zero Master_Adver_Interval"
        );
    }

    #[cfg(not(debug_assertions))]
    fn check_invariants(&self) {}
}

/// Unsigned integer comparison of two addresses in network byte order (RFC 5798 §6.4.3).
/// Addresses of different families never compare greater.
fn address_greater(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => u32::from(a) > u32::from(b),
        (IpAddr::V6(a), IpAddr::V6(b)) => u128::from(a) > u128::from(b),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
