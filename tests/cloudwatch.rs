//! Run Command output to CloudWatch Logs (docs/protocol.md §3.11) against the emulator: lines
//! streamed while the script runs, in batches within PutLogEvents' limits, at upstream's group
//! and stream names; a refused upload is written into the step's stderr.

mod common;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::{Emulator, FaultTarget, aws_run_shell_script_payload as shell_payload};
use std::time::Duration;

const FINAL_WAIT: Duration = Duration::from_secs(60);
const INSTANCE: &str = "i-0123456789abcdef0";

fn final_of(emu: &Emulator, msg: &str) -> Value {
    emu.wait_final(msg, FINAL_WAIT)
        .unwrap_or_else(|| panic!("no final reply for {msg}; replies: {:?}", emu.replies(msg)))
        .payload
}

/// AWS-RunShellScript with CloudWatch output on, to the default group.
fn cloudwatch_payload(id: &str, commands: &[&str]) -> Value {
    let mut payload = shell_payload(id, commands, 600);
    payload["CloudWatchOutputEnabled"] = json!("true");
    payload
}

/// What a stream holds, its events joined with `\n` as the console shows them.
fn joined(emu: &Emulator, group: &str, stream: &str) -> String {
    let events = emu.log_events(group, stream);
    events
        .unwrap_or_else(|| panic!("no stream {stream}; group has {:?}", emu.log_streams(group)))
        .join("\n")
}

#[test]
fn output_streams_to_cloudwatch_while_the_script_runs() {
    let emu = emulator();
    let agent = Agent::start(&emu, json!({ "CloudWatchLogs": { "Endpoint": emu.url() } }));
    let go_on = agent.scratch().join("go-on");
    // 25,000 lines before the script waits: more than two batches of 10,000 events.
    let script = format!(
        "seq -f 'early %g' 25000\n\
         echo 'to stderr' >&2\n\
         while [ ! -e {go} ]; do sleep 0.05; done\n\
         echo late\n\
         echo ''\n\
         echo 'more stderr' >&2\n\
         printf 'no newline'",
        go = go_on.display()
    );
    let id = "cccccccc-0000-4000-8000-000000000001";
    let msg = emu.send_command(&cloudwatch_payload(id, &[&script]));

    let group = "/aws/ssm/AWS-RunShellScript";
    let stdout = format!("{id}/{INSTANCE}/aws-runShellScript/stdout");
    let stderr = format!("{id}/{INSTANCE}/aws-runShellScript/stderr");
    // The early lines arrive while the script still waits for the test.
    let streamed = emu.wait_until(Duration::from_secs(30), |st| {
        st.logs().has(group, &stdout, "early 25000")
    });
    assert!(
        streamed,
        "the early lines did not arrive while the script ran"
    );
    assert!(
        emu.replies(&msg)
            .iter()
            .all(|r| r.payload["documentStatus"] != "Success")
    );
    std::fs::write(&go_on, "").unwrap();

    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "Success", "{reply}");
    let mut expected: String = (1..=25000).map(|i| format!("early {i}\n")).collect();
    expected.push_str("late\n\nno newline");
    assert_eq!(joined(&emu, group, &stdout), expected);
    assert_eq!(joined(&emu, group, &stderr), "to stderr\nmore stderr");
    assert!(
        emu.log_puts(group, &stdout) >= 3,
        "{}",
        emu.log_puts(group, &stdout)
    );
    assert!(
        emu.signature_failures().is_empty(),
        "{:?}",
        emu.signature_failures()
    );
    assert_eq!(plugin(&reply)["standardError"], "to stderr\nmore stderr\n");
}

