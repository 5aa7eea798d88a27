//! Run Command end to end over ec2messages: the real agent binary against the emulator.

mod common;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::{aws_run_shell_script_payload as shell_payload, targets};
use std::fs;
use std::time::{Duration, Instant};

const FINAL_WAIT: Duration = Duration::from_secs(30);

fn run(emu: &ssm_emulator::Emulator, id: &str, commands: &[&str], timeout: u64) -> String {
    emu.send_command(&shell_payload(id, commands, timeout))
}

fn final_of(emu: &ssm_emulator::Emulator, msg: &str) -> Value {
    emu.wait_final(msg, FINAL_WAIT)
        .unwrap_or_else(|| panic!("no final reply for {msg}; replies: {:?}", emu.replies(msg)))
        .payload
}

#[test]
fn echo_succeeds_with_replies_in_order_and_valid_signatures() {
    let emu = emulator();
    let agent = Agent::start(&emu, json!({}));
    let msg = run(
        &emu,
        "11111111-1111-4111-8111-111111111111",
        &["echo hello from ssm-lite"],
        3600,
    );
    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "Success", "{reply}");
    let p = plugin(&reply);
    assert_eq!(p["status"], "Success");
    assert_eq!(p["code"], 0);
    assert_eq!(p["output"], "hello from ssm-lite\n");
    assert_eq!(p["standardOutput"], "hello from ssm-lite\n");
    assert_eq!(p["standardError"], "");
    assert_eq!(p["name"], "aws:runShellScript");
    assert_eq!(reply["additionalInfo"]["runtimeStatusCounts"]["Success"], 1);

    // Receipt, then the step, then the final reply; and the ack right after the receipt (§9 items 2-3).
    let replies = emu.replies(&msg);
    let statuses: Vec<&str> = replies.iter().map(|r| r.document_status()).collect();
    assert_eq!(statuses, ["InProgress", "InProgress", "Success"]);
    assert!(replies[0].payload["runtimeStatus"].is_null());
    let log = emu.request_log();
    let pos = |target: &str, nth: usize| {
        log.iter()
            .filter(|r| r.target == target && r.status == 200)
            .nth(nth)
            .map(|r| r.at)
    };
    let ack = pos(targets::ACKNOWLEDGE_MESSAGE, 0).expect("acked");
    assert!(
        pos(targets::SEND_REPLY, 0).unwrap() <= ack && ack <= pos(targets::SEND_REPLY, 1).unwrap()
    );
    assert!(
        emu.signature_failures().is_empty(),
        "{:?}",
        emu.signature_failures()
    );
    assert!(
        emu.wait_until(FINAL_WAIT, |s| !s.health_pings().is_empty()),
        "a health ping at start"
    );
    let ping = &emu.health_pings()[0].request;
    assert_eq!(ping["InstanceId"], "i-0123456789abcdef0");
    assert_eq!(ping["AgentStatus"], "Active");
    assert_eq!(ping["SSMConnectionChannel"], "ec2messages");
    drop(agent);
}

/// The packaged unit shields the agent from the OOM killer (`OOMScoreAdjust=-900`); the scripts it
/// runs must not inherit that: they start at 0 whatever the agent's own score. (The test moves
/// the agent's score up, not down: lowering needs CAP_SYS_RESOURCE, which systemd has and a test
/// machine may not.)
#[test]
fn scripts_start_with_the_default_oom_score_whatever_the_agents() {
    let emu = emulator();
    let agent = Agent::start(&emu, json!({}));
    let adj = format!("/proc/{}/oom_score_adj", agent.pid());
    fs::write(&adj, "500").unwrap();
    let msg = run(
        &emu,
        "0a0a0a0a-0000-4000-8000-000000000900",
        &["cat /proc/self/oom_score_adj"],
        60,
    );
    let reply = final_of(&emu, &msg);
    assert_eq!(plugin(&reply)["output"], "0\n", "{reply}");
    assert_eq!(fs::read_to_string(&adj).unwrap().trim(), "500");
}

#[test]
fn nonzero_exit_fails_with_its_code_and_separate_stderr() {
    let emu = emulator();
    let _agent = Agent::start(&emu, json!({}));
    let msg = run(
        &emu,
        "22222222-2222-4222-8222-222222222222",
        &["echo out", "echo err >&2", "exit 2"],
        3600,
    );
    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "Failed");
    let p = plugin(&reply);
    assert_eq!(p["code"], 2);
    assert_eq!(p["standardOutput"], "out\n");
    assert_eq!(
        p["standardError"],
        "err\n\nfailed to run commands: exit status 2"
    );
    assert_eq!(
        p["output"],
        "out\n\n----------ERROR-------\nerr\n\nfailed to run commands: exit status 2"
    );
}

