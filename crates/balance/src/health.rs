//! Health hysteresis (HAProxy `rise`/`fall`), passive failure detection, and the reasons for
//! every server state change.
//!
//! Owns: the pure [`observe`] function, [`HealthState`] (from a server's [`InitState`], HAProxy's `init-state`),
//! and [`ServerMonitor`], which combines active check results, passive observations and admin
//! commands into one [`Status`] and reports each change as a [`Transition`] with a [`Reason`].
//!
//! Must not run probes, read clocks, or log: the async checker in the proxy runs the probe,
//! feeds the result in, and logs/counts the returned transition.
//!
//! Semantics (HAProxy):
//! - an up server goes down after `fall` *consecutive* failed checks;
//! - a down server comes up after `rise` *consecutive* passed checks;
//! - a result that agrees with the current state resets the opposite streak;
//! - passive detection (`observe layer4` / `layer7` with `on-error mark-down`): `n` consecutive
//!   connect failures, or `n` consecutive 5xx responses, mark the server down at once; it then
//!   needs `rise` passed checks to come back, like any other down server.

use std::fmt;

use crate::error::BalanceError;
use crate::server::{AdminState, InitState};

/// Health as decided by the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Passing checks.
    Up,
    /// Failing checks.
    Down,
}

/// Hysteresis state: the current health and how many consecutive results disagreed with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HealthState {
    /// Current health.
    pub health: Health,
    /// Consecutive results contrary to `health` seen so far (always `< threshold`).
    pub streak: u32,
}

impl HealthState {
    /// Steady up state (no pending failures).
    pub const UP: Self = Self {
        health: Health::Up,
        streak: 0,
    };
    /// Steady down state (no pending successes).
    pub const DOWN: Self = Self {
        health: Health::Down,
        streak: 0,
    };

    /// Initial state for `init`, given the thresholds.
    pub fn initial(init: InitState, rise: u32, fall: u32) -> Self {
        match init {
            InitState::FullyUp => Self::UP,
            InitState::Up => Self {
                health: Health::Up,
                streak: fall.saturating_sub(1),
            },
            InitState::Down => Self {
                health: Health::Down,
                streak: rise.saturating_sub(1),
            },
            InitState::FullyDown => Self::DOWN,
        }
    }
}

/// Feeds one check result into the hysteresis; returns the new state and whether health flipped.
///
/// `rise` and `fall` of 0 behave like 1 (validated configs never pass 0; see
/// [`HealthConfig::new`]).
pub fn observe(state: HealthState, success: bool, rise: u32, fall: u32) -> (HealthState, bool) {
    let (agrees, threshold, flipped_to) = match state.health {
        Health::Up => (success, fall.max(1), HealthState::DOWN),
        Health::Down => (!success, rise.max(1), HealthState::UP),
    };
    if agrees {
        let steady = HealthState {
            health: state.health,
            streak: 0,
        };
        return (steady, false);
    }
    let streak = state.streak.saturating_add(1);
    if streak >= threshold {
        (flipped_to, true)
    } else {
        (
            HealthState {
                health: state.health,
                streak,
            },
            false,
        )
    }
}

/// Thresholds for one server's health tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HealthConfig {
    /// Consecutive passed checks to come up (HAProxy default 2).
    pub rise: u32,
    /// Consecutive failed checks to go down (HAProxy default 3).
    pub fall: u32,
    /// Consecutive connect failures on real traffic that mark the server down; `None` disables.
    pub passive_connect_failures: Option<u32>,
    /// Consecutive 5xx responses on real traffic that mark the server down; `None` disables.
    pub passive_5xx: Option<u32>,
}

impl HealthConfig {
    /// Validated thresholds with passive detection disabled.
    pub fn new(rise: u32, fall: u32) -> Result<Self, BalanceError> {
        if rise == 0 {
            return Err(BalanceError::ZeroThreshold { name: "rise" });
        }
        if fall == 0 {
            return Err(BalanceError::ZeroThreshold { name: "fall" });
        }
        Ok(Self {
            rise,
            fall,
            passive_connect_failures: None,
            passive_5xx: None,
        })
    }
}

