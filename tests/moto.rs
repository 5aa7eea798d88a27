//! The agent against moto's server (tests/moto/server.rs), an AWS implementation this project
//! did not write: Parameter Store references (docs/protocol.md §3.7) resolved from parameters that
//! boto3 put into moto. Only `Ssm.Endpoint` points at moto; ec2messages, IMDS and the rest are the
//! emulator's, which sends the commands and collects the replies.

mod common;
#[path = "moto/server.rs"]
mod moto;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::{Emulator, aws_run_shell_script_payload as shell_payload};
use std::time::Duration;

const FINAL_WAIT: Duration = Duration::from_secs(30);

fn final_of(emu: &Emulator, msg: &str) -> Value {
    emu.wait_final(msg, FINAL_WAIT)
        .unwrap_or_else(|| panic!("no final reply for {msg}; replies: {:?}", emu.replies(msg)))
        .payload
}

fn run(emu: &Emulator, id: &str, commands: &[&str]) -> Value {
    final_of(emu, &emu.send_command(&shell_payload(id, commands, 600)))
}

/// The parameters the test puts into moto, in order (the greeting gets two versions).
fn parameters() -> Value {
    let mut list = vec![
        json!({"name": "/app/greeting", "type": "String", "value": "hello"}),
        json!({"name": "/app/greeting", "type": "String", "value": "howdy"}),
        json!({"name": "/app/steps", "type": "StringList", "value": "echo one,echo two"}),
        json!({"name": "/app/token", "type": "SecureString", "value": "t0ps3cret"}),
    ];
    list.extend(
        (0..23).map(
            |i| json!({"name": format!("/n/p{i}"), "type": "String", "value": format!("v{i}")}),
        ),
    );
    Value::Array(list)
}

#[test]
fn parameter_store_references_resolve_against_moto() {
    let Some(venv) = moto::installed() else {
        return;
    };
    let scratch = TempDir::new("moto");
    let moto = moto::Moto::start(&venv, scratch.path().join("moto.log"));
    let held: Value = serde_json::from_str(&moto.python(
        &venv,
        "put_parameters.py",
        &[moto.url()],
        &parameters().to_string(),
    ))
    .unwrap();
    assert_eq!(
        held["/app/greeting"],
        json!({"type": "String", "version": 2, "value": "howdy"})
    );
    assert_eq!(held["/app/token"]["type"], "SecureString");

    let emu = emulator();
    let agent = Agent::start(&emu, json!({ "Ssm": { "Endpoint": moto.url() } }));
    let marker = agent.scratch().join("ran");
    let touch = format!("touch {}", marker.display());
    let stdout = |reply: &Value| plugin(reply)["standardOutput"].clone();

    let reply = run(
        &emu,
        "ffffffff-0000-4000-8000-000000000001",
        &["echo {{ssm:/app/greeting}} {{ ssm:/app/greeting:1 }}"],
    );
    assert_eq!(stdout(&reply), "howdy hello\n", "{reply}");
    let reply = run(
        &emu,
        "ffffffff-0000-4000-8000-000000000002",
        &["{{ssm:/app/steps}}", "echo three"],
    );
    assert_eq!(stdout(&reply), "one\ntwo\nthree\n", "{reply}");
    // moto refuses more than ten names a call: 23 resolve only in batches.
    let all: Vec<String> = (0..23).map(|i| format!("{{{{ssm:/n/p{i}}}}}")).collect();
    let reply = run(
        &emu,
        "ffffffff-0000-4000-8000-000000000003",
        &[&format!("echo {}", all.join(" "))],
    );
    let want: Vec<String> = (0..23).map(|i| format!("v{i}")).collect();
    assert_eq!(stdout(&reply), format!("{}\n", want.join(" ")), "{reply}");

    for (id, reference, why) in [
        (
            "ffffffff-0000-4000-8000-000000000004",
            "{{ssm:/app/nope}}",
            "Input contains invalid parameters [/app/nope]",
        ),
        (
            "ffffffff-0000-4000-8000-000000000005",
            "{{ssm:/app/token}}",
            "Parameters [/app/token] of type SecureString are not supported",
        ),
    ] {
        let reply = run(&emu, id, &[&touch, &format!("echo {reference}")]);
        assert_eq!(reply["documentStatus"], "Failed", "{reply}");
        assert_eq!(reply["documentTraceOutput"], why, "{reply}");
    }
    assert!(!marker.exists(), "a script ran");
    assert!(
        emu.get_parameters_calls().is_empty(),
        "GetParameters went to the emulator, not moto"
    );
}
