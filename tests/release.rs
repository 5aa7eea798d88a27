//! The release binaries in dist/ (`make release`): static, within their size budget, and
//! running on their architecture under qemu-user. `make test` runs these (they are ignored by a
//! plain `cargo test`, which has no dist/), then the Run Command tests once per binary.

mod common;

use common::release_binary;
use std::process::Command;

/// Size budgets in bytes. A binary that outgrows its budget fails here: raise a budget only on
/// purpose, and update the sizes table in README.md with it.
const BUDGET: u64 = 3_000_000;

/// An architecture of the release: its dist name, what `file` calls it, the qemu-user runner and
/// the CPU it emulates (`QEMU_CPU`; `make test` sets the same for the Run Command tests).
struct Arch {
    name: &'static str,
    machine: &'static str,
    runner: Option<&'static str>,
    cpu: Option<&'static str>,
}

const X86_64: Arch = Arch {
    name: "x86_64",
    machine: "x86-64",
    runner: None,
    cpu: None,
};
const AARCH64: Arch = Arch {
    name: "aarch64",
    machine: "ARM aarch64",
    runner: Some("qemu-aarch64-static"),
    cpu: None,
};
const ARMHF: Arch = Arch {
    name: "armhf",
    machine: "ARM, EABI5",
    runner: Some("qemu-arm-static"),
    // The Raspberry Pi Zero/1's ARMv6 core: an ARMv7 instruction in the binary would fail here.
    cpu: Some("arm1176"),
};
const I686: Arch = Arch {
    name: "i686",
    machine: "Intel 80386",
    runner: Some("qemu-i386-static"),
    // A 32-bit-only Atom, as in old netbooks and embedded boxes. Rust's i686 targets assume SSE2
    // (Pentium 4 or later), so older CPUs are not promised.
    cpu: Some("n270"),
};

fn run(arch: &Arch, args: &[&str]) -> (bool, String) {
    let bin = release_binary(arch.name);
    let mut cmd = match arch.runner {
        Some(runner) => {
            let mut c = Command::new(runner);
            c.arg(&bin);
            if let Some(cpu) = arch.cpu {
                c.env("QEMU_CPU", cpu);
            }
            c
        }
        None => Command::new(&bin),
    };
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({:?}): {e}", bin.display(), arch.runner));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `file` says static (no interpreter, no shared libraries) and names the right machine; the
/// size is within budget; the binary starts and prints its version on the oldest CPU of its
/// architecture that it promises to run on.
fn check(arch: &Arch) {
    let bin = release_binary(arch.name);
    let out = Command::new("file").arg("-b").arg(&bin).output().unwrap();
    let file = String::from_utf8_lossy(&out.stdout);
    assert!(
        file.contains("statically linked"),
        "{}: {file}",
        bin.display()
    );
    assert!(file.contains(arch.machine), "{}: {file}", bin.display());
    assert!(
        file.contains("stripped") && !file.contains("not stripped"),
        "{file}"
    );

    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(
        size <= BUDGET,
        "{} is {size} bytes, over its budget of {BUDGET}: find what grew (cargo bloat, \
         cargo tree) before raising the budget",
        bin.display()
    );

    let (ok, text) = run(arch, &["--version"]);
    assert!(ok, "{text}");
    assert!(
        text.starts_with(&format!("ssm-lite {} ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
}

#[test]
#[ignore = "needs `make release` (dist/); run by `make test`"]
fn x86_64_binary_is_static_small_and_runs() {
    check(&X86_64);
}

#[test]
#[ignore = "needs `make release` (dist/) and qemu-user-static; run by `make test`"]
fn aarch64_binary_is_static_small_and_runs() {
    check(&AARCH64);
}

#[test]
#[ignore = "needs `make release` (dist/) and qemu-user-static; run by `make test`"]
fn armhf_binary_is_static_small_and_runs() {
    check(&ARMHF);
}

#[test]
#[ignore = "needs `make release` (dist/) and qemu-user-static; run by `make test`"]
fn i686_binary_is_static_small_and_runs() {
    check(&I686);
}
