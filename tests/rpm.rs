//! The .rpm packages of `make release` (packaging/build-rpm.sh): metadata, contents and modes,
//! an installation into an empty root and its removal, reproducibility, the scriptlets' syntax.
//!
//! They need dist/ (`make release`) and root (files owned by root in the install root), so they
//! are ignored by a plain `cargo test`; `make test` runs them with `--ignored`, as the .deb's.
//! The root has no shell, so the scriptlets are not run there (`--noscripts`); they are the
//! .deb's maintainer-script logic, whose behaviour tests/package.rs checks in a Debian root.

mod common;

use common::{TempDir, release_artifact, release_binary};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The dist binary's architecture name and RPM's name for it.
const ARCHES: [(&str, &str); 4] = [
    ("x86_64", "x86_64"),
    ("aarch64", "aarch64"),
    ("armhf", "armv6hl"),
    ("i686", "i686"),
];

/// Every entry of the package: mode, owner and path (`rpm -qp` order: sorted by path).
const ENTRIES: [&str; 7] = [
    "drwxr-xr-x root:root /etc/ssm-lite",
    "-rw-r--r-- root:root /etc/ssm-lite/amazon-ssm-agent.json.template",
    "-rwxr-xr-x root:root /usr/bin/ssm-lite",
    "-rw-r--r-- root:root /usr/lib/systemd/system/ssm-lite.service",
    "-rw-r--r-- root:root /usr/share/licenses/ssm-lite/copyright",
    "-rw-r--r-- root:root /usr/share/man/man8/ssm-lite.8.gz",
    "drwx------ root:root /var/lib/ssm-lite",
];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<version>-<release>` from the newest packaging/debian/changelog entry, as build-rpm.sh reads it.
fn version() -> String {
    let text = fs::read_to_string(manifest_dir().join("packaging/debian/changelog")).unwrap();
    let first = text.lines().next().unwrap_or_default();
    let start = first.find('(').map(|i| i + 1).unwrap_or(0);
    let end = first.find(')').unwrap_or(start);
    first[start..end].to_owned()
}

fn rpm_file(rpmarch: &str) -> PathBuf {
    release_artifact(&format!("ssm-lite-{}.{rpmarch}.rpm", version()))
}

/// Runs `cmd`, asserts that it succeeded, returns its stdout.
fn ok(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `rpm -qp --qf FORMAT PACKAGE`.
fn query(rpm: &Path, format: &str) -> String {
    ok(Command::new("rpm").args(["-qp", "--qf", format]).arg(rpm))
}

#[test]
#[ignore = "needs `make release` (dist/) and root; run by `make test`"]
fn each_rpm_holds_its_architectures_binary_and_the_expected_files() {
    let (upstream, release) = version()
        .rsplit_once('-')
        .map(|(u, r)| (u.to_owned(), r.to_owned()))
        .unwrap();
    for (arch, rpmarch) in ARCHES {
        let rpm = rpm_file(rpmarch);
        let fields = query(
            &rpm,
            "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE} %{PAYLOADCOMPRESSOR}",
        );
        assert_eq!(
            fields,
            format!("ssm-lite {upstream} {release} {rpmarch} Apache-2.0 xz")
        );
        // A static binary: nothing but the scriptlets' shell is required.
        let requires = ok(Command::new("rpm").arg("-qpR").arg(&rpm));
        let needed: Vec<&str> = requires
            .lines()
            .filter(|l| !l.starts_with("rpmlib("))
            .collect();
        assert!(needed.iter().all(|l| *l == "/bin/sh"), "{requires}");
        let entries = query(
            &rpm,
            "[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]",
        );
        assert_eq!(
            entries.lines().collect::<Vec<_>>(),
            ENTRIES,
            "{}",
            rpm.display()
        );
        let config = query(&rpm, "[%{FILEFLAGS:fflags} %{FILENAMES}\n]");
        assert!(
            config.contains("cn /etc/ssm-lite/amazon-ssm-agent.json.template"),
            "{config}"
        );

        let root = TempDir::new("rpm-root");
        let rpm_in_root = |args: &[&str]| {
            ok(Command::new("rpm")
                .arg("--root")
                .arg(root.path())
                .args(args))
        };
        let path = rpm.to_str().unwrap();
        rpm_in_root(&["-i", "--nodeps", "--noscripts", "--ignorearch", path]);
        assert_eq!(
            rpm_in_root(&["-q", "ssm-lite"]).trim(),
            format!("ssm-lite-{}.{rpmarch}", version())
        );
        let installed = |p: &str| root.path().join(p.trim_start_matches('/'));
        assert!(
            fs::read(installed("/usr/bin/ssm-lite")).unwrap()
                == fs::read(release_binary(arch)).unwrap(),
            "{}: /usr/bin/ssm-lite is not the release binary",
            rpm.display()
        );
        let unit = fs::read(manifest_dir().join("packaging/systemd/ssm-lite.service")).unwrap();
        assert_eq!(
            fs::read(installed("/usr/lib/systemd/system/ssm-lite.service")).unwrap(),
            unit
        );
        let template = fs::read(installed("/etc/ssm-lite/amazon-ssm-agent.json.template")).unwrap();
        let template: Value = serde_json::from_slice(&template).expect("template is JSON");
        assert!(template["Identity"]["ConsumptionOrder"].is_array());
        let state = fs::metadata(installed("/var/lib/ssm-lite")).unwrap();
        assert_eq!((state.mode() & 0o7777, state.uid()), (0o700, 0));

        // The state the agent left stays on removal; the package's own files go.
        fs::write(installed("/var/lib/ssm-lite/kept"), "x").unwrap();
        rpm_in_root(&["-e", "--noscripts", "ssm-lite"]);
        assert!(!installed("/usr/bin/ssm-lite").exists());
        assert!(!installed("/usr/lib/systemd/system/ssm-lite.service").exists());
        assert!(installed("/var/lib/ssm-lite/kept").exists());
    }
}

#[test]
#[ignore = "needs `make release` (dist/) and root; run by `make test`"]
fn building_again_gives_the_released_bytes() {
    let released = fs::read(rpm_file("x86_64")).unwrap();
    let out = TempDir::new("rpm-again");
    let tmp = TempDir::new("rpm-tmp");
    // Another scratch directory: nothing of the build's location may leak into the bytes.
    let built = ok(Command::new(manifest_dir().join("packaging/build-rpm.sh"))
        .arg("x86_64")
        .arg(release_binary("x86_64"))
        .arg(out.path())
        .env("TMPDIR", tmp.path()));
    let built = PathBuf::from(built.trim());
    assert_eq!(built.file_name(), rpm_file("x86_64").file_name());
    assert!(
        fs::read(&built).unwrap() == released,
        "not reproducible, or dist/ is older than packaging/ (run `make release` again)"
    );
}

#[test]
#[ignore = "needs `make release` (dist/) and root; run by `make test`"]
fn the_scriptlets_are_valid_shell() {
    let rpm = rpm_file("x86_64");
    for tag in ["POSTIN", "PREUN", "POSTUN"] {
        let script = query(&rpm, &format!("%{{{tag}}}"));
        assert!(script.contains("systemctl"), "{tag}: {script}");
        ok(Command::new("sh").args(["-n", "-c", &script]));
    }
}
