//! smux v1 frames of multiplexed port forwarding, cut into messages anywhere.
//! The body lives in `ssm_lite::fuzzing`, which `tests/fuzz_corpus.rs` replays the seeds through.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssm_lite::fuzzing::smux_frames(data));
