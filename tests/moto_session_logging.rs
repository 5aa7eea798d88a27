//! Session logging (docs/protocol.md §4.9) judged by moto's server (tests/moto/server.rs): a
//! shell session with `S3.Endpoint` and `CloudWatchLogs.Endpoint` at moto leaves its transcript
//! in moto's bucket at upstream's key and its streamed events in moto's log group, read back
//! with boto3; moto's bucket without default encryption refuses a session that asks for it. The
//! data channel, IMDS and the rest are the emulator's, which runs the session.

mod common;
#[path = "moto/server.rs"]
mod moto;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::SessionSpec;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn a_logged_shell_session_reaches_motos_bucket_and_log_group() {
    let Some(venv) = moto::installed() else {
        return;
    };
    let scratch = TempDir::new("moto-session-logs");
    let moto = moto::Moto::start(&venv, scratch.path().join("moto.log"));
    let create = [moto.url(), "create", "session-logs", "us-east-1"];
    moto.python(&venv, "read_s3.py", &create, "");
    let group = "/ssm/session-logs";
    moto.python(
        &venv,
        "create_log_group.py",
        &[moto.url(), "us-east-1", group],
        "",
    );

    let emu = emulator();
    let agent = Agent::start(
        &emu,
        json!({ "S3": { "Endpoint": moto.url() }, "CloudWatchLogs": { "Endpoint": moto.url() } }),
    );
    assert!(emu.wait_mgs_connected(WAIT), "log:\n{}", agent.log());
    let mut spec = SessionSpec::standard_stream();
    spec.inputs["s3BucketName"] = json!("session-logs");
    spec.inputs["s3KeyPrefix"] = json!("fleet");
    spec.inputs["s3EncryptionEnabled"] = json!(false);
    spec.inputs["cloudWatchLogGroupName"] = json!(group);
    spec.inputs["cloudWatchEncryptionEnabled"] = json!(false);
    spec.inputs["cloudWatchStreamingEnabled"] = json!(true);
    let s = emu.start_session(spec).expect("session starts");
    s.send_input(b"echo moto-$((40+2)); exit\r");
    s.read_output_until("moto-42", WAIT)
        .expect("the shell answers");
    assert!(s.wait_closed(WAIT), "exit ends the session");
    let done = emu
        .wait_task_complete(s.id(), WAIT)
        .expect("agent_task_complete");
    assert_eq!(done.final_status, "Success", "{}", done.payload);
    let key = format!("fleet/{}.log", s.id());
    assert_eq!(done.payload["S3UrlSuffix"], key.as_str());
    assert_eq!(done.payload["CwlGroup"], group);

    let out = scratch.path().join("objects");
    std::fs::create_dir_all(&out).unwrap();
    let read = [moto.url(), "read", "session-logs", out.to_str().unwrap()];
    let objects: Value =
        serde_json::from_str(&moto.python(&venv, "read_s3.py", &read, "")).unwrap();
    let object = objects
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["key"] == key.as_str())
        .unwrap_or_else(|| panic!("no {key} in {objects}; agent log:\n{}", agent.log()));
    let text = std::fs::read_to_string(object["file"].as_str().unwrap()).unwrap();
    assert!(text.starts_with("Script started on "), "{text}");
    assert!(text.contains("moto-42\r\n"), "{text:?}");
    assert!(
        text.trim_end().ends_with("[COMMAND_EXIT_CODE=\"0\"]"),
        "{text:?}"
    );

    let held: Value = serde_json::from_str(&moto.python(
        &venv,
        "read_logs.py",
        &[moto.url(), "us-east-1", group],
        "",
    ))
    .unwrap();
    let events = held[s.id()]
        .as_array()
        .unwrap_or_else(|| panic!("no stream in {held}"));
    let lines: Vec<String> = events
        .iter()
        .map(|e| serde_json::from_str::<Value>(e.as_str().unwrap()).unwrap())
        .inspect(|e| assert_eq!(e["sessionId"], s.id()))
        .flat_map(|e| e["sessionData"].as_array().unwrap().clone())
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    assert!(lines.iter().any(|l| l.ends_with("moto-42")), "{lines:?}");
}

#[test]
fn motos_bucket_without_default_encryption_refuses_an_encrypted_session() {
    let Some(venv) = moto::installed() else {
        return;
    };
    let scratch = TempDir::new("moto-session-refusal");
    let moto = moto::Moto::start(&venv, scratch.path().join("moto.log"));
    let create = [moto.url(), "create", "plain-session-logs", "us-east-1"];
    moto.python(&venv, "read_s3.py", &create, "");
    let emu = emulator();
    let agent = Agent::start(&emu, json!({ "S3": { "Endpoint": moto.url() } }));
    assert!(emu.wait_mgs_connected(WAIT), "log:\n{}", agent.log());
    let (_, done) = refused_session(
        &emu,
        json!({"s3BucketName": "plain-session-logs", "s3EncryptionEnabled": true}),
    );
    assert_eq!(done.final_status, "Failed");
    let output = done.payload["Output"].as_str().unwrap();
    assert!(
        output.starts_with("Couldn't start the session because we are unable to validate encryption on Amazon S3 bucket. Error: ")
            && output.contains("ServerSideEncryptionConfigurationNotFoundError"),
        "{output}"
    );
}
