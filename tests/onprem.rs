//! Hybrid activation end to end: `ssm-lite register` against the emulator, then the agent running
//! as `mi-…` on RSA-signed role-token credentials.

mod common;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::aws_run_shell_script_payload as shell_payload;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// An agent whose identity is on-prem only: no IMDS to fall back on.
fn onprem_agent(emu: &ssm_emulator::Emulator) -> Agent {
    onprem_agent_with(emu, json!({}))
}

fn register(agent: &Agent, emu: &ssm_emulator::Emulator) -> String {
    let (mi, err) = register_agent(agent, emu);
    assert!(
        err.contains("systemctl restart ssm-lite"),
        "says how to start: {err}"
    );
    mi
}

fn run_over_mgs(emu: &ssm_emulator::Emulator, command_id: &str, script: &str) -> Value {
    let job = emu.send_agent_job(&shell_payload(command_id, &[script], 3600));
    emu.wait_job_final(&job, WAIT)
        .unwrap_or_else(|| panic!("no final reply for {job}"))
        .payload
}

/// Once the agent is on the control channel, a command runs as `instance_id`.
fn assert_runs_commands_as(
    emu: &ssm_emulator::Emulator,
    agent: &Agent,
    command_id: &str,
    instance_id: &str,
) {
    assert!(
        emu.wait_mgs_connected(WAIT),
        "control channel; log:\n{}",
        agent.log()
    );
    let reply = run_over_mgs(emu, command_id, "echo as $AWS_SSM_INSTANCE_ID");
    assert_eq!(reply["documentStatus"], "Success");
    assert_eq!(
        plugin(&reply)["standardOutput"],
        format!("as {instance_id}\n")
    );
}

#[test]
fn a_registered_agent_runs_commands_as_mi_with_rsa_signed_credentials() {
    let emu = emulator();
    let mut agent = onprem_agent(&emu);
    let mi = register(&agent, &emu);
    for f in std::fs::read_dir(agent.state_dir().join("registration")).unwrap() {
        let mode = f.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "registration files are private");
    }
    agent.start_again();
    assert_runs_commands_as(&emu, &agent, "12121212-0000-4000-8000-000000000001", &mi);
    assert!(emu.wait_until(WAIT, |s| !s.health_pings().is_empty()));
    assert_eq!(emu.health_pings()[0].request["InstanceId"], mi.as_str());
    assert!(
        !emu.rsa_checks().is_empty(),
        "role tokens were requested with RSA signatures"
    );
    assert!(
        emu.rsa_signature_failures().is_empty(),
        "{:?}",
        emu.rsa_signature_failures()
    );
    assert!(
        emu.signature_failures().is_empty(),
        "{:?}",
        emu.signature_failures()
    );
    let log = agent.log();
    let key =
        std::fs::read_to_string(agent.state_dir().join("registration/registration.json")).unwrap();
    let private: Value = serde_json::from_str(&key).unwrap();
    let private = private["privateKey"].as_str().unwrap();
    assert!(
        !log.contains(&private[..40]),
        "the private key never reaches the log"
    );
}

/// Parameter Store on a hybrid node: the lookup is signed with the role-token credentials (the
/// only ones this agent has: no IMDS), and the value reaches the script.
#[test]
fn a_registered_agent_resolves_parameter_store_references() {
    let emu = emulator();
    let mut agent = onprem_agent(&emu);
    let mi = register(&agent, &emu);
    agent.start_again();
    assert!(emu.wait_mgs_connected(WAIT), "log:\n{}", agent.log());
    emu.put_parameter("/app/site", ssm_emulator::ParameterType::String, "on-prem");
    let reply = run_over_mgs(
        &emu,
        "12121212-0000-4000-8000-0000000000a7",
        "echo {{ssm:/app/site}} $AWS_SSM_INSTANCE_ID",
    );
    assert_eq!(reply["documentStatus"], "Success", "{reply}");
    assert_eq!(
        plugin(&reply)["standardOutput"],
        format!("on-prem {mi}\n"),
        "{reply}"
    );
    assert_eq!(emu.get_parameters_calls().len(), 1);
    assert!(
        emu.signature_failures().is_empty(),
        "{:?}",
        emu.signature_failures()
    );
}

