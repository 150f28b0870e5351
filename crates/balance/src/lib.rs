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
//! - [`ClassSet`] / [`ClassQueue`] / [`Classifier`]: SLA classes, the class-aware admission
//!   queue of a backend, and request classification (`class`, `classq`, `classify`);
//! - [`BalanceError`]: everything that can be rejected (`error`).
//!
//! # How the proxy uses it
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::time::Instant;
//! use tandem_balance::{Backend, BackendSpec, Balance, Pick, Request, ServerId, ServerSpec};
//!
//! let spec = BackendSpec {
//!     name: "web".into(),
//!     balance: Balance::RoundRobin,
//!     servers: vec![
//!         ServerSpec::new("a", "192.0.2.1:80".parse().unwrap()).weight(2),
//!         ServerSpec::new("b", "192.0.2.2:80".parse().unwrap()),
//!     ],
//!     all_backups: false,
//! };
//! // Built once per config load; the proxy stores it in an `ArcSwap<Backend>`.
//! let backend = Backend::new(spec, 0x5eed).unwrap();
//! // Runtime state; the proxy implements `LiveView` over its per-server atomics instead.
//! let mut live = backend.initial_live();
//!
//! let now = Instant::now(); // the caller's clock, read once per request
//! let client = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
//! // A persistence cookie from the request, if any, decodes into a `ServerId`.
//! let persist = ServerId::from_cookie("0123456789abcdef").ok();
//! let mut req = Request::new(client).path("/cart");
//! req.persist = persist;
//!
//! let mut tried = Vec::new();
//! match backend.pick(now, &req, &live, &tried) {
//!     Pick::Picked(chosen) => {
//!         live[chosen.index].active += 1; // an atomic increment in the proxy
//!         // On connect failure: tried.push(chosen.index) and pick again.
//!         tried.push(chosen.index);
//!         // Set-Cookie value for new users:
//!         let _cookie = chosen.id.to_cookie();
//!     }
//!     Pick::AllFull => { /* queue the request, pick again when a slot frees */ }
//!     Pick::NoServer => { /* 503 */ }
//! }
//! ```

mod backend;
mod class;
mod classify;
mod classq;
mod error;
mod hash;
mod health;
mod persist;
mod server;
mod slowstart;

pub use backend::{Backend, Chosen, Live, LiveView, Pick, Request};
pub use class::{ClassId, ClassSet, ClassSpec, MAX_SHARE_PERCENT};
pub use classify::{Classifier, SourceRule};
pub use classq::{
    Admission, ClassQueue, ClassStats, DRAIN_WINDOW, Output, QueueLimits, RETRY_AFTER_MAX,
    RETRY_AFTER_MIN, Rejection, Ticket, UNLIMITED,
};
pub use error::BalanceError;
pub use health::{
    CheckFailure, Health, HealthConfig, HealthState, Reason, ServerMonitor, Status, Transition,
    observe,
};
pub use persist::{StickEntry, StickTable};
pub use server::{
    AdminState, BackendSpec, Balance, InitState, MAX_WEIGHT, Server, ServerId, ServerSpec,
};
pub use slowstart::effective_weight;