impl Default for HealthConfig {
    /// HAProxy's defaults: `rise 2`, `fall 3`, no passive detection.
    fn default() -> Self {
        Self {
            rise: 2,
            fall: 3,
            passive_connect_failures: None,
            passive_5xx: None,
        }
    }
}

/// Why an active health check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckFailure {
    /// The TCP (or TLS) connection could not be established.
    Connect,
    /// No answer within the check timeout.
    Timeout,
    /// The answer had an unexpected HTTP status.
    Status(u16),
    /// The answer was malformed or did not match the expected content.
    Protocol,
}

/// Why a server's [`Status`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The last of `fall` consecutive active checks failed this way.
    CheckFailed(CheckFailure),
    /// `rise` consecutive active checks passed.
    CheckPassed,
    /// This many consecutive connect failures on real traffic.
    PassiveConnectFailures(u32),
    /// This many consecutive 5xx responses on real traffic.
    Passive5xx(u32),
    /// The operator put the server in maintenance.
    AdminMaint,
    /// The operator put the server in drain.
    AdminDrain,
    /// The operator made the server ready again.
    AdminReady,
}

/// Operational status: admin state and health together (what "show servers" prints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    /// Operator's choice.
    pub admin: AdminState,
    /// Checks' verdict.
    pub health: Health,
}

impl Status {
    /// Whether new (non-persistent) users may be sent here, weights and limits aside.
    pub fn accepts_new(self) -> bool {
        self.admin == AdminState::Ready && self.health == Health::Up
    }

    /// Whether users persisted to this server may still be sent here (drain keeps them).
    pub fn accepts_persistent(self) -> bool {
        self.admin != AdminState::Maint && self.health == Health::Up
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match (self.admin, self.health) {
            (AdminState::Ready, Health::Up) => "UP",
            (AdminState::Ready, Health::Down) => "DOWN",
            (AdminState::Drain, Health::Up) => "DRAIN",
            (AdminState::Drain, Health::Down) => "DRAIN (down)",
            (AdminState::Maint, Health::Up) => "MAINT",
            (AdminState::Maint, Health::Down) => "MAINT (down)",
        };
        f.write_str(text)
    }
}

/// A change of [`Status`], to be logged and counted by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transition {
    /// Status before.
    pub from: Status,
    /// Status after.
    pub to: Status,
    /// What caused it.
    pub reason: Reason,
}

impl Transition {
    /// Whether the server just became able to take new users (from down, maint or drain).
    ///
    /// The caller records `now` as the server's `up_since` ([`crate::Live::up_since`]) when this
    /// is true, which starts its slow-start ramp.
    pub fn came_up(&self) -> bool {
        !self.from.accepts_new() && self.to.accepts_new()
    }
}

/// Per-server runtime state machine: active checks + passive observations + admin commands.
///
/// Contract: every input method returns `Some(Transition)` exactly when [`ServerMonitor::status`]
/// changed, so the caller can log and count each change once, where it happens. Inputs carry no
/// time; slow start is driven by the caller remembering when a transition went to `Up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMonitor {
    config: HealthConfig,
    state: HealthState,
    admin: AdminState,
    connect_failures: u32,
    responses_5xx: u32,
}

impl ServerMonitor {
    /// A monitor in the given initial admin and health state.
    pub fn new(config: HealthConfig, admin: AdminState, init: InitState) -> Self {
        Self {
            config,
            state: HealthState::initial(init, config.rise, config.fall),
            admin,
            connect_failures: 0,
            responses_5xx: 0,
        }
    }

    /// Current status.
    pub fn status(&self) -> Status {
        Status {
            admin: self.admin,
            health: self.state.health,
        }
    }

    /// Current hysteresis state (for "show servers" detail).
    pub fn health_state(&self) -> HealthState {
        self.state
    }

    /// Current thresholds.
    pub fn config(&self) -> HealthConfig {
        self.config
    }

    /// Replaces the thresholds (config reload), keeping health and admin state.
    ///
    /// A pending streak is clamped below the new threshold and passive counters restart, so
    /// a reload never flips the server by itself and never returns a transition.
    pub fn reconfigure(&mut self, config: HealthConfig) {
        let threshold = match self.state.health {
            Health::Up => config.fall.max(1),
            Health::Down => config.rise.max(1),
        };
        self.state.streak = self.state.streak.min(threshold - 1);
        self.config = config;
        self.connect_failures = 0;
        self.responses_5xx = 0;
    }

