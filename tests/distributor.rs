//! aws:configurePackage end to end: a Distributor package document on the emulator, its zip on
//! the emulator's HTTPS file server (as a presigned attachment URL), the real agent installing,
//! reporting through PutConfigurePackageResult and uninstalling.

mod common;
#[path = "support/zipfile.rs"]
mod zipfile;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::{Attachment, Emulator};
use std::fs;
use std::path::Path;

const INSTALL: &str = "printf '%s %s %s\\n' \"$SSM_COLOR\" \"$BWS_ACTION_NAME\" \"$(basename \"$PWD\")\" > \"$SSM_MARKER\"\necho installed\n";
const UNINSTALL: &str = "rm -f \"$SSM_MARKER\"\necho removed\n";

/// Upstream's name for the architecture ssm-lite was built for (Go's GOARCH, amd64 as x86_64).
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Publishes package `name` version `version` whose zip holds the two scripts; the manifest
/// names `manifest_sha` as the file's SHA-256 (the real one when `None`).
fn publish(emu: &Emulator, name: &str, version: &str, manifest_sha: Option<&str>) {
    let zip = zipfile::build(&[
        ("install.sh", INSTALL.as_bytes(), true),
        ("uninstall.sh", UNINSTALL.as_bytes(), false),
    ]);
    let file = format!("{name}-{version}.zip");
    let path = format!("/attachments/{file}");
    emu.put_file(&path, &zip);
    let real = sha256(&zip);
    let manifest = json!({
        "schemaVersion": "2.0",
        "version": version,
        "packages": {"_any": {"_any": {arch(): {"file": file}}}},
        "files": {&file: {"checksums": {"sha256": manifest_sha.unwrap_or(&real)}}}
    });
    emu.put_package(
        name,
        version,
        &manifest.to_string(),
        vec![Attachment {
            name: file,
            url: format!("{}{path}", emu.files().url()),
            sha256: real,
            size: zip.len() as u64,
        }],
    );
}

/// Runs AWS-ConfigureAWSPackage's step for `name` with `action`; the reply and the step.
fn configure(emu: &Emulator, id: &str, name: &str, action: &str, marker: &Path) -> (Value, Value) {
    configure_with(emu, id, json!({"name": name, "action": action}), marker)
}

/// [`configure`] with `inputs` over the defaults (the latest version, uninstall and reinstall).
fn configure_with(emu: &Emulator, id: &str, inputs: Value, marker: &Path) -> (Value, Value) {
    let arguments = json!({"SSM_COLOR": "blue", "SSM_MARKER": marker}).to_string();
    let mut step_inputs = json!({"installationType": "Uninstall and reinstall", "version": "",
                                 "additionalArguments": arguments});
    for (k, v) in inputs.as_object().unwrap() {
        step_inputs[k] = v.clone();
    }
    let document = json!({
        "schemaVersion": "2.2",
        "description": "Install or uninstall a Distributor package",
        "mainSteps": [{"action": "aws:configurePackage", "name": "configurePackage",
                       "inputs": step_inputs}]
    });
    let msg = send(emu, id, "AWS-ConfigureAWSPackage", document, json!({}));
    let (last, mut steps) = outcome(emu, &msg);
    (last, steps.remove("configurePackage").unwrap_or_default())
}

fn package_dir(agent: &Agent, name: &str) -> std::path::PathBuf {
    agent
        .state_dir()
        .join("i-0123456789abcdef0/packages")
        .join(name)
}

