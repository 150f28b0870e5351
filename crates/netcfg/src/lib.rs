//! Network configuration of a Tandem node: what `network` in the configuration asks of the
//! host (default gateways, static routes, 802.1Q VLANs, bonds, MTUs, `/etc/resolv.conf`,
//! chrony's NTP sources), as a plan and its execution.
//!
//! - [`plan`] (pure, no IO): from the previous and the next network of one node to an ordered
//!   list of [`Op`]s, and its inverse for rollback ([`Plan::inverse`]).
//! - [`apply`]: runs a plan with iproute2 `ip` commands through a [`apply::System`] (the real
//!   one spawns `ip` and writes files atomically; tests can record), undoing what it did when
//!   a step fails.
//!
//! Does not decide *when* to apply (the supervisor's transactions do, not wired yet), never
//! touches the addresses of interfaces (setup and the VRRP daemon own those), and knows
//! nothing of the rest of the configuration.

pub mod apply;
pub mod plan;

pub use apply::{ApplyError, Files, IpSystem, System, apply, commands};
pub use plan::{ConfigFile, Op, Plan, chrony_sources, plan, plan_for, resolv_conf};