    /// Feeds an active check result (`Ok(())` = passed).
    pub fn on_check(&mut self, result: Result<(), CheckFailure>) -> Option<Transition> {
        let before = self.status();
        let (state, flipped) = observe(
            self.state,
            result.is_ok(),
            self.config.rise,
            self.config.fall,
        );
        self.state = state;
        if !flipped {
            return None;
        }
        if state.health == Health::Up {
            // A fresh start: passive counters from before the outage are stale.
            self.connect_failures = 0;
            self.responses_5xx = 0;
        }
        let reason = match result {
            Ok(()) => Reason::CheckPassed,
            Err(failure) => Reason::CheckFailed(failure),
        };
        self.changed(before, reason)
    }

    /// Feeds the outcome of a connection attempt made for real traffic.
    pub fn on_connect(&mut self, ok: bool) -> Option<Transition> {
        if ok {
            self.connect_failures = 0;
            return None;
        }
        self.connect_failures = self.connect_failures.saturating_add(1);
        let limit = self.config.passive_connect_failures?;
        if self.connect_failures < limit.max(1) {
            return None;
        }
        let n = self.connect_failures;
        self.connect_failures = 0;
        self.mark_down(Reason::PassiveConnectFailures(n))
    }

    /// Feeds the HTTP status of a response received from the server for real traffic.
    pub fn on_response(&mut self, status: u16) -> Option<Transition> {
        if !(500..600).contains(&status) {
            self.responses_5xx = 0;
            return None;
        }
        self.responses_5xx = self.responses_5xx.saturating_add(1);
        let limit = self.config.passive_5xx?;
        if self.responses_5xx < limit.max(1) {
            return None;
        }
        let n = self.responses_5xx;
        self.responses_5xx = 0;
        self.mark_down(Reason::Passive5xx(n))
    }

    /// Applies an operator command.
    pub fn set_admin(&mut self, admin: AdminState) -> Option<Transition> {
        let before = self.status();
        self.admin = admin;
        let reason = match admin {
            AdminState::Ready => Reason::AdminReady,
            AdminState::Drain => Reason::AdminDrain,
            AdminState::Maint => Reason::AdminMaint,
        };
        self.changed(before, reason)
    }

    fn mark_down(&mut self, reason: Reason) -> Option<Transition> {
        let before = self.status();
        self.state = HealthState::DOWN;
        self.changed(before, reason)
    }