#[test]
fn a_package_installs_reports_and_uninstalls() {
    let emu = emulator();
    let (agent, ca) = agent_for(&emu, json!({}));
    publish(&emu, "TestPkg", "1.0.0", None);
    let marker = ca.path().join("marker");

    let (last, step) = configure(
        &emu,
        "e0000000-0000-4000-8000-000000000001",
        "TestPkg",
        "Install",
        &marker,
    );
    assert_eq!(last["documentStatus"], "Success", "{last} {step}");
    let out = step["standardOutput"].as_str().unwrap();
    assert!(
        out.starts_with("Initiating TestPkg 1.0.0 install\nPlugin aws:runShellScript ResultStatus Success\ninstall output: Running sh install.sh\ninstalled\n"),
        "{out}"
    );
    assert!(
        out.ends_with("Successfully installed TestPkg 1.0.0\n"),
        "{out}"
    );
    assert_eq!(fs::read_to_string(&marker).unwrap(), "blue install 1.0.0\n");
    let state: Value = serde_json::from_slice(
        &fs::read(package_dir(&agent, "TestPkg").join("installstate")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (state["version"].clone(), state["state"].clone()),
        (json!("1.0.0"), json!(8))
    );

    let results = emu.package_results();
    assert_eq!(results.len(), 1, "{results:?}");
    let r = &results[0];
    assert_eq!(
        (
            &r["PackageName"],
            &r["PackageVersion"],
            &r["Operation"],
            &r["Result"]
        ),
        (
            &json!("TestPkg"),
            &json!("1.0.0"),
            &json!("Install"),
            &json!(0)
        )
    );
    assert!(r.get("PreviousPackageVersion").is_none(), "{r}");
    assert_eq!(r["Attributes"]["architecture"], arch());
    assert_eq!(r["Attributes"]["instanceID"], "i-0123456789abcdef0");
    let actions: Vec<&str> = r["Steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["Action"].as_str())
        .collect();
    assert!(
        actions.contains(&"> execute action: install"),
        "{actions:?}"
    );

    // The same version again: upstream's already-installed result, and no script runs.
    fs::remove_file(&marker).unwrap();
    let (last, step) = configure(
        &emu,
        "e0000000-0000-4000-8000-000000000002",
        "TestPkg",
        "Install",
        &marker,
    );
    assert_eq!(last["documentStatus"], "Success", "{last}");
    assert_eq!(
        step["standardOutput"],
        "TestPkg 1.0.0 is already installed\n"
    );
    assert!(!marker.exists());
    fs::write(&marker, "x").unwrap();

    let (last, step) = configure(
        &emu,
        "e0000000-0000-4000-8000-000000000003",
        "TestPkg",
        "Uninstall",
        &marker,
    );
    assert_eq!(last["documentStatus"], "Success", "{last} {step}");
    let out = step["standardOutput"].as_str().unwrap();
    assert!(
        out.starts_with("Initiating TestPkg 1.0.0 uninstall\n"),
        "{out}"
    );
    assert!(
        out.ends_with("Successfully uninstalled TestPkg 1.0.0\n"),
        "{out}"
    );
    assert!(!marker.exists(), "uninstall.sh removes the marker");
    let dir = package_dir(&agent, "TestPkg");
    assert!(!dir.join("1.0.0").exists());
    let state: Value =
        serde_json::from_slice(&fs::read(dir.join("installstate")).unwrap()).unwrap();
    assert_eq!(state["state"], 0, "{state}");
    let results = emu.package_results();
    assert_eq!(results.len(), 3, "{results:?}");
    assert_eq!(
        (
            &results[2]["Operation"],
            &results[2]["PreviousPackageVersion"]
        ),
        (&json!("Uninstall"), &json!("1.0.0"))
    );
}

#[test]
fn a_file_whose_sha256_does_not_match_fails_and_runs_nothing() {
    let emu = emulator();
    let (agent, ca) = agent_for(&emu, json!({}));
    let wrong = "0".repeat(64);
    publish(&emu, "BadPkg", "2.0", Some(&wrong));
    let marker = ca.path().join("marker");

    let (last, step) = configure(
        &emu,
        "e0000000-0000-4000-8000-000000000004",
        "BadPkg",
        "Install",
        &marker,
    );
    assert_eq!(last["documentStatus"], "Failed", "{last}");
    assert_eq!(step["status"], "Failed");
    let err = step["standardError"].as_str().unwrap();
    let url = format!("{}/attachments/BadPkg-2.0.zip", emu.files().url());
    assert!(
        err.starts_with(&format!(
            "failed to download installation package reliably, {url}, the file has SHA-256 "
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("not {wrong} as the package manifest says")),
        "{err}"
    );
    assert!(!marker.exists(), "no script ran");
    assert!(!package_dir(&agent, "BadPkg").join("2.0").exists());
    // Fetched again with a fresh manifest before giving up, as upstream does.
    let fetched = emu
        .files()
        .requests()
        .iter()
        .filter(|r| r.target.contains("BadPkg"))
        .count();
    assert_eq!(fetched, 2);
    let results = emu.package_results();
    assert_eq!(
        (results.len(), &results[0]["Result"]),
        (1, &json!(1)),
        "{results:?}"
    );
}

#[test]
fn uninstalling_a_package_that_is_not_installed_succeeds() {
    let emu = emulator();
    let (_agent, ca) = agent_for(&emu, json!({}));
    publish(&emu, "TestPkg", "1.0.0", None);
    let (last, step) = configure(
        &emu,
        "e0000000-0000-4000-8000-000000000005",
        "TestPkg",
        "Uninstall",
        &ca.path().join("m"),
    );
    assert_eq!(last["documentStatus"], "Success", "{last}");
    assert_eq!(step["standardOutput"], "version:  is not installed\n");
}

/// Uninstall and reinstall: the old version's uninstall.sh, then the new one's install.sh, in
/// upstream's nesting (the uninstall section closes last); In-place update without update.sh
/// fails with upstream's text and leaves the installed version alone.
#[test]
fn installation_types_upgrade_as_upstream_does() {
    let emu = emulator();
    let (agent, ca) = agent_for(&emu, json!({}));
    publish(&emu, "TestPkg", "1.0.0", None);
    publish(&emu, "TestPkg", "2.0.0", None);
    publish(&emu, "TestPkg", "3.0.0", None);
    let marker = ca.path().join("marker");
    let install = |id: &str, version: &str, kind: &str| {
        let inputs = json!({"name": "TestPkg", "action": "Install", "version": version,
                            "installationType": kind});
        configure_with(&emu, id, inputs, &marker)
    };
    let (last, _) = install(
        "e0000000-0000-4000-8000-000000000011",
        "1.0.0",
        "Uninstall and reinstall",
    );
    assert_eq!(last["documentStatus"], "Success", "{last}");

    let (last, step) = install(
        "e0000000-0000-4000-8000-000000000012",
        "2.0.0",
        "Uninstall and reinstall",
    );
    assert_eq!(last["documentStatus"], "Success", "{last} {step}");
    let out = step["standardOutput"].as_str().unwrap();
    let order = [
        "Initiating TestPkg 1.0.0 uninstall",
        "Initiating TestPkg 2.0.0 install",
        "Successfully installed TestPkg 2.0.0",
        "Successfully uninstalled TestPkg 1.0.0",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|l| out.find(l).unwrap_or_else(|| panic!("{l}: {out}")))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{out}");
    assert_eq!(fs::read_to_string(&marker).unwrap(), "blue install 2.0.0\n");
    let dir = package_dir(&agent, "TestPkg");
    assert!(!dir.join("1.0.0").exists() && dir.join("2.0.0").exists());
    let results = emu.package_results();
    assert_eq!(
        (
            &results[1]["PackageVersion"],
            &results[1]["PreviousPackageVersion"]
        ),
        (&json!("2.0.0"), &json!("1.0.0"))
    );

    let (last, step) = install(
        "e0000000-0000-4000-8000-000000000013",
        "3.0.0",
        "In-place update",
    );
    assert_eq!(last["documentStatus"], "Failed", "{last}");
    let err = step["standardError"].as_str().unwrap();
    assert!(
        err.contains("missing update script required for in-place update\nPlease create a Distributor package with update script"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&marker).unwrap(), "blue install 2.0.0\n");
}