#[test]
fn long_output_is_truncated_exactly() {
    let emu = emulator();
    let _agent = Agent::start(&emu, json!({}));
    let msg = run(
        &emu,
        "33333333-3333-4333-8333-333333333333",
        &["i=1; while [ $i -le 3000 ]; do echo \"line $i\"; i=$((i+1)); done"],
        3600,
    );
    let reply = final_of(&emu, &msg);
    let full: String = (1..=3000).map(|i| format!("line {i}\n")).collect();
    let p = plugin(&reply);
    let output = p["output"].as_str().unwrap();
    assert_eq!(
        output,
        format!("{}\n---Output truncated---", &full[..2500 - 23])
    );
    let std = p["standardOutput"].as_str().unwrap();
    assert_eq!(std, format!("{}--output truncated--", &full[..24000 - 20]));
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let emu = emulator();
    let agent = Agent::start(&emu, json!({}));
    let pgid_file = agent.scratch().join("pgid");
    let script = format!("echo $$ > {}; sleep 60 & sleep 60", pgid_file.display());
    let msg = run(&emu, "44444444-4444-4444-8444-444444444444", &[&script], 5);
    let pgid = wait_file(&pgid_file, Duration::from_secs(10)).expect("script started");
    let started = Instant::now();
    let reply = final_of(&emu, &msg);
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(reply["documentStatus"], "TimedOut");
    assert_eq!(plugin(&reply)["code"], 137);
    assert!(
        group_gone_within(&pgid, Duration::from_secs(10)),
        "process group {pgid} must be gone"
    );
}

#[test]
fn cancel_stops_a_running_command_and_a_queued_one_never_starts() {
    let emu = emulator();
    let agent = Agent::start(&emu, json!({ "Mds": { "CommandWorkersLimit": 1 } }));
    let (running_mark, queued_mark) = (
        agent.scratch().join("running"),
        agent.scratch().join("queued"),
    );
    let first = run(
        &emu,
        "55555555-5555-4555-8555-555555555555",
        &[&format!("touch {}; sleep 60", running_mark.display())],
        3600,
    );
    let second = run(
        &emu,
        "66666666-6666-4666-8666-666666666666",
        &[&format!("touch {}", queued_mark.display())],
        3600,
    );
    wait_file_exists_within(WAIT_FOR_FILE, &running_mark);
    assert!(
        emu.wait_until(FINAL_WAIT, |s| !s.replies(&second).is_empty()),
        "second command received"
    );
    emu.send_cancel(&second);
    let reply = final_of(&emu, &second);
    assert_eq!(reply["documentStatus"], "Cancelled", "{reply}");
    emu.send_cancel(&first);
    let reply = final_of(&emu, &first);
    assert_eq!(reply["documentStatus"], "Cancelled");
    assert_eq!(plugin(&reply)["code"], 137);
    // The worker is free again: a new command runs, and the cancelled one still never ran.
    let third = run(
        &emu,
        "77777777-7777-4777-8777-777777777777",
        &["true"],
        3600,
    );
    assert_eq!(final_of(&emu, &third)["documentStatus"], "Success");
    assert!(
        !queued_mark.exists(),
        "a cancelled queued command must never start"
    );
}

#[test]
fn twenty_commands_never_run_more_than_the_worker_limit() {
    let emu = emulator();
    let agent = Agent::start(&emu, json!({ "Mds": { "CommandWorkersLimit": 2 } }));
    let scratch = agent.scratch();
    let (running, seen) = (scratch.join("running"), scratch.join("seen"));
    fs::create_dir_all(&running).unwrap();
    let script = format!(
        "touch {r}/$$; ls {r} | wc -l >> {s}; sleep 0.3; rm {r}/$$",
        r = running.display(),
        s = seen.display()
    );
    let ids: Vec<String> = (0..20)
        .map(|i| {
            run(
                &emu,
                &format!("88888888-8888-4888-8888-{i:012}"),
                &[&script],
                3600,
            )
        })
        .collect();
    for id in &ids {
        assert_eq!(final_of(&emu, id)["documentStatus"], "Success");
    }
    let counts: Vec<u32> = fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 20);
    assert!(
        counts.iter().all(|&c| c <= 2),
        "more than 2 scripts ran at once: {counts:?}"
    );
    assert!(
        counts.contains(&2),
        "the two workers ran in parallel at least once: {counts:?}"
    );
}

