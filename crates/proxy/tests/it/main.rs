//! Integration tests of the proxy on loopback: real servers, real clients, user-visible bytes.
//!
//! Owns: one test binary (one link) with a module per area and the shared helpers in
//! `common`. Touches only 127.0.0.1; every wait is bounded in time.

mod common;
mod http;
mod limits;
mod proxy_protocol;
mod reload;
mod tcp;
mod tls;
