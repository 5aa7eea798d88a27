//! Run Command output to CloudWatch Logs (docs/protocol.md §3.11) judged by moto's server
//! (tests/moto/server.rs), an implementation this project did not write: with
//! `CloudWatchLogs.Endpoint` at moto, boto3's `get_log_events` reads back the script's output.
//! ec2messages, IMDS and the rest are the emulator's, which sends the command.

mod common;
#[path = "moto/server.rs"]
mod moto;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::aws_run_shell_script_payload as shell_payload;
use std::time::Duration;

#[test]
fn output_reaches_motos_log_group() {
    let Some(venv) = moto::installed() else {
        return;
    };
    let scratch = TempDir::new("moto-logs");
    let moto = moto::Moto::start(&venv, scratch.path().join("moto.log"));
    let emu = emulator();
    let _agent = Agent::start(
        &emu,
        json!({ "CloudWatchLogs": { "Endpoint": moto.url() } }),
    );

    let id = "dddddddd-0000-4000-8000-000000000001";
    // More than one batch of 10,000 events, an empty line, stderr, and a last line without `\n`.
    let script = "seq -f 'line %g' 12000; echo; echo 'to stderr' >&2; printf end";
    let mut payload = shell_payload(id, &[script], 600);
    payload["CloudWatchOutputEnabled"] = json!("true");
    let msg = emu.send_command(&payload);
    let reply = emu
        .wait_final(&msg, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no final reply; {:?}", emu.replies(&msg)))
        .payload;
    assert_eq!(reply["documentStatus"], "Success", "{reply}");

    let group = "/aws/ssm/AWS-RunShellScript";
    let held: Value = serde_json::from_str(&moto.python(
        &venv,
        "read_logs.py",
        &[moto.url(), "us-east-1", group],
        "",
    ))
    .unwrap();
    let joined = |stream: &str| {
        let key = format!("{id}/i-0123456789abcdef0/aws-runShellScript/{stream}");
        let events = held[&key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} in {held}"));
        let lines: Vec<&str> = events.iter().map(|e| e.as_str().unwrap()).collect();
        lines.join("\n")
    };
    let mut stdout: String = (1..=12000).map(|i| format!("line {i}\n")).collect();
    stdout.push_str("\nend");
    assert_eq!(joined("stdout"), stdout);
    assert_eq!(joined("stderr"), "to stderr");
}
