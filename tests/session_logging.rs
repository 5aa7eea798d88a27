//! Session logging end to end (docs/protocol.md §4.9): the real agent and a real PTY, the
//! emulator as service, client, S3 and CloudWatch Logs.

mod common;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::{Emulator, SessionSpec};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn logging_agent(emu: &Emulator) -> Agent {
    let agent = Agent::start(
        emu,
        json!({ "S3": { "Endpoint": emu.url() }, "CloudWatchLogs": { "Endpoint": emu.url() } }),
    );
    assert!(emu.wait_mgs_connected(WAIT), "log:\n{}", agent.log());
    agent
}

/// A shell session logging to `inputs`; runs `echo` twice, then exits. Its task-complete payload.
/// With `streamed_to` (a group), the first answer must reach the group while the shell still runs.
fn logged_shell(emu: &Emulator, inputs: Value, streamed_to: Option<&str>) -> (String, Value) {
    let mut spec = SessionSpec::standard_stream();
    for (k, v) in inputs.as_object().unwrap() {
        spec.inputs[k] = v.clone();
    }
    let s = emu.start_session(spec).expect("session starts");
    s.send_input(b"echo one-$((40+2))\r");
    s.read_output_until("one-42", WAIT)
        .expect("the shell answers");
    if let Some(group) = streamed_to {
        let live = emu.wait_until(WAIT, |st| {
            let events = st.logs().messages(group, s.id()).unwrap_or_default();
            events.iter().any(|e| e.contains("one-42"))
        });
        assert!(live, "streamed while the session runs");
    }
    s.send_input(b"printf 'two\\t%s\\n' $((6*7)); exit\r");
    s.read_output_until("two\t42", WAIT)
        .expect("the shell answers");
    assert!(s.wait_closed(WAIT), "exit ends the session");
    let done = emu
        .wait_task_complete(s.id(), WAIT)
        .expect("agent_task_complete");
    assert_eq!(done.final_status, "Success", "{}", done.payload);
    (s.id().to_owned(), done.payload)
}

#[test]
fn a_shell_transcript_lands_at_upstreams_key_and_the_completion_names_it() {
    let emu = emulator();
    emu.create_bucket("session-logs", "us-east-1");
    emu.set_bucket_encryption("session-logs", "AES256");
    let agent = logging_agent(&emu);
    let (id, done) = logged_shell(
        &emu,
        json!({ "s3BucketName": "session-logs", "s3KeyPrefix": "fleet/", "s3EncryptionEnabled": true }),
        None,
    );
    let key = format!("fleet/{id}.log");
    assert_eq!(done["S3Bucket"], "session-logs");
    assert_eq!(done["S3UrlSuffix"], key.as_str());
    assert_eq!(
        (done["CwlGroup"].as_str(), done["CwlStream"].as_str()),
        (Some(""), Some(""))
    );
    let object = emu
        .s3_object_with_headers("session-logs", &key)
        .unwrap_or_else(|| panic!("no transcript at {key}; log:\n{}", agent.log()));
    let text = String::from_utf8_lossy(&object.body).into_owned();
    assert!(text.starts_with("Script started on "), "{text}");
    let last = text.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("Script done on ") && last.ends_with("[COMMAND_EXIT_CODE=\"0\"]"),
        "{last:?}"
    );
    // The terminal stream as the client had it: the PTY's echo with its \r\n line ends.
    assert!(text.contains("echo one-$((40+2))\r\n"), "{text:?}");
    assert!(text.contains("one-42\r\n"), "{text:?}");
    assert!(text.contains("two\t42\r\n"), "{text:?}");
    assert_eq!(object.headers["x-amz-server-side-encryption"], "AES256");
}

#[test]
fn a_streamed_session_sends_upstreams_json_events_to_its_stream() {
    let emu = emulator();
    emu.create_log_group("/ssm/sessions", None);
    let agent = logging_agent(&emu);
    let (id, done) = logged_shell(
        &emu,
        json!({ "cloudWatchLogGroupName": "/ssm/sessions", "cloudWatchEncryptionEnabled": false,
                "cloudWatchStreamingEnabled": true }),
        Some("/ssm/sessions"),
    );
    assert_eq!(
        (done["CwlGroup"].as_str(), done["CwlStream"].as_str()),
        (Some("/ssm/sessions"), Some(id.as_str()))
    );
    let events = emu
        .log_events("/ssm/sessions", &id)
        .unwrap_or_else(|| panic!("no stream {id}; log:\n{}", agent.log()));
    let events: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let first = &events[0];
    assert_eq!(first["eventVersion"], "1.0");
    assert_eq!(first["sessionId"], id.as_str());
    assert_eq!(first["target"]["id"], "i-0123456789abcdef0");
    assert_eq!(
        first["userIdentity"]["arn"],
        "arn:aws:iam::123456789012:user/emulator"
    );
    assert!(
        first["awsRegion"].as_str().is_some_and(|r| !r.is_empty()),
        "{first}"
    );
    assert!(
        first["runAsUser"].as_str().is_some_and(|u| !u.is_empty()),
        "{first}"
    );
    assert!(
        first["eventTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{first}"
    );
    let lines: Vec<&str> = events
        .iter()
        .flat_map(|e| {
            e["sessionData"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap())
        })
        .collect();
    // A prompt may come before the shell's answer on its line, depending on the echo's timing.
    assert!(lines.iter().any(|l| l.ends_with("one-42")), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.ends_with("two 42")),
        "tabs become spaces: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| !l.contains('\r') && !l.contains('\u{1b}') && !l.contains("Script ")),
        "{lines:?}"
    );
}