    fn changed(&self, before: Status, reason: Reason) -> Option<Transition> {
        let after = self.status();
        (before != after).then_some(Transition {
            from: before,
            to: after,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `results` ('+' pass, '-' fail) from `start`; returns the health after each step as
    /// a string of 'U'/'D' and the number of flips.
    fn run(start: HealthState, results: &str, rise: u32, fall: u32) -> (String, usize) {
        let mut state = start;
        let mut trace = String::new();
        let mut flips = 0;
        for c in results.chars() {
            let (next, flipped) = observe(state, c == '+', rise, fall);
            flips += usize::from(flipped);
            state = next;
            trace.push(if state.health == Health::Up { 'U' } else { 'D' });
        }
        (trace, flips)
    }

    #[track_caller]
    fn check(start: HealthState, results: &str, rise: u32, fall: u32, expected: &str) {
        let (trace, _) = run(start, results, rise, fall);
        assert_eq!(trace, expected, "results {results} rise {rise} fall {fall}");
    }

    #[test]
    fn fall_needs_consecutive_failures() {
        let up = HealthState::UP;
        check(up, "---", 2, 3, "UUD");
        check(up, "--+--", 2, 3, "UUUUU");
        check(up, "--+---", 2, 3, "UUUUUD");
        check(up, "-", 2, 1, "D");
        check(up, "++++", 2, 3, "UUUU");
    }

    #[test]
    fn rise_needs_consecutive_successes() {
        let down = HealthState::DOWN;
        check(down, "++", 2, 3, "DU");
        check(down, "+-+", 2, 3, "DDD");
        check(down, "+-++", 2, 3, "DDDU");
        check(down, "+++", 3, 1, "DDU");
        check(down, "----", 2, 3, "DDDD");
    }

    #[test]
    fn full_cycle_flips_twice() {
        let (trace, flips) = run(HealthState::UP, "---++", 2, 3);
        assert_eq!(trace, "UUDDU");
        assert_eq!(flips, 2);
    }

    #[test]
    fn init_states() {
        let (rise, fall) = (2, 3);
        check(
            HealthState::initial(InitState::Up, rise, fall),
            "-",
            rise,
            fall,
            "D",
        );
        check(
            HealthState::initial(InitState::Up, rise, fall),
            "+-",
            rise,
            fall,
            "UU",
        );
        check(
            HealthState::initial(InitState::FullyUp, rise, fall),
            "--",
            rise,
            fall,
            "UU",
        );
        check(
            HealthState::initial(InitState::Down, rise, fall),
            "+",
            rise,
            fall,
            "U",
        );
        check(
            HealthState::initial(InitState::FullyDown, rise, fall),
            "+",
            rise,
            fall,
            "D",
        );
    }

    #[test]
    fn zero_thresholds_are_rejected() {
        assert_eq!(
            HealthConfig::new(0, 3),
            Err(BalanceError::ZeroThreshold { name: "rise" })
        );
        assert_eq!(
            HealthConfig::new(2, 0),
            Err(BalanceError::ZeroThreshold { name: "fall" })
        );
    }

    fn monitor(connect: Option<u32>, five: Option<u32>) -> ServerMonitor {
        let config = HealthConfig {
            passive_connect_failures: connect,
            passive_5xx: five,
            ..HealthConfig::default()
        };
        ServerMonitor::new(config, AdminState::Ready, InitState::FullyUp)
    }

    const UP: Status = Status {
        admin: AdminState::Ready,
        health: Health::Up,
    };
    const DOWN: Status = Status {
        admin: AdminState::Ready,
        health: Health::Down,
    };

    #[test]
    fn check_transitions_carry_reasons() {
        let mut m = monitor(None, None);
        assert_eq!(m.on_check(Err(CheckFailure::Timeout)), None);
        assert_eq!(m.on_check(Err(CheckFailure::Connect)), None);
        assert_eq!(
            m.on_check(Err(CheckFailure::Status(503))),
            Some(Transition {
                from: UP,
                to: DOWN,
                reason: Reason::CheckFailed(CheckFailure::Status(503))
            })
        );
        assert_eq!(m.on_check(Ok(())), None);
        assert_eq!(
            m.on_check(Ok(())),
            Some(Transition {
                from: DOWN,
                to: UP,
                reason: Reason::CheckPassed
            })
        );
    }

    #[test]
    fn passive_connect_failures_mark_down() {
        let mut m = monitor(Some(3), None);
        assert_eq!(m.on_connect(false), None);
        assert_eq!(m.on_connect(false), None);
        assert_eq!(m.on_connect(true), None, "a success resets the count");
        assert_eq!(m.on_connect(false), None);
        assert_eq!(m.on_connect(false), None);
        let t = m.on_connect(false).expect("third consecutive failure");
        assert_eq!((t.from, t.to), (UP, DOWN));
        assert_eq!(t.reason, Reason::PassiveConnectFailures(3));
        // Already down: further failures report nothing, and one passed check is not enough.
        assert_eq!(m.on_connect(false), None);
        assert_eq!(m.on_check(Ok(())), None);
        assert_eq!(
            m.on_check(Ok(())).map(|t| t.reason),
            Some(Reason::CheckPassed)
        );
    }

    #[test]
    fn passive_5xx_mark_down() {
        let mut m = monitor(None, Some(2));
        assert_eq!(m.on_response(502), None);
        assert_eq!(m.on_response(404), None, "a non-5xx resets the count");
        assert_eq!(m.on_response(500), None);
        let t = m.on_response(503).expect("second consecutive 5xx");
        assert_eq!(t.reason, Reason::Passive5xx(2));
        assert_eq!(m.status(), DOWN);
    }

    #[test]
    fn passive_detection_disabled_by_default() {
        let mut m = monitor(None, None);
        for _ in 0..100 {
            assert_eq!(m.on_connect(false), None);
            assert_eq!(m.on_response(500), None);
        }
        assert_eq!(m.status(), UP);
    }

    #[test]
    fn reconfigure_keeps_state_and_clamps_the_streak() {
        let mut m = monitor(None, None);
        m.on_check(Err(CheckFailure::Connect));
        m.on_check(Err(CheckFailure::Connect));
        m.reconfigure(HealthConfig::new(2, 2).unwrap());
        assert_eq!(m.status(), UP, "a reload never flips by itself");
        assert_eq!(m.health_state().streak, 1);
        let t = m
            .on_check(Err(CheckFailure::Timeout))
            .expect("new fall=2 reached");
        assert_eq!(t.to, DOWN);
        assert_eq!(m.config().fall, 2);
    }

    #[test]
    fn admin_transitions() {
        let mut m = monitor(None, None);
        let t = m.set_admin(AdminState::Maint).expect("changed");
        assert_eq!(t.reason, Reason::AdminMaint);
        assert_eq!(t.to.to_string(), "MAINT");
        assert_eq!(
            m.set_admin(AdminState::Maint),
            None,
            "no change, no transition"
        );
        // Health keeps being tracked under maintenance, and is reported.
        m.on_check(Err(CheckFailure::Connect));
        m.on_check(Err(CheckFailure::Connect));
        let t = m.on_check(Err(CheckFailure::Connect)).expect("health flip");
        assert_eq!(t.to.to_string(), "MAINT (down)");
        assert_eq!(
            m.set_admin(AdminState::Drain).map(|t| t.reason),
            Some(Reason::AdminDrain)
        );
        assert_eq!(m.set_admin(AdminState::Ready).map(|t| t.to), Some(DOWN));
    }

    #[test]
    fn came_up_marks_the_start_of_slow_start() {
        let mut m = monitor(None, None);
        assert!(!m.set_admin(AdminState::Maint).expect("changed").came_up());
        assert!(m.set_admin(AdminState::Ready).expect("changed").came_up());
        assert!(!m.set_admin(AdminState::Drain).expect("changed").came_up());
        assert!(m.set_admin(AdminState::Ready).expect("changed").came_up());
        for _ in 0..2 {
            assert_eq!(m.on_check(Err(CheckFailure::Timeout)), None);
        }
        assert!(
            !m.on_check(Err(CheckFailure::Timeout))
                .expect("down")
                .came_up()
        );
        assert_eq!(m.on_check(Ok(())), None);
        assert!(m.on_check(Ok(())).expect("up").came_up());
    }

    #[test]
    fn status_acceptance() {
        assert!(UP.accepts_new() && UP.accepts_persistent());
        assert!(!DOWN.accepts_new() && !DOWN.accepts_persistent());
        let drain = Status {
            admin: AdminState::Drain,
            health: Health::Up,
        };
        assert!(!drain.accepts_new() && drain.accepts_persistent());
        let maint = Status {
            admin: AdminState::Maint,
            health: Health::Up,
        };
        assert!(!maint.accepts_new() && !maint.accepts_persistent());
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Health flips exactly when the last `threshold` results all disagree with the
            /// health in force before them, and never otherwise.
            #[test]
            fn flips_only_after_threshold_consecutive(
                results in proptest::collection::vec(any::<bool>(), 0..64),
                rise in 1u32..5,
                fall in 1u32..5,
            ) {
                let mut state = HealthState::UP;
                let mut run_len = 0u32;
                for &ok in &results {
                    let agrees = (state.health == Health::Up) == ok;
                    run_len = if agrees { 0 } else { run_len + 1 };
                    let threshold = if state.health == Health::Up { fall } else { rise };
                    let (next, flipped) = observe(state, ok, rise, fall);
                    prop_assert_eq!(flipped, run_len == threshold);
                    prop_assert_eq!(flipped, next.health != state.health);
                    prop_assert!(next.streak < threshold.max(rise).max(fall));
                    if flipped { run_len = 0; }
                    state = next;
                }
            }
        }
    }
}