#[test]
fn a_given_group_gets_one_stream_pair_per_step() {
    let emu = emulator();
    let _agent = Agent::start(&emu, json!({ "CloudWatchLogs": { "Endpoint": emu.url() } }));
    let id = "cccccccc-0000-4000-8000-000000000002";
    let payload = json!({
        "CommandId": id,
        "DocumentName": "Two Steps",
        "CloudWatchOutputEnabled": "true",
        "CloudWatchLogGroupName": "my-group",
        "DocumentContent": {
            "schemaVersion": "2.2",
            "mainSteps": [
                { "action": "aws:runShellScript", "name": "first",
                  "inputs": { "runCommand": ["echo one"] } },
                { "action": "aws:runShellScript", "name": "second",
                  "inputs": { "runCommand": ["echo two; echo oops >&2"] } }
            ]
        }
    });
    let reply = final_of(&emu, &emu.send_command(&payload));
    assert_eq!(reply["documentStatus"], "Success", "{reply}");
    let prefix = format!("{id}/{INSTANCE}");
    assert_eq!(
        emu.log_streams("my-group"),
        [
            format!("{prefix}/first/stdout"),
            format!("{prefix}/second/stderr"),
            format!("{prefix}/second/stdout"),
        ]
    );
    assert_eq!(
        joined(&emu, "my-group", &format!("{prefix}/first/stdout")),
        "one"
    );
    assert_eq!(
        joined(&emu, "my-group", &format!("{prefix}/second/stdout")),
        "two"
    );
    assert_eq!(
        joined(&emu, "my-group", &format!("{prefix}/second/stderr")),
        "oops"
    );
}

#[test]
fn a_refused_upload_is_written_into_the_steps_stderr() {
    let emu = emulator();
    let _agent = Agent::start(&emu, json!({ "CloudWatchLogs": { "Endpoint": emu.url() } }));
    emu.refuse_put_log_events(Some((400, "AccessDeniedException")));
    let id = "cccccccc-0000-4000-8000-000000000003";
    let reply = final_of(
        &emu,
        &emu.send_command(&cloudwatch_payload(id, &["echo hi"])),
    );
    let err = plugin(&reply)["standardError"].as_str().unwrap().to_owned();
    assert!(
        err.contains("ssm-lite could not send this step's stdout to CloudWatch Logs")
            && err.contains("AccessDeniedException"),
        "{reply}"
    );
    assert_eq!(plugin(&reply)["standardOutput"], "hi\n");
}

#[test]
fn throttled_and_failing_calls_are_retried() {
    let emu = emulator();
    let _agent = Agent::start(&emu, json!({ "CloudWatchLogs": { "Endpoint": emu.url() } }));
    emu.set_fault_target(FaultTarget::Logs);
    // The first call (CreateLogGroup) meets four refusals in a row, within its five retries.
    emu.fail_next(1, 400, "ThrottlingException");
    emu.fail_next(1, 503, "ServiceUnavailableException");
    emu.fail_next(1, 400, "ThrottlingException");
    emu.fail_next(1, 500, "InternalFailure");
    let id = "cccccccc-0000-4000-8000-000000000004";
    let reply = final_of(
        &emu,
        &emu.send_command(&cloudwatch_payload(id, &["echo a; echo b"])),
    );
    assert_eq!(plugin(&reply)["standardError"], "", "{reply}");
    let stream = format!("{id}/{INSTANCE}/aws-runShellScript/stdout");
    assert_eq!(joined(&emu, "/aws/ssm/AWS-RunShellScript", &stream), "a\nb");
    let calls = ["CreateLogGroup", "CreateLogStream", "PutLogEvents"]
        .map(|op| emu.count(&format!("Logs_20140328.{op}")));
    assert_eq!(calls, [5, 1, 1]);
}

#[test]
fn an_unusable_endpoint_is_reported_in_each_step() {
    let emu = emulator();
    let _agent = Agent::start(
        &emu,
        json!({ "CloudWatchLogs": { "Endpoint": "ftp://logs" } }),
    );
    let id = "cccccccc-0000-4000-8000-000000000005";
    let reply = final_of(
        &emu,
        &emu.send_command(&cloudwatch_payload(id, &["echo hi"])),
    );
    let err = plugin(&reply)["standardError"].as_str().unwrap().to_owned();
    assert!(
        err.starts_with("ssm-lite could not send this step's output to CloudWatch Logs: the logs endpoint is not usable")
            && err.contains("ftp"),
        "{reply}"
    );
    assert_eq!(emu.count("Logs_20140328.CreateLogGroup"), 0);
}
