//! Load-balancing core: backend snapshots, selection, health hysteresis, persistence (pure).
//!
//! This crate owns *which* server a request goes to and *whether* a server is usable, as pure
//! data and functions. It deliberately has no IO, no sockets, no tokio, no clock reads (every
//! time-dependent call takes `now`) and spawns no threads. The proxy owns the runtime state
//! (per-server active-connection atomics, health monitors, the stick table behind a mutex),
//! swaps [`Backend`] snapshots with `ArcSwap` on reload, and logs the [`Transition`]s returned
//! here.
//!
//! Map:
//! - [`Backend`] / [`Backend::pick`]: snapshot and selection (`backend`);
//! - [`observe`] / [`ServerMonitor`]: health hysteresis, passive detection, reasons (`health`);
//! - [`effective_weight`]: slow start (`slowstart`);
//! - [`ServerId::to_cookie`] / [`StickTable`]: persistence (`server`, `persist`);
//! - [`BalanceError`]: everything that can be rejected (`error`).

mod backend;
mod error;
mod hash;
mod health;
mod persist;
mod server;
mod slowstart;

pub use backend::{Backend, Chosen, Live, LiveView, Pick, Request};
pub use error::BalanceError;
pub use health::{
    CheckFailure, Health, HealthConfig, HealthState, InitState, Reason, ServerMonitor, Status,
    Transition, observe,
};
pub use persist::{StickEntry, StickTable};
pub use server::{AdminState, BackendSpec, Balance, MAX_WEIGHT, Server, ServerId, ServerSpec};
pub use slowstart::effective_weight;