#[test]
fn schema_2_2_runs_the_linux_step_and_skips_the_windows_one() {
    let emu = emulator();
    let _agent = Agent::start(&emu, json!({}));
    let payload = json!({
        "CommandId": "99999999-9999-4999-8999-999999999999",
        "DocumentName": "Echo",
        "Parameters": {},
        "DocumentContent": {
            "schemaVersion": "2.2",
            "description": "echo on Linux, nothing on Windows",
            "mainSteps": [
                { "action": "aws:runShellScript", "name": "pluginLinux",
                  "precondition": { "StringEquals": ["platformType", "Linux"] },
                  "inputs": { "runCommand": ["echo ship_it"] } },
                { "action": "aws:runPowerShellScript", "name": "pluginWindows",
                  "precondition": { "StringEquals": ["platformType", "Windows"] },
                  "inputs": { "runCommand": ["echo ship_it"] } }
            ]
        }
    });
    let msg = emu.send_command(&payload);
    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "Success");
    assert_eq!(
        reply["runtimeStatus"],
        json!({}),
        "several plugins: {{}} in the final reply"
    );
    let steps: Vec<Value> = emu
        .replies(&msg)
        .iter()
        .filter_map(|r| r.payload["runtimeStatus"].as_object().cloned())
        .flat_map(|m| m.into_values())
        .collect();
    assert_eq!(steps[0]["status"], "Success");
    assert_eq!(steps[0]["standardOutput"], "ship_it\n");
    assert_eq!(steps[1]["status"], "Skipped");
    assert!(
        steps[1]["output"]
            .as_str()
            .unwrap()
            .contains("unsatisfied preconditions"),
        "{}",
        steps[1]
    );
}

