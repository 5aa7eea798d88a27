//! Data-channel payloads: handshake response, terminal size, acks, encryption challenge, encrypted input.
//! The body lives in `ssm_lite::fuzzing`, which `tests/fuzz_corpus.rs` replays the seeds through.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssm_lite::fuzzing::data_channel(data));
