//! Fuzz target `config`: a configuration file through the loader (YAML, structure, validation).
//! The invariants live in `tandem_config::fuzz::config`, which the corpus replay test also calls.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_config::fuzz::config(data));