#[test]
fn bad_messages_get_upstream_failures_and_good_ones_still_run() {
    let emu = emulator();
    let _agent = Agent::start(&emu, json!({}));
    let schema = {
        let mut p = shell_payload("aaaaaaaa-0000-4000-8000-000000000001", &["true"], 3600);
        p["DocumentContent"]["schemaVersion"] = json!("9999.0");
        emu.send_command(&p)
    };
    let not_json = "aws.ssm.aaaaaaaa-0000-4000-8000-000000000002.i-0123456789abcdef0";
    emu.enqueue_raw(
        "aws.ssm.sendCommand.us.east.1.1",
        "{this is not json",
        not_json,
    );
    let unknown_topic = "aws.ssm.aaaaaaaa-0000-4000-8000-000000000003.i-0123456789abcdef0";
    emu.enqueue_raw("aws.ssm.somethingElse", "{}", unknown_topic);
    let unknown_plugin = {
        let mut p = shell_payload("aaaaaaaa-0000-4000-8000-000000000004", &["true"], 3600);
        let props = p["DocumentContent"]["runtimeConfig"]["aws:runShellScript"].take();
        p["DocumentContent"]["runtimeConfig"] = json!({ "aws:noSuchPlugin": props });
        emu.send_command(&p)
    };
    let huge = {
        let mut p = shell_payload("aaaaaaaa-0000-4000-8000-000000000005", &["true"], 3600);
        p["Parameters"]["commands"] = json!(["x".repeat(5 * 1024 * 1024)]);
        emu.send_command(&p)
    };
    let good = run(
        &emu,
        "aaaaaaaa-0000-4000-8000-000000000006",
        &["echo still here"],
        3600,
    );

    let r = final_of(&emu, &schema);
    assert_eq!(r["documentStatus"], "Failed");
    assert_eq!(
        r["documentTraceOutput"],
        "Document with schema version 9999.0 is not supported by this version of ssm agent, please update to latest version"
    );
    let r = final_of(&emu, not_json);
    assert_eq!(r["documentStatus"], "Failed");
    assert!(
        r["documentTraceOutput"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert!(
        emu.wait_until(FINAL_WAIT, |s| s.fails().iter().any(|f| f.message_id
            == unknown_topic
            && f.failure_type == "InternalHandlerException"))
    );
    let r = final_of(&emu, &unknown_plugin);
    assert_eq!(r["documentStatus"], "Failed");
    assert!(
        plugin(&r)["output"].as_str().unwrap().contains(
            "Plugin with name aws:noSuchPlugin is not supported by this version of ssm agent"
        ),
        "{r}"
    );
    let r = final_of(&emu, &huge);
    assert_eq!(r["documentStatus"], "Failed");
    assert!(
        r["documentTraceOutput"].as_str().unwrap().contains("bytes"),
        "{}",
        r["documentTraceOutput"]
    );
    assert_eq!(
        plugin(&final_of(&emu, &good))["standardOutput"],
        "still here\n"
    );
}

#[test]
fn an_outage_loses_no_reply_and_backs_off() {
    let emu = emulator();
    let _agent = Agent::start(&emu, json!({}));
    let warm = run(
        &emu,
        "bbbbbbbb-0000-4000-8000-000000000001",
        &["true"],
        3600,
    );
    final_of(&emu, &warm);
    let before = emu.request_log().len();
    emu.fail_for(Duration::from_secs(30), 503, "ServiceUnavailable");
    let msg = run(
        &emu,
        "bbbbbbbb-0000-4000-8000-000000000002",
        &["echo after the outage"],
        3600,
    );
    let reply = emu
        .wait_final(&msg, Duration::from_secs(90))
        .expect("final reply after the outage")
        .payload;
    assert_eq!(plugin(&reply)["standardOutput"], "after the outage\n");
    let during = emu.request_log()[before..]
        .iter()
        .filter(|r| r.status == 503)
        .count();
    assert!(
        (1..=25).contains(&during),
        "{during} requests hit the 30 s outage: back-off must bound them"
    );
    let replies = emu.replies(&msg);
    assert_eq!(
        replies.last().unwrap().document_status(),
        "Success",
        "the final reply is the last one"
    );
}

#[test]
fn a_crash_loses_nothing_and_runs_nothing_twice() {
    let emu = emulator();
    let mut agent = Agent::start(&emu, json!({ "Mds": { "CommandWorkersLimit": 1 } }));
    let scratch = agent.scratch();
    let (runs_a, runs_b) = (scratch.join("a-runs"), scratch.join("b-runs"));
    let a = run(
        &emu,
        "cccccccc-0000-4000-8000-000000000001",
        &[&format!("echo run >> {}; sleep 60", runs_a.display())],
        3600,
    );
    let b = run(
        &emu,
        "cccccccc-0000-4000-8000-000000000002",
        &[&format!("echo run >> {}", runs_b.display())],
        3600,
    );
    wait_file(&runs_a, FINAL_WAIT).expect("first command started");
    assert!(
        emu.wait_until(FINAL_WAIT, |s| s.acks().contains(&b)),
        "second command acknowledged while queued"
    );
    agent.kill9();
    agent.start_again();
    let ra = final_of(&emu, &a);
    assert_interrupted(&ra);
    assert_eq!(final_of(&emu, &b)["documentStatus"], "Success");
    // The service delivers the finished command again: it is acked and answered, not re-run.
    emu.enqueue_raw(
        "aws.ssm.sendCommand.us.east.1.1",
        &shell_payload(
            "cccccccc-0000-4000-8000-000000000002",
            &["echo never"],
            3600,
        )
        .to_string(),
        &b,
    );
    assert!(
        emu.wait_until(FINAL_WAIT, |s| s.acks().iter().filter(|m| **m == b).count()
            >= 2)
    );
    assert!(
        emu.wait_until(FINAL_WAIT, |s| s
            .replies(&b)
            .iter()
            .filter(|r| r.is_final())
            .count()
            >= 2),
        "final reply re-sent"
    );
    assert_eq!(
        fs::read_to_string(&runs_a).unwrap().lines().count(),
        1,
        "the interrupted step is not re-run"
    );
    assert_eq!(
        fs::read_to_string(&runs_b).unwrap().lines().count(),
        1,
        "the queued command ran exactly once"
    );
}

#[test]
fn sigterm_stops_cleanly_and_reports_the_running_step() {
    let emu = emulator();
    let mut agent = Agent::start(&emu, json!({ "Mds": { "StopTimeoutMillis": 10000 } }));
    let mark = agent.scratch().join("started");
    let msg = run(
        &emu,
        "dddddddd-0000-4000-8000-000000000001",
        &[&format!("touch {}; sleep 60", mark.display())],
        3600,
    );
    wait_file_exists_within(WAIT_FOR_FILE, &mark);
    let status = agent.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "clean exit");
    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "Failed");
    assert_eq!(plugin(&reply)["code"], 137);
}

