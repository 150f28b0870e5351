//! Fuzz target `http1_request`: a client's bytes through the raw HTTP/1.1 forwarder's head parsing, checks, rewriting and framing, and the raw head guard.
//! The invariants live in `tandem_proxy::fuzz::http1_request`, which the corpus replay test also calls.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_proxy::fuzz::http1_request(data));
