//! Control-channel frames through the Run Command handler (no engine: nothing runs).
//! The body lives in `ssm_lite::fuzzing`, which `tests/fuzz_corpus.rs` replays the seeds through.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssm_lite::fuzzing::mgs_control(data));