#[test]
fn run_document_runs_1_2_and_2_2_documents() {
    let dir = TempDir::new("rundoc");
    let v12 = dir.path().join("v12.json");
    let doc = shell_payload("x", &["echo one"], 3600)["DocumentContent"].clone();
    fs::write(&v12, doc.to_string()).unwrap();
    let (code, out, err) = run_cli(&[
        "run-document",
        v12.to_str().unwrap(),
        "--parameters",
        r#"{"commands":["echo from 1.2"]}"#,
    ]);
    assert_eq!(code, 0, "{err}");
    let reply: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plugin(&reply)["standardOutput"], "from 1.2\n");

    let v22 = dir.path().join("v22.json");
    fs::write(&v22, json!({
        "schemaVersion": "2.2",
        "parameters": { "who": { "type": "String", "default": "world" } },
        "mainSteps": [ { "action": "aws:runShellScript", "name": "hello", "inputs": { "runCommand": ["echo hello {{ who }}", "exit 3"] } } ]
    }).to_string()).unwrap();
    let (code, out, _) = run_cli(&["run-document", v22.to_str().unwrap()]);
    assert_eq!(code, 1, "a failed document exits 1");
    let reply: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reply["documentStatus"], "Failed");
    assert_eq!(plugin(&reply)["standardOutput"], "hello world\n");
    assert_eq!(plugin(&reply)["code"], 3);
}