#[test]
fn an_unencrypted_bucket_refuses_the_session_once_with_upstreams_text() {
    let emu = emulator();
    emu.create_bucket("plain-bucket", "us-east-1");
    let agent = logging_agent(&emu);
    let marker = agent.scratch().join("shell-ran");
    let (id, done) = refused_session(
        &emu,
        json!({
            "s3BucketName": "plain-bucket",
            "s3EncryptionEnabled": true,
            "shellProfile": {"linux": format!("touch {}", marker.display())},
        }),
    );
    assert_eq!(done.final_status, "Failed");
    let output = done.payload["Output"].as_str().unwrap();
    assert!(
        output.starts_with(
            "Couldn't start the session because we are unable to validate encryption on Amazon S3 bucket. Error: "
        ) && output.contains("ServerSideEncryptionConfigurationNotFoundError"),
        "{output}"
    );
    assert!(!marker.exists(), "no shell started");
    assert_eq!(
        emu.task_completes(&id).len(),
        1,
        "sent once (upstream sends it twice)"
    );
    assert!(
        emu.s3_object("plain-bucket", &format!("{id}.log"))
            .is_none()
    );
}

#[test]
fn a_log_group_without_a_kms_key_refuses_an_encrypted_session() {
    let emu = emulator();
    emu.create_log_group("/ssm/plain", None);
    let _agent = logging_agent(&emu);
    let (_, done) = refused_session(
        &emu,
        json!({"cloudWatchLogGroupName": "/ssm/plain", "cloudWatchEncryptionEnabled": true}),
    );
    assert_eq!(done.final_status, "Failed");
    assert_eq!(
        done.payload["Output"],
        "We couldn't start the session because encryption is not set up on the selected CloudWatch Logs log group. Either encrypt the log group or choose an option to enable logging without encryption."
    );
}

#[test]
fn a_command_session_uploads_its_whole_transcript_to_an_unstreamed_group() {
    let emu = emulator();
    emu.create_log_group("/ssm/commands", None);
    let _agent = logging_agent(&emu);
    let mut spec = SessionSpec::non_interactive_commands("echo out; echo err >&2; exit 3", true);
    spec.inputs["cloudWatchLogGroupName"] = json!("/ssm/commands");
    spec.inputs["cloudWatchEncryptionEnabled"] = json!(false);
    spec.inputs["cloudWatchStreamingEnabled"] = json!(false);
    let s = emu.start_session(spec).expect("session starts");
    assert_eq!(s.wait_exit_code(WAIT), Some(3));
    let done = emu
        .wait_task_complete(s.id(), WAIT)
        .expect("agent_task_complete");
    assert_eq!(done.payload["CwlStream"], s.id());
    let events = emu
        .log_events("/ssm/commands", s.id())
        .expect("the session's stream");
    let text = events.join("\n");
    assert!(text.starts_with("Script started on "), "{text}");
    // Upstream logs what the client got: both streams and the exit code payload.
    assert!(text.contains("out\n") && text.contains("err\n"), "{text:?}");
    assert!(text.contains("EXIT_CODE: 3"), "{text:?}");
    assert!(text.ends_with("[COMMAND_EXIT_CODE=\"0\"]"), "{text:?}");
}

#[test]
fn port_sessions_are_not_logged() {
    let emu = emulator();
    emu.create_bucket("session-logs", "us-east-1");
    let _agent = logging_agent(&emu);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut spec = SessionSpec::port(port, None, false);
    spec.inputs["s3BucketName"] = json!("session-logs");
    spec.inputs["s3EncryptionEnabled"] = json!(false);
    let s = emu.start_session(spec).expect("session starts");
    s.send_input(b"hello");
    let (mut conn, _) = listener.accept().unwrap();
    let mut got = [0u8; 5];
    std::io::Read::read_exact(&mut conn, &mut got).unwrap();
    assert_eq!(&got, b"hello");
    s.send_channel_closed();
    let done = emu
        .wait_task_complete(s.id(), WAIT)
        .expect("agent_task_complete");
    assert_eq!(done.payload["S3Bucket"], "", "{}", done.payload);
    assert!(
        emu.s3_object("session-logs", &format!("{}.log", s.id()))
            .is_none()
    );
}

#[test]
fn streamed_lines_refused_once_are_sent_again() {
    let emu = emulator();
    emu.create_log_group("/ssm/flaky", None);
    let agent = logging_agent(&emu);
    emu.refuse_put_log_events(Some((400, "AccessDeniedException")));
    let mut spec = SessionSpec::standard_stream();
    spec.inputs["cloudWatchLogGroupName"] = json!("/ssm/flaky");
    spec.inputs["cloudWatchEncryptionEnabled"] = json!(false);
    spec.inputs["cloudWatchStreamingEnabled"] = json!(true);
    let s = emu.start_session(spec).expect("session starts");
    s.send_input(b"echo flaky-$((40+2))\r");
    s.read_output_until("flaky-42", WAIT)
        .expect("the shell answers");
    assert!(
        agent.wait_log("failed to upload session data to CloudWatch", WAIT),
        "a put was refused"
    );
    emu.refuse_put_log_events(None);
    s.send_input(b"exit\r");
    assert!(s.wait_closed(WAIT), "exit ends the session");
    emu.wait_task_complete(s.id(), WAIT)
        .expect("agent_task_complete");
    let events = emu.log_events("/ssm/flaky", s.id()).unwrap_or_default();
    assert!(
        events.iter().any(|e| e.contains("flaky-42")),
        "{events:?}; log:\n{}",
        agent.log()
    );
}
