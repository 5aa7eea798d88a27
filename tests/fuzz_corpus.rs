//! Replays the committed fuzz seeds (fuzz/seeds/<target>/, crash inputs included) through the
//! same `ssm_lite::fuzzing` function each fuzz target calls, so every input the fuzzers were
//! given or found stays a test of the ordinary suite (`make fuzz` runs the fuzzers themselves).

use ssm_lite::fuzzing;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .into_string()
                .expect("UTF-8 name")
        })
        .collect()
}

/// Runs every seed of `target` through `entry`; a panic names the file that caused it.
fn replay(target: &str, entry: fn(&[u8])) {
    let dir = fuzz_dir().join("seeds").join(target);
    let seeds = names_in(&dir);
    assert!(!seeds.is_empty(), "{} has no seeds", dir.display());
    let failed: Vec<&String> = seeds
        .iter()
        .filter(|name| {
            let data = std::fs::read(dir.join(name)).expect("seed is readable");
            std::panic::catch_unwind(|| entry(&data)).is_err()
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: these seeds in {} panic: {failed:?}",
        dir.display()
    );
}

#[test]
fn targets_match_the_fuzz_crate_and_the_seeds() {
    let listed: BTreeSet<String> = TARGETS.iter().map(|n| n.to_string()).collect();
    assert_eq!(names_in(&fuzz_dir().join("seeds")), listed, "fuzz/seeds/");
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let bins: BTreeSet<String> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|bin| bin.lines().find_map(|l| l.strip_prefix("name = ")))
        .map(|name| name.trim_matches('"').to_string())
        .collect();
    assert_eq!(bins, listed, "fuzz/Cargo.toml [[bin]] targets");
}

/// Every fuzz target, as `TARGETS` and as one test each replaying its seeds through the
/// `ssm_lite::fuzzing` function of the same name; `targets_match_the_fuzz_crate_and_the_seeds`
/// keeps this list, fuzz/Cargo.toml and fuzz/seeds/ in step.
macro_rules! targets {
    ($($target:ident),* $(,)?) => {
        const TARGETS: &[&str] = &[$(stringify!($target)),*];
        $(
            #[test]
            fn $target() {
                replay(stringify!($target), fuzzing::$target);
            }
        )*
    };
}

targets!(
    agent_message,
    smux_frames,
    data_channel,
    session_task,
    send_command,
    pattern,
    mgs_control,
    config,
    timestamp,
    imds,
    aws_error,
);
