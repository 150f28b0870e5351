//! Integration tests of the proxy on loopback: real servers, real clients, user-visible bytes.
//!
//! Owns: one test binary (one link) with a module per area and the shared helpers in
//! `common`. Touches only loopback (127.0.0.0/8: per-source tests bind client addresses
//! such as 127.0.1.2); every wait is bounded in time.

mod balance;
mod common;
mod found_by_fuzzing;
mod h2raw;
mod http;
mod limits;
mod metrics;
mod persist;
mod proxy_protocol;
mod raw;
mod reload;
mod runtime;
mod smuggling;
mod streams;
mod tcp;
mod tls;
