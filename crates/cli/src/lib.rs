//! `tandem-cli`: `tandemctl`, the operator's CLI of a Tandem node (the serial console's login
//! shell), one-shot (`tandemctl show servers`) or interactive (no arguments).
//!
//! Owns the command grammar ([`commands`]), the rendering for people ([`render`]), the
//! interactive prompt ([`interactive`]), the control-socket client ([`client`]) and the
//! bounded HTTP fetch of bundles and configurations ([`http`]).
//! Must not change anything itself: every command is a request to the supervisor
//! (protocol in `docs/control-api.md`), except the local ones that must work without it:
//! `firmware` ([`firmware`], root writes the other slot), `setup` ([`setup`]) and the serial
//! console's login ([`console`]).

pub mod client;
pub mod commands;
pub mod console;
pub mod firmware;
pub mod http;
pub mod interactive;
pub mod render;
pub mod setup;
pub mod traffic;
