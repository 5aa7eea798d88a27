//! Embeds the build time as `SSM_LITE_BUILD_TIME` (seconds since the epoch): the floor of the
//! time TLS certificates are checked against, for devices that boot with their clock in 1970.
//! Reproducible: `SOURCE_DATE_EPOCH` when set, else the commit time of `HEAD`, else 0 (no
//! floor); never the time of the build itself.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or_else(commit_time)
        .unwrap_or(0);
    println!("cargo:rustc-env=SSM_LITE_BUILD_TIME={epoch}");
}

fn commit_time() -> Option<u64> {
    let out = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .output()
        .ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}
