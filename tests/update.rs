//! aws:updateSsmAgent end to end: a copy of this build ("A", 0.1.0) runs as the installed agent,
//! a copy with its version stamp rewritten ("B", 0.1.1) is published with a signed manifest on
//! the emulator's HTTPS file server, and AWS-UpdateSSMAgent moves the agent from one to the other
//! (or refuses, or rolls back).

mod common;

use base64::Engine as _;
use common::*;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use ssm_emulator::{Emulator, FILES_CA_PEM, FaultTarget};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const A: &str = env!("CARGO_PKG_VERSION");
const B: &str = "0.1.1";

/// This build's binary with its version stamp set to `version`.
fn stamped(version: &str) -> Vec<u8> {
    restamped(Path::new(env!("CARGO_BIN_EXE_ssm-lite")), version)
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "arm" => "armhf",
        "x86" => "i686",
        other => other,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn key() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Publishes `served` as the release `version` under `/<channel>/`, its manifest entry made for
/// `listed` (the bytes the signature and digest describe) with `size`, signed by `signer`.
fn publish(
    emu: &Emulator,
    channel: &str,
    version: &str,
    served: &[u8],
    listed: &[u8],
    signer: &Ed25519KeyPair,
) {
    let (name, size, sha) = (
        format!("ssm-lite-{version}-{}", arch()),
        listed.len(),
        sha256_hex(listed),
    );
    let line = format!("ssm-lite {version} {} {size} {sha}", arch());
    let manifest = json!({"releases": [{"version": version, "files": {arch(): {
        "name": name, "size": size, "sha256": sha,
        "signature": b64(signer.sign(line.as_bytes()).as_ref())}}}]});
    emu.put_file(
        &format!("/{channel}/manifest.json"),
        manifest.to_string().as_bytes(),
    );
    emu.put_file(&format!("/{channel}/{name}"), served);
}

/// The installed agent: A at `<dir>/bin/ssm-lite`, run as an init script would, trusting the
/// file server's CA.
struct Installed {
    agent: Agent,
    dir: TempDir,
}

impl Installed {
    fn start(emu: &Emulator, key: &Ed25519KeyPair, channel: Option<&str>, env: &[&str]) -> Self {
        let dir = TempDir::new("update-bin");
        let binary = dir.path().join("bin/ssm-lite");
        fs::create_dir_all(binary.parent().unwrap()).unwrap();
        fs::copy(env!("CARGO_BIN_EXE_ssm-lite"), &binary).unwrap();
        let ca = dir.path().join("ca.pem");
        fs::write(&ca, FILES_CA_PEM).unwrap();
        let mut update = json!({"PublicKey": b64(key.public_key().as_ref())});
        if let Some(c) = channel {
            update["Channel"] = json!(format!("{}/{c}", emu.files().url()));
        }
        let prelude = format!(
            "export SSL_CERT_FILE='{}' {}\nshift\nset -- '{}' \"$@\"",
            ca.display(),
            env.join(" "),
            binary.display()
        );
        let agent = Agent::start_from_shell(emu, json!({"Update": update}), &prelude);
        assert!(
            agent.wait_log("health: UpdateInstanceInformation succeeded", SECS_30),
            "A never reached the emulator:\n{}",
            agent.log()
        );
        Installed { agent, dir }
    }

    fn binary(&self) -> PathBuf {
        self.dir.path().join("bin/ssm-lite")
    }
}

const SECS_30: Duration = Duration::from_secs(30);

/// AWS-UpdateSSMAgent as the service sends it (schema 1.2), upstream's stock `source` included.
fn update_document() -> Value {
    json!({
        "schemaVersion": "1.2",
        "description": "Updates the Amazon SSM Agent to the specified version or the latest version.",
        "parameters": {
            "version": {"type": "String", "default": "", "description": "version"},
            "allowDowngrade": {"type": "String", "default": "false", "description": "downgrade"},
            "source": {"type": "String", "description": "manifest",
                       "default": "https://s3.{Region}.amazonaws.com/amazon-ssm-{Region}/ssm-agent-manifest.json"}
        },
        "runtimeConfig": {"aws:updateSsmAgent": {"properties": [{
            "agentName": "amazon-ssm-agent",
            "allowDowngrade": "{{ allowDowngrade }}",
            "source": "{{ source }}",
            "targetVersion": "{{ version }}"
        }]}}
    })
}

/// Sends AWS-UpdateSSMAgent with `parameters`; the final reply and the step's result.
fn update(emu: &Emulator, id: &str, parameters: Value) -> (Value, Value) {
    let msg = send(emu, id, "AWS-UpdateSSMAgent", update_document(), parameters);
    let last = emu
        .wait_final(&msg, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no final reply for {msg}: {:?}", emu.replies(&msg)));
    let (_, steps) = outcome(emu, &msg);
    (last.payload, steps["aws:updateSsmAgent"].clone())
}

fn exe_of(pid: u32) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

fn previous(binary: &Path) -> PathBuf {
    PathBuf::from(format!("{}.previous", binary.display()))
}

/// The agent still runs commands: a shell step's output comes back.
fn answers(emu: &Emulator, id: &str) {
    let doc = json!({"schemaVersion": "2.2", "description": "echo", "mainSteps": [
        {"action": "aws:runShellScript", "name": "echo", "inputs": {"runCommand": ["echo alive"]}}]});
    let (last, steps) = outcome(emu, &send(emu, id, "Echo", doc, json!({})));
    assert_eq!(last["documentStatus"], "Success", "{last}");
    assert_eq!(steps["echo"]["standardOutput"], "alive\n");
}

#[test]
fn a_to_b_in_place_and_b_reports_success() {
    let emu = emulator();
    let signer = key();
    let b = stamped(B);
    publish(&emu, "stable", B, &b, &b, &signer);
    let installed = Installed::start(&emu, &signer, Some("stable"), &[]);
    let pid = installed.agent.pid();

    let (last, step) = update(&emu, "e0000000-0000-4000-8000-000000000001", json!({}));
    assert_eq!(last["documentStatus"], "Success", "{last}");
    let url = emu.files().url();
    assert_eq!(
        step["standardOutput"],
        format!(
            "Successfully downloaded {url}/stable/manifest.json\n\
             Updating ssm-lite from {A} to {B}\n\
             Successfully downloaded {url}/stable/ssm-lite-{B}-{}\n\
             Initiating ssm-lite update to {B}\n\
             ssm-lite updated successfully to {B}",
            arch()
        )
    );
    let binary = installed.binary();
    assert_eq!(fs::read(&binary).unwrap(), b, "B is installed");
    assert!(!previous(&binary).exists(), "A is removed once B is online");
    assert_eq!(installed.agent.pid(), pid);
    assert_eq!(exe_of(pid), binary, "the same process runs B");
    let log = installed.agent.log();
    assert!(log.contains(&format!("ssm-lite {B} starting")), "{log}");
    answers(&emu, "e0000000-0000-4000-8000-000000000002");
}

#[test]
fn a_tampered_binary_or_a_wrong_signature_is_refused_and_nothing_changes() {
    let emu = emulator();
    let signer = key();
    // Never installed, so any bytes do: what the manifest describes, and what is served.
    let b = b"ssm-lite 0.1.1, as signed".to_vec();
    let mut tampered = b.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0xff;
    publish(&emu, "tampered", B, &tampered, &b, &signer);
    let mut longer = b.clone();
    longer.push(0);
    publish(&emu, "longer", B, &longer, &b, &signer);
    publish(&emu, "forged", B, &b, &b, &key());
    let installed = Installed::start(&emu, &signer, None, &[]);
    let binary = installed.binary();
    let a = fs::read(&binary).unwrap();
    let url = emu.files().url();
    let cases = [
        ("tampered", "1", "SHA-256 check failed"),
        ("longer", "2", "(size check: at most"),
        (
            "forged",
            "3",
            "signature does not verify with Update.PublicKey",
        ),
    ];
    for (channel, n, why) in cases {
        let source = format!("{url}/{channel}/manifest.json");
        let id = format!("e0000000-0000-4000-8000-00000000010{n}");
        let (last, step) = update(&emu, &id, json!({ "source": source }));
        assert_eq!(last["documentStatus"], "Failed", "{channel}: {last}");
        let stderr = step["standardError"].as_str().unwrap();
        assert!(stderr.contains(why), "{channel}: {stderr}");
        let stdout = step["standardOutput"].as_str().unwrap();
        assert!(
            stdout.ends_with(&format!(
                "Failed to update ssm-lite to {B}\nNo rollback needed"
            )),
            "{channel}: {stdout}"
        );
        assert_eq!(fs::read(&binary).unwrap(), a, "{channel}: A stays");
        assert!(!previous(&binary).exists());
        assert!(!Path::new(&format!("{}.update", binary.display())).exists());
    }
    assert_eq!(exe_of(installed.agent.pid()), binary);
    answers(&emu, "e0000000-0000-4000-8000-000000000104");
}

#[test]
fn a_new_binary_that_cannot_reach_the_service_is_rolled_back() {
    let emu = emulator();
    let signer = key();
    let b = stamped(B);
    publish(&emu, "stable", B, &b, &b, &signer);
    let installed = Installed::start(
        &emu,
        &signer,
        Some("stable"),
        &["SSM_LITE_UPDATE_ROLLBACK_SECS=3"],
    );
    let pid = installed.agent.pid();
    let a = fs::read(installed.binary()).unwrap();
    // ssm refuses every call from now on: B's health pings never go through.
    emu.set_fault_target(FaultTarget::Ssm);
    emu.fail_for(Duration::from_secs(120), 500, "InternalServerError");

    let (last, step) = update(&emu, "e0000000-0000-4000-8000-000000000201", json!({}));
    assert_eq!(last["documentStatus"], "Failed", "{last}");
    let stdout = step["standardOutput"].as_str().unwrap();
    assert!(
        stdout.ends_with(&format!(
            "Initiating ssm-lite update to {B}\n\
             failed to update ssm-lite to {B}, failed to start the agent, ErrorMessage=ssm-lite {B} did not reach the service within 3 s\n\
             Initiating rollback ssm-lite to {A}\n\
             rolledback ssm-lite to {A}\n\
             Failed to update ssm-lite to {B}"
        )),
        "{stdout}"
    );
    let binary = installed.binary();
    assert_eq!(fs::read(&binary).unwrap(), a, "A is back");
    assert!(!previous(&binary).exists());
    assert_eq!(exe_of(pid), binary, "the same process runs A again");
    let log = installed.agent.log();
    let b_started = log.find(&format!("ssm-lite {B} starting")).expect(&log);
    assert!(
        log[b_started..].contains(&format!("ssm-lite {A} starting")),
        "{log}"
    );
}

#[test]
fn a_new_binary_that_stopped_on_its_first_start_is_rolled_back_on_the_second() {
    let emu = emulator();
    let signer = key();
    let installed = Installed::start(&emu, &signer, None, &[]);
    let mut agent = installed.agent;
    let binary = installed.dir.path().join("bin/ssm-lite");
    agent.kill9();
    // What a swap leaves, and a B that already started once and died.
    let a = fs::read(&binary).unwrap();
    fs::rename(&binary, previous(&binary)).unwrap();
    fs::write(&binary, stamped(B)).unwrap();
    fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pending = json!({"command_id": "c-gone", "from": A, "to": B, "binary": binary,
        "deadline": 4_000_000_000u64, "rollback_secs": 300, "attempts": 1,
        "stage": "Swapped", "output": ""});
    let dir = agent.state_dir().join("update");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("pending.json"), pending.to_string()).unwrap();

    agent.start_again();
    assert!(
        agent
            .wait_latest_log(&format!("ssm-lite {A} starting"), SECS_30)
            .is_some(),
        "{}",
        agent.log()
    );
    let log = agent.log();
    assert!(
        log.contains(&format!(
            "ssm-lite {B} stopped before it reached the service"
        )),
        "{log}"
    );
    assert_eq!(fs::read(&binary).unwrap(), a, "A is back");
    assert_eq!(exe_of(agent.pid()), binary);
    let left: Value = serde_json::from_slice(&fs::read(dir.join("pending.json")).unwrap()).unwrap();
    assert_eq!(left["stage"], "RolledBack", "{left}");
    assert_eq!(left["attempts"], 2, "{left}");
}

#[test]
fn already_at_the_latest_version_is_success_with_upstreams_text() {
    let emu = emulator();
    let signer = key();
    // Never downloaded: the manifest alone says there is nothing newer.
    let listed = b"ssm-lite 0.1.0".to_vec();
    publish(&emu, "same", A, &listed, &listed, &signer);
    let installed = Installed::start(&emu, &signer, None, &[]);
    let url = format!("{}/same/manifest.json", emu.files().url());
    let (last, step) = update(
        &emu,
        "e0000000-0000-4000-8000-000000000301",
        json!({ "source": url, "version": A }),
    );
    assert_eq!(last["documentStatus"], "Success", "{last}");
    assert_eq!(
        step["standardOutput"],
        format!(
            "Successfully downloaded {url}\n\
             Updating ssm-lite from {A} to {A}\n\
             ssm-lite {A} has already been installed\n\
             update skipped"
        )
    );
    let a = fs::read(env!("CARGO_BIN_EXE_ssm-lite")).unwrap();
    assert_eq!(fs::read(installed.binary()).unwrap(), a);
    let requests = emu.files().requests();
    assert_eq!(
        requests.len(),
        1,
        "only the manifest is fetched: {requests:?}"
    );
}
