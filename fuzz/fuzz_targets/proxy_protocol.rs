//! Fuzz target `proxy_protocol`: the first bytes of a connection through the PROXY protocol v1/v2 decoder.
//! The invariants live in `tandem_proxy::fuzz::proxy_protocol`, which the corpus replay test also calls.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_proxy::fuzz::proxy_protocol(data));