/// Installed before it was registered (the .deb does not start it then, but a boot does): the
/// agent waits for an identity instead of exiting, and takes the registration when it appears.
#[test]
fn an_agent_started_before_registration_takes_it_up_without_a_restart() {
    let emu = emulator();
    let mut agent = onprem_agent(&emu);
    agent.start_again();
    assert!(
        agent.wait_log("no usable identity yet", WAIT),
        "{}",
        agent.log()
    );
    let mi = register(&agent, &emu);
    assert_runs_commands_as(&emu, &agent, "12121212-0000-4000-8000-000000000002", &mi);
    assert!(emu.wait_until(WAIT, |s| !s.health_pings().is_empty()));
    assert_eq!(emu.health_pings()[0].request["InstanceId"], mi.as_str());
}

/// amazon-ssm-agent's `-register -role R -region X -tags JSON` (`core/agent_parser.go`,
/// `agent/ssm/authregister/`): no activation, signed with the machine's instance profile, the
/// role and the non-empty tags in the body; the new `mi-…` then works like an activated one.
#[test]
fn a_role_registration_is_signed_with_the_instance_profile_and_carries_its_tags() {
    let emu = emulator();
    let mut agent = Agent::prepare(
        &emu,
        json!({ "Identity": { "ConsumptionOrder": ["OnPrem"] } }),
        &[],
    );
    let config = agent.dir.path().join("amazon-ssm-agent.json");
    let tags = r#"[{"Key":"env","Value":"lab"},{"Key":"","Value":"dropped"}]"#;
    let out = agent_command()
        .args([
            "-register",
            "-role",
            "SSMServiceRole",
            "-region",
            "us-east-1",
        ])
        .args(["-tags", tags, "-disableSimilarityCheck", "-y"])
        .arg("-config")
        .arg(&config)
        .arg("-state-dir")
        .arg(agent.state_dir())
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", emu.url())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let mi = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(mi.starts_with("mi-"), "{mi:?}");
    let registrations = emu.registrations();
    let [r] = &registrations[..] else {
        panic!("{registrations:?}")
    };
    assert_eq!(r.instance_id.as_deref(), Some(mi.as_str()), "{r:?}");
    assert_eq!(r.iam_role.as_deref(), Some("SSMServiceRole"));
    assert_eq!(r.tags, Some(json!([{"Key": "env", "Value": "lab"}])));
    assert_eq!(r.activation_id, "");
    assert!(
        emu.signature_failures().is_empty(),
        "{:?}",
        emu.signature_failures()
    );
    let fingerprint: Value = serde_json::from_slice(
        &std::fs::read(agent.state_dir().join("registration/fingerprint.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(fingerprint["similarityThreshold"], -1);

    // `-fingerprint -similarityThreshold N` changes only the threshold, within upstream's bounds.
    let threshold = |n: &str| {
        let state = agent.state_dir();
        let args = ["-fingerprint", "-similarityThreshold", n, "-state-dir"];
        let out = agent_command().args(args).arg(&state).output().unwrap();
        let stored: Value = serde_json::from_slice(
            &std::fs::read(state.join("registration/fingerprint.json")).unwrap(),
        )
        .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            stored,
        )
    };
    let (code, _, stored) = threshold("60");
    assert_eq!(
        (code, &stored["similarityThreshold"]),
        (Some(0), &json!(60))
    );
    assert_eq!(stored["fingerprint"], fingerprint["fingerprint"]);
    let (code, err, stored) = threshold("0");
    assert_eq!(
        (code, &stored["similarityThreshold"]),
        (Some(1), &json!(60))
    );
    assert!(
        err.contains("Invalid Similarity Threshold value of 0. Value must be between 1 and 100 or -1 (check disabled)"),
        "{err}"
    );

    agent.start_again();
    assert_runs_commands_as(&emu, &agent, "12121212-0000-4000-8000-000000000011", &mi);
}

#[test]
fn a_wrong_activation_is_refused_in_plain_words() {
    let emu = emulator();
    let agent = onprem_agent(&emu);
    let (status, out, err) = agent.cli(&[
        "register",
        "--code",
        "wrong-code",
        "--id",
        "9e1f5a5c-7a3b-4d2e-8f60-0123456789ab",
        "--region",
        "us-east-1",
    ]);
    assert_eq!(status, 1, "{out}{err}");
    assert!(err.to_lowercase().contains("activation"), "{err}");
    assert!(
        !agent
            .state_dir()
            .join("registration/registration.json")
            .exists()
    );
}

#[test]
fn short_lived_credentials_are_refreshed_before_they_expire() {
    let emu = emulator();
    emu.set_role_token_lifetime(Duration::from_secs(20));
    let mut agent = onprem_agent(&emu);
    register(&agent, &emu);
    agent.start_again();
    assert!(emu.wait_mgs_connected(WAIT));
    // Five lifetimes of use, one command every 8 s: every call must find valid credentials.
    for i in 0..12 {
        let reply = run_over_mgs(&emu, &format!("13131313-0000-4000-8000-{i:012}"), "true");
        assert_eq!(reply["documentStatus"], "Success", "command {i}");
        std::thread::sleep(Duration::from_secs(8)); // the passage of time is the test
    }
    let tokens = emu.role_token_requests();
    assert!(
        tokens.len() >= 6,
        "refreshed repeatedly (about every 10 s): {}",
        tokens.len()
    );
    assert!(
        tokens.iter().all(|t| t.succeeded()),
        "no failed role-token call"
    );
    assert!(
        emu.signature_failures().is_empty(),
        "no call was signed with expired credentials: {:?}",
        emu.signature_failures()
    );
}

#[test]
fn the_service_asks_for_a_new_key_and_later_calls_use_it() {
    let emu = emulator();
    emu.set_role_token_lifetime(Duration::from_secs(20));
    let mut agent = onprem_agent(&emu);
    let mi = register(&agent, &emu);
    agent.start_again();
    assert!(emu.wait_mgs_connected(WAIT));
    let before = emu.current_public_key(&mi).unwrap();
    emu.request_key_rotation(&mi);
    assert!(
        emu.wait_until(Duration::from_secs(60), |s| !s.key_rotations().is_empty()),
        "the agent rotated its key"
    );
    let after = emu.current_public_key(&mi).unwrap();
    assert_ne!(before, after);
    // After a restart the new key is the one on disk and the one that works.
    agent.restart();
    assert!(emu.wait_mgs_connected(WAIT));
    let reply = run_over_mgs(&emu, "14141414-0000-4000-8000-000000000001", "true");
    assert_eq!(reply["documentStatus"], "Success");
    assert!(
        emu.rsa_signature_failures().is_empty(),
        "{:?}",
        emu.rsa_signature_failures()
    );
}

#[test]
fn an_amazon_ssm_agent_vault_is_imported_and_works() {
    let emu = emulator();
    // A registration the service knows, made by ssm-lite, then laid out as amazon-ssm-agent
    // keeps it (docs/protocol.md §5.4) for a second, fresh agent to import.
    let donor = onprem_agent(&emu);
    let mi = register(&donor, &emu);
    let reg: Value = serde_json::from_slice(
        &std::fs::read(donor.state_dir().join("registration/registration.json")).unwrap(),
    )
    .unwrap();
    let vault = donor.dir.path().join("Vault");
    std::fs::create_dir_all(vault.join("Store")).unwrap();
    let record = json!({
        "instanceID": mi, "region": "us-east-1", "instanceType": "", "availabilityZone": "",
        "privateKey": reg["privateKey"], "publicKey": "", "privateKeyType": "Rsa",
        "privateKeyCreatedDate": "2024-05-01 10:00:00.123456789 +0000 UTC"
    });
    let fingerprint =
        json!({ "fingerprint": reg["fingerprint"], "hardwareHash": {}, "similarityThreshold": 40 });
    std::fs::write(vault.join("Store/RegistrationKey"), record.to_string()).unwrap();
    std::fs::write(
        vault.join("Store/InstanceFingerprint"),
        fingerprint.to_string(),
    )
    .unwrap();
    let manifest = json!({
        "RegistrationKey": vault.join("Store/RegistrationKey"),
        "InstanceFingerprint": vault.join("Store/InstanceFingerprint"),
    });
    std::fs::write(vault.join("Manifest"), manifest.to_string()).unwrap();

    let mut agent = onprem_agent(&emu);
    let (status, out, err) = agent.cli(&[
        "register",
        "--import-amazon-ssm-agent",
        "--amazon-ssm-agent-vault",
        vault.to_str().unwrap(),
    ]);
    assert_eq!(status, 0, "{err}");
    assert_eq!(out.trim(), mi, "same managed instance id");
    agent.start_again();
    assert!(emu.wait_mgs_connected(WAIT));
    let reply = run_over_mgs(
        &emu,
        "15151515-0000-4000-8000-000000000001",
        "echo imported",
    );
    assert_eq!(plugin(&reply)["standardOutput"], "imported\n");
    assert!(emu.rsa_signature_failures().is_empty());
}

#[test]
fn an_ec2_instance_without_a_role_uses_default_host_management() {
    let options = ssm_emulator::Options {
        poll_hold: Duration::from_secs(2),
        role_name: None,
        ..ssm_emulator::Options::default()
    };
    let iid = options.instance_id.clone();
    let emu = ssm_emulator::Emulator::start(options);
    let agent = Agent::start(&emu, json!({ "Identity": { "ConsumptionOrder": ["EC2"] } }));
    assert_runs_commands_as(&emu, &agent, "16161616-0000-4000-8000-000000000001", &iid);
    let registrations = emu.read(|st| st.registrations().to_vec());
    assert_eq!(registrations.len(), 1, "{registrations:?}");
    let registration = &registrations[0];
    assert_eq!(registration.fingerprint, iid);
    assert_eq!(registration.instance_id.as_deref(), Some(iid.as_str()));
    let checks = emu.rsa_checks();
    assert!(
        checks
            .iter()
            .any(|c| c.ok() && c.operation == "RequestManagedInstanceRoleToken"),
        "role tokens were requested with a valid asymmetric signature: {checks:?}"
    );
    assert!(
        emu.rsa_signature_failures().is_empty(),
        "{:?}",
        emu.rsa_signature_failures()
    );
    assert!(
        emu.signature_failures().is_empty(),
        "{:?}",
        emu.signature_failures()
    );
    let stored = agent.state_dir().join("registration-ec2/registration.json");
    assert!(stored.exists(), "EC2 registration kept apart from on-prem");
    assert!(!agent.state_dir().join("registration").exists());
}

/// A managed instance whose clock is an hour ahead of the services': its first RSA-signed
/// RequestManagedInstanceRoleToken is refused as "Signature not yet current", the agent takes
/// the service's time, signs again, and judges the token's expiry (an hour of service time, so
/// "now" by the wrong clock) by the corrected clock; every later call is signed right.
#[test]
fn an_rsa_signed_token_call_corrects_a_clock_an_hour_ahead() {
    let emu = skewed_emulator(-3600);
    let mut agent = onprem_agent(&emu);
    let mi = register(&agent, &emu);
    agent.start_again();
    assert_runs_commands_as(&emu, &agent, "5ce70000-0000-4000-8000-000000000005", &mi);
    let rsa: Vec<(String, Option<String>)> = emu
        .rsa_checks()
        .iter()
        .map(|c| (c.operation.clone(), c.result.failure().map(str::to_owned)))
        .collect();
    let refused = rsa.iter().filter(|(_, failure)| failure.is_some()).count();
    assert_eq!(refused, 1, "{rsa:?}");
    assert!(
        rsa[0]
            .1
            .as_deref()
            .is_some_and(|m| m.starts_with("Signature not yet current"))
            && rsa[1].1.is_none(),
        "the first token call refused for its time, the second taken: {rsa:?}"
    );
    assert!(
        emu.signature_failures()
            .iter()
            .all(|r| r.target.ends_with("RequestManagedInstanceRoleToken")),
        "the SigV4 calls were signed right the first time: {:?}",
        emu.signature_failures()
    );
    let log = agent.log();
    let said = log.matches("clock: the system clock is").count();
    assert_eq!(said, 1, "{log}");
    assert!(log.contains(" s ahead of the AWS service's"), "{log}");
}
