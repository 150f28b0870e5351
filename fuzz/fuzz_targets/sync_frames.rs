//! Fuzz target `sync_frames`: what the peer sends on a sync connection through the frame decoder and the sync core.
//! The invariants live in `tandem_sync::fuzz::frames`, which the corpus replay test also calls.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_sync::fuzz::frames(data));
