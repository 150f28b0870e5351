//! Fuzz target `http1_response`: a server's bytes through the raw forwarder's response head parsing, rewriting and body framing.
//! The invariants live in `tandem_proxy::fuzz::http1_response`, which the corpus replay test also calls.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_proxy::fuzz::http1_response(data));
