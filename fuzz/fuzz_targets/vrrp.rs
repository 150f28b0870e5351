//! Fuzz target `vrrp`: a received VRRP packet through the codec, the RFC 5798 receive checks and a running router.
//! The invariants live in `tandem_vrrp_proto::fuzz::advertisement`, which the corpus replay test also calls.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_vrrp_proto::fuzz::advertisement(data));
