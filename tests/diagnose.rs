//! `ssm-lite diagnose` against the emulator: the built binary, run as a person would run it.

mod common;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::Emulator;
use std::collections::BTreeMap;

/// Every endpoint at the emulator, and the region given, so that the endpoints are checked even
/// when IMDS (the emulator too) is gone.
fn endpoints(emu: &Emulator) -> Value {
    let url = emu.url();
    json!({
        "S3": { "Endpoint": url },
        "CloudWatchLogs": { "Endpoint": url },
        "Agent": { "Region": "us-east-1" },
    })
}

fn agent_for_diagnose(emu: &Emulator) -> Agent {
    let agent = Agent::prepare(emu, endpoints(emu), &[]);
    std::fs::create_dir_all(agent.state_dir()).unwrap();
    agent
}

/// `ssm-lite diagnose --json` with the agent's config, state dir and IMDS; the exit code and
/// each check's (Status, Note) by name.
fn diagnose(agent: &Agent, emu: &Emulator) -> (i32, BTreeMap<String, (String, String)>) {
    let config = agent.dir.path().join("amazon-ssm-agent.json");
    let mut cmd = agent_command();
    cmd.args(["diagnose", "--json", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(agent.state_dir())
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", emu.url())
        .env("HOME", agent.dir.path());
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("run ssm-lite diagnose");
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let checks = report["DiagnosticsOutput"]
        .as_array()
        .expect("DiagnosticsOutput list")
        .iter()
        .map(|c| {
            let field = |name: &str| c[name].as_str().unwrap_or_default().to_owned();
            (field("Check"), (field("Status"), field("Note")))
        })
        .collect();
    (out.status.code().unwrap_or(-1), checks)
}

const ENDPOINTS: [&str; 6] = ["ssm", "ec2messages", "ssmmessages", "s3", "kms", "logs"];

#[test]
fn every_check_passes_against_the_emulator() {
    let emu = emulator();
    let agent = agent_for_diagnose(&emu);
    let (code, checks) = diagnose(&agent, &emu);
    let host = emu.url().trim_start_matches("http://");
    for service in ENDPOINTS {
        let (status, note) = &checks[&format!("Connectivity to {service} endpoint")];
        assert_eq!(status, "Success", "{service}: {note}");
        assert!(note.starts_with(&format!("{host} is reachable")), "{note}");
        assert!(note.contains("no TLS (http:// endpoint)"), "{note}");
    }
    let imds = &checks["EC2 IMDS"];
    assert_eq!(imds.0, "Success", "{imds:?}");
    assert!(
        imds.1.contains("i-0123456789abcdef0 in region us-east-1"),
        "{imds:?}"
    );
    let creds = &checks["AWS Credentials"];
    assert_eq!(creds.0, "Success", "{creds:?}");
    assert!(
        creds.1.contains("the EC2 identity i-0123456789abcdef0"),
        "{creds:?}"
    );
    assert!(creds.1.contains("will expire at"), "{creds:?}");
    for (name, want) in [
        ("Clock skew", "Success"),
        ("State directory", "Success"),
        ("Configuration", "Success"),
        ("SSM Agent version", "Success"),
        ("Hybrid instance registration", "Skipped"),
        ("Proxy configuration", "Skipped"),
    ] {
        assert_eq!(checks[name].0, want, "{name}: {:?}", checks[name]);
    }
    assert_eq!(code, 0, "{checks:#?}");
    assert_eq!(checks.len(), 14, "{checks:#?}");
}

#[test]
fn with_the_emulator_stopped_the_endpoints_fail_and_are_named() {
    let emu = emulator();
    let agent = agent_for_diagnose(&emu);
    emu.stop();
    let (code, checks) = diagnose(&agent, &emu);
    assert_eq!(code, 1, "{checks:#?}");
    for service in ENDPOINTS {
        let (status, note) = &checks[&format!("Connectivity to {service} endpoint")];
        assert_eq!(status, "Failed", "{service}: {note}");
        assert!(
            note.starts_with(&format!("{} is not reachable: ", emu.url())),
            "{note}"
        );
        assert!(
            note.contains("check the endpoint, network and proxy settings"),
            "{note}"
        );
    }
    assert_eq!(checks["EC2 IMDS"].0, "Failed", "{:?}", checks["EC2 IMDS"]);
    assert_eq!(checks["AWS Credentials"].0, "Failed");
}

#[test]
fn a_twenty_minute_clock_skew_fails_the_clock_check() {
    let emu = skewed_emulator(20 * 60);
    let agent = agent_for_diagnose(&emu);
    let (code, checks) = diagnose(&agent, &emu);
    assert_eq!(code, 1, "{checks:#?}");
    let (status, note) = &checks["Clock skew"];
    assert_eq!(status, "Failed", "{note}");
    let secs: u64 = note
        .strip_prefix("the system clock is ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no skew in {note:?}"));
    assert!((1195..=1200).contains(&secs), "{note}");
    assert!(note.contains(" s behind the clock of 127.0.0.1:"), "{note}");
    assert!(note.contains("set the clock / enable NTP"), "{note}");
    let failed: Vec<&String> = checks
        .iter()
        .filter(|(_, c)| c.0 == "Failed")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(failed, ["Clock skew"], "{checks:#?}");
}

#[test]
fn a_hybrid_node_is_checked_by_its_registration_and_not_by_imds() {
    let emu = emulator();
    let agent = onprem_agent_with(&emu, endpoints(&emu));
    let (mi, _) = register_agent(&agent, &emu);
    let (code, checks) = diagnose(&agent, &emu);
    let registration = &checks["Hybrid instance registration"];
    assert_eq!(registration.0, "Success", "{registration:?}");
    let want =
        format!("Instance has hybrid registration with instance id {mi} in region us-east-1");
    assert!(registration.1.starts_with(&want), "{registration:?}");
    assert_eq!(
        checks["EC2 IMDS"],
        ("Skipped".into(), "Instance has hybrid registration".into())
    );
    let creds = &checks["AWS Credentials"];
    assert_eq!(creds.0, "Success", "{creds:?}");
    assert!(
        creds.1.starts_with(&format!(
            "Credentials are for the OnPrem identity {mi} in region us-east-1 and will expire at "
        )),
        "{creds:?}"
    );
    assert_eq!(code, 0, "{checks:#?}");
    let shared = agent.dir.path().join(".aws/credentials");
    assert!(
        !shared.exists(),
        "diagnose must not share credentials with scripts"
    );
}
