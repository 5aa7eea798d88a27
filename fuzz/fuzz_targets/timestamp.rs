//! Timestamps (ISO 8601 parsing and formatting, the on-prem role-token answer).
//! The body lives in `ssm_lite::fuzzing`, which `tests/fuzz_corpus.rs` replays the seeds through.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssm_lite::fuzzing::timestamp(data));