#[test]
fn bad_command_lines_exit_2_with_usage() {
    let (code, _, err) = run_cli(&["--no-such-flag"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown option --no-such-flag") && err.contains("usage:"),
        "{err}"
    );
    let (code, _, err) = run_cli(&["--config"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = run_cli(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ssm-lite "));
}

#[test]
fn an_invalid_config_file_is_named_with_its_position() {
    let dir = TempDir::new("badcfg");
    let cfg = dir.path().join("amazon-ssm-agent.json");
    fs::write(&cfg, "{\n  \"Mds\": {,\n}").unwrap();
    let (code, _, err) = run_cli(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--state-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("amazon-ssm-agent.json") && err.contains("line 2"),
        "{err}"
    );
}

/// A 2.2 command that echoes parameter `p`, checked against `pattern`, with `value`.
fn pattern_payload(id: &str, pattern: &str, value: &str) -> Value {
    json!({
        "CommandId": id,
        "DocumentName": "Pattern",
        "Parameters": { "p": value },
        "DocumentContent": {
            "schemaVersion": "2.2",
            "parameters": { "p": { "type": "String", "allowedPattern": pattern } },
            "mainSteps": [{ "action": "aws:runShellScript", "name": "echo",
                            "inputs": { "runCommand": ["echo {{ p }}"] } }]
        }
    })
}

fn trace(reply: &Value) -> &str {
    reply["documentTraceOutput"].as_str().unwrap_or_default()
}

#[test]
fn allowed_patterns_fail_closed_and_a_hostile_one_freezes_nothing() {
    let emu = emulator();
    let agent = Agent::start(&emu, json!({}));
    let marker = agent.scratch().join("pwned");
    let injected = format!("x; touch {}", marker.display());
    // Compiled for hours under the engine's lock before; now refused as Go refuses it.
    let hostile = emu.send_command(&pattern_payload(
        "bbbbbbbb-0000-4000-8000-000000000001",
        "((((){1000}){1000}){1000}){1000}",
        "x",
    ));
    // Linear in the value, but minutes of matching: beyond the command's budget, refused.
    let slow = emu.send_command(&pattern_payload(
        "bbbbbbbb-0000-4000-8000-000000000003",
        "(a{1,100}){1,90}x",
        &"a".repeat(100_000),
    ));
    let good = run(
        &emu,
        "bbbbbbbb-0000-4000-8000-000000000002",
        &["echo still here"],
        3600,
    );
    let r = final_of(&emu, &hostile);
    assert_eq!(r["documentStatus"], "Failed");
    assert!(
        trace(&r).contains("while validating parameter /p/")
            && trace(&r).contains("error parsing regexp: expression too large"),
        "{r}"
    );
    let r = final_of(&emu, &slow);
    assert_eq!(r["documentStatus"], "Failed");
    assert!(
        trace(&r)
            .contains("parameter /p/: parameter value of 100000 bytes is too long for ssm-lite"),
        "{r}"
    );
    assert_eq!(
        plugin(&final_of(&emu, &good))["standardOutput"],
        "still here\n"
    );
    assert!(
        [&hostile, &slow, &good]
            .iter()
            .all(|m| emu.acks().contains(m))
    );
    // Patterns the old engine skipped: each now rejects the injection (`\pL` cannot be checked
    // without Unicode tables, so it is refused whatever the value).
    let mismatch = "parameter value does not match the allowed pattern";
    let checked: Vec<(String, &str)> = [
        (r"(?i)^[a-z]+$", mismatch),
        (r"^\w+\b$", mismatch),
        ("^[[:alnum:]]+$", mismatch),
        (r"^\pL+$", "ssm-lite cannot check Unicode classes"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (pattern, why))| {
        let id = format!("bbbbbbbb-0000-4000-8000-00000000001{i}");
        (
            emu.send_command(&pattern_payload(&id, pattern, &injected)),
            *why,
        )
    })
    .collect();
    for (msg, why) in &checked {
        let r = final_of(&emu, msg);
        assert_eq!(r["documentStatus"], "Failed");
        assert!(trace(&r).contains(why), "{r}");
    }
    let accepted = emu.send_command(&pattern_payload(
        "bbbbbbbb-0000-4000-8000-000000000020",
        r"(?i)^[a-z]+$",
        "Hello",
    ));
    assert_eq!(
        plugin(&final_of(&emu, &accepted))["standardOutput"],
        "Hello\n"
    );
    assert!(!marker.exists(), "an injected command ran");
}

#[test]
fn unimplemented_plugins_fail_and_windows_only_ones_are_skipped() {
    let emu = emulator();
    let _agent = Agent::start(&emu, json!({}));
    // AWS-ConfigureAWSPackage's shape, plus a plugin upstream does not register on Linux.
    let msg = emu.send_command(&json!({
        "CommandId": "cccccccc-0000-4000-8000-000000000001",
        "DocumentName": "AWS-ConfigureAWSPackage",
        "Parameters": { "name": ["AmazonCloudWatchAgent"] },
        "DocumentContent": {
            "schemaVersion": "2.2",
            "parameters": { "name": { "type": "String" } },
            "mainSteps": [
                { "action": "aws:configurePackage", "name": "configurePackage",
                  "inputs": { "name": "{{ name }}", "action": "Install" } },
                { "action": "aws:psModule", "name": "windowsOnly",
                  "inputs": { "runCommand": ["Get-Module"] } }
            ]
        }
    }));
    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "Failed", "{reply}");
    let steps: Vec<Value> = emu
        .replies(&msg)
        .iter()
        .filter_map(|r| r.payload["runtimeStatus"].as_object().cloned())
        .flat_map(|m| m.into_values())
        .collect();
    assert_eq!(steps[0]["status"], "Failed");
    assert_eq!(
        steps[0]["output"],
        "ssm-lite does not implement plugin aws:configurePackage yet, so this step did not run. \
         Step name: configurePackage"
    );
    assert_eq!(steps[1]["status"], "Skipped");
    assert_eq!(
        steps[1]["output"],
        "Step execution skipped due to unsupported plugin: aws:psModule. Step name: windowsOnly"
    );
}

#[test]
fn parameter_store_references_fail_before_anything_runs() {
    let emu = emulator();
    let agent = Agent::start(&emu, json!({}));
    let marker = agent.scratch().join("ran");
    let touch = format!("touch {}", marker.display());
    let by_parameter = run(
        &emu,
        "dddddddd-0000-4000-8000-000000000001",
        &[&touch, "echo {{ssm:/app/token}}"],
        3600,
    );
    let mut in_inputs = shell_payload("dddddddd-0000-4000-8000-000000000002", &[&touch], 3600);
    in_inputs["DocumentContent"]["runtimeConfig"]["aws:runShellScript"]["properties"][0]["workingDirectory"] =
        json!("{{ ssm-secure:/app/dir }}");
    let in_inputs = emu.send_command(&in_inputs);
    for (msg, place, reference) in [
        (&by_parameter, "parameter commands", "{{ssm:/app/token}}"),
        (
            &in_inputs,
            "the inputs of step aws:runShellScript",
            "{{ ssm-secure:/app/dir }}",
        ),
    ] {
        let r = final_of(&emu, msg);
        assert_eq!(r["documentStatus"], "Failed");
        assert_eq!(
            trace(&r),
            format!(
                "ssm-lite does not resolve Parameter Store references yet: {place} holds {reference}; \
                 send the value itself instead of the reference"
            )
        );
    }
    assert!(!marker.exists(), "the script ran");
}
