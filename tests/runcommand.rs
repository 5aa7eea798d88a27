//! Run Command end to end over ec2messages: the real agent binary against the emulator.

mod common;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::{
    FaultTarget, ParameterType, aws_run_shell_script_payload as shell_payload, targets,
};
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

    // The ack first, then the receipt, the step, the final reply (§9 items 2-3).
    let replies = emu.replies(&msg);
    let statuses: Vec<&str> = replies.iter().map(|r| r.document_status()).collect();
    assert_eq!(statuses, ["InProgress", "InProgress", "Success"]);
    assert!(replies[0].payload["runtimeStatus"].is_null());
    assert_eq!(emu.mds_events(&msg), ["ack", "reply", "reply", "reply"]);
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
    // The emulator also offers the control channel: the first ping names ec2messages when it
    // goes out before that channel is up, ssmmessages when after (both seen here).
    let channel = ping["SSMConnectionChannel"].as_str().unwrap_or_default();
    assert!(
        ["ec2messages", "ssmmessages"].contains(&channel),
        "SSMConnectionChannel {channel:?}"
    );
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

/// A signal field of `pid`'s status (`SigIgn:`, …) as a bit set (bit n-1: signal n).
fn sig_field(pid: u32, name: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status.lines().find_map(|l| l.strip_prefix(name)).unwrap();
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// `pid`'s `Max open files` soft and hard limits.
fn fd_limits(pid: u32) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].to_owned(), f[4].to_owned())
}

/// An init script starts the agent with `&` from `sh`, so it inherits SIGINT and SIGQUIT
/// ignored; a starter may leave a descriptor open; the agent raises its descriptor limit. A
/// script inherits none of it: default signals, an empty mask, fds 0-2 only (`ls` adds 3, the
/// directory it reads), and the soft limit the agent was started with.
#[test]
fn scripts_inherit_default_signals_only_fds_0_to_2_and_the_starting_fd_limit() {
    let emu = emulator();
    let prelude = "trap '' INT QUIT\nexec 7</dev/null\nulimit -Sn 512";
    let agent = Agent::start_from_shell(&emu, json!({}), prelude);
    let msg = run(
        &emu,
        "0a0a0a0a-0000-4000-8000-000000000911",
        &[
            "grep -E '^Sig(Blk|Ign)' /proc/self/status | cut -f2",
            "echo fds: $(ls /proc/self/fd)",
            "ulimit -Sn",
        ],
        60,
    );
    let reply = final_of(&emu, &msg);
    let output = plugin(&reply)["output"].as_str().unwrap().to_owned();
    let lines: Vec<&str> = output.lines().collect();
    let [blocked, ignored, fds, soft] = lines[..] else {
        panic!("{reply}");
    };
    assert_eq!(blocked, "0000000000000000", "{reply}");
    assert_eq!((fds, soft), ("fds: 0 1 2 3", "512"), "{reply}");
    let ignored = u64::from_str_radix(ignored, 16).unwrap();
    let pid = agent.pid();
    if std::env::var_os("SSM_LITE_TEST_RUNNER").is_some_and(|r| !r.is_empty()) {
        // qemu-user keeps host signals of its own, and /proc shows qemu, not the agent: check
        // only what the start did.
        assert_eq!(
            ignored & 0b110,
            0,
            "SIGINT or SIGQUIT still ignored: {reply}"
        );
    } else {
        assert_eq!(ignored, 0, "{reply}");
        // The start really was as described: the agent itself still ignores SIGQUIT (SIGINT
        // it handles) and runs with its soft limit raised to the hard one.
        assert_ne!(
            sig_field(pid, "SigIgn:") & 0b100,
            0,
            "SIGQUIT ignored by the agent"
        );
        let (soft, hard) = fd_limits(pid);
        assert_eq!(soft, hard, "soft limit raised");
    }
    assert!(
        fs::metadata(format!("/proc/{pid}/fd/7")).is_ok(),
        "fd 7 open"
    );
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
        "err\nfailed to run commands: exit status 2"
    );
    assert_eq!(
        p["output"],
        "out\n\n----------ERROR-------\nerr\nfailed to run commands: exit status 2"
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
        &[&format!("echo run >> {}; sleep 5", runs_a.display())],
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
    // A foreign binary under qemu-user (no binfmt) cannot start its supervisor: the script then
    // runs inside the agent and ends with it (the agent says so once).
    let supervised = !agent.log().contains("runs inside the agent instead");
    agent.kill9();
    agent.start_again();
    // Under its supervisor the step outlived the crash: the next start reports it, not re-run.
    // Without one it is reported interrupted, and not run again either.
    let ra = final_of(&emu, &a);
    let expected = if supervised { "Success" } else { "Failed" };
    assert_eq!(ra["documentStatus"], expected, "{ra}");
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
        &[&format!("touch {}; sleep 3; echo done", mark.display())],
        3600,
    );
    wait_file_exists_within(WAIT_FOR_FILE, &mark);
    let supervised = !agent.log().contains("runs inside the agent instead");
    let status = agent.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "clean exit");
    // Under its supervisor the script is left running at once, and the next start reports it
    // (tests/supervisor.rs). A script run inside the agent (a foreign binary under qemu-user
    // without binfmt) ends within the stop's grace and is reported before the exit.
    if supervised {
        agent.start_again();
    }
    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "Success", "{reply}");
    assert_eq!(plugin(&reply)["standardOutput"], "done\n");
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

/// The files a command's steps wrote: `<orchestration>/<CommandId>/<plugin>/<run>/<name>`.
fn output_files(agent: &Agent, command_id: &str, name: &str) -> Vec<std::path::PathBuf> {
    let dir = agent
        .state_dir()
        .join("i-0123456789abcdef0/document/orchestration")
        .join(command_id);
    let mut found = Vec::new();
    for plugin in fs::read_dir(&dir).into_iter().flatten().flatten() {
        for run in fs::read_dir(plugin.path()).into_iter().flatten().flatten() {
            let p = run.path().join(name);
            if p.is_file() {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn agent_orchestration_root_dir_names_where_scripts_and_output_are_kept() {
    let emu = emulator();
    let agent = Agent::start(&emu, json!({ "Agent": { "OrchestrationRootDir": "runs" } }));
    let id = "d15c0000-0000-4000-8000-0000000000a1";
    let reply = final_of(&emu, &run(&emu, id, &["echo \"$0\""], 600));
    let script = agent
        .state_dir()
        .join("i-0123456789abcdef0/document/runs")
        .join(id)
        .join("awsrunShellScript/0.awsrunShellScript/_script.sh");
    assert_eq!(
        plugin(&reply)["standardOutput"].as_str(),
        Some(format!("{}\n", script.display()).as_str()),
        "{reply}"
    );
    assert!(script.is_file());
    assert!(
        !agent
            .state_dir()
            .join("i-0123456789abcdef0/document/orchestration")
            .join(id)
            .exists()
    );
}

#[test]
fn a_step_writing_far_more_than_the_cap_keeps_a_capped_file_and_its_exit_code() {
    let emu = emulator();
    let agent = Agent::start(
        &emu,
        json!({ "Ssm": { "RunCommandLogsMaxStepOutputMiB": 1 } }),
    );
    let id = "d15c0000-0000-4000-8000-000000000001";
    let msg = run(
        &emu,
        id,
        &[
            "yes 0123456789 | head -c 60000000",
            "echo err >&2",
            "exit 3",
        ],
        600,
    );
    let reply = final_of(&emu, &msg);
    let p = plugin(&reply);
    assert_eq!(
        (p["status"].as_str(), p["code"].as_i64()),
        (Some("Failed"), Some(3)),
        "{reply}"
    );
    let full = "0123456789\n".repeat(3000);
    assert_eq!(
        p["standardOutput"].as_str().unwrap(),
        format!("{}--output truncated--", &full[..24000 - 20])
    );
    assert_eq!(
        p["standardError"],
        "err\nfailed to run commands: exit status 3"
    );
    let stdout = output_files(&agent, id, "stdout");
    assert_eq!(stdout.len(), 1, "{stdout:?}");
    let kept = fs::read(&stdout[0]).unwrap();
    assert!(kept.len() <= 1 << 20, "{} bytes kept", kept.len());
    assert!(kept.starts_with(full.as_bytes()));
    let tail = String::from_utf8_lossy(&kept[kept.len() - 300..]).into_owned();
    assert!(tail.contains("output truncated"), "{tail}");
}

#[test]
fn over_the_total_cap_the_oldest_finished_output_goes_first() {
    let emu = emulator();
    let agent = Agent::start(
        &emu,
        json!({ "Ssm": { "RunCommandLogsMaxStepOutputMiB": 4, "RunCommandLogsMaxTotalMiB": 8 } }),
    );
    let ids: Vec<String> = (1..=4)
        .map(|i| format!("d15c0000-0000-4000-8000-00000000010{i}"))
        .collect();
    for id in &ids {
        // 3 MiB each: the third brings the total over 8 MiB.
        let msg = run(&emu, id, &["head -c 3145728 /dev/zero | tr '\\0' x"], 600);
        assert_eq!(final_of(&emu, &msg)["documentStatus"], "Success");
    }
    // The engine prunes right after it has released a command's final reply: wait for it.
    let kept = || -> Vec<bool> {
        ids.iter()
            .map(|id| !output_files(&agent, id, "stdout").is_empty())
            .collect()
    };
    let deadline = Instant::now() + WAIT_FOR_FILE;
    while kept() != [false, false, true, true] && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(kept(), [false, false, true, true], "{}", agent.log());
    let records = agent.state_dir().join("i-0123456789abcdef0/commands");
    for id in &ids {
        assert!(
            records.join(format!("{id}.json")).is_file(),
            "records stay until retention ends: they keep a redelivery from running twice"
        );
    }
}

/// A tmpfs mounted on a test's state dir; unmounted on drop (lazily: the agent may still hold
/// a file in it), also when the test fails.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// None (and a message saying why the test is skipped) where mounting is not permitted.
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_owned())),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs on {} (needs root): {}",
                    dir.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("cannot unmount {}", self.0.display());
        }
    }
}

#[test]
fn a_full_state_volume_fails_commands_clearly_and_the_agent_recovers_by_itself() {
    let emu = emulator();
    let mut agent = Agent::prepare(&emu, json!({}), &[]);
    let Some(volume) = Tmpfs::mount(&agent.state_dir(), "4m") else {
        return;
    };
    agent.start_again();
    let state = agent.state_dir().display().to_string();
    let ok = run(
        &emu,
        "d15cf011-0000-4000-8000-000000000001",
        &["echo warm"],
        60,
    );
    assert_eq!(final_of(&emu, &ok)["documentStatus"], "Success");

    // A step fills the volume itself: the script is not hurt, its output still reaches the reply.
    let filler = format!(
        "head -c 8000000 /dev/zero > {state}/fill 2>/dev/null; echo filled; echo to-err >&2"
    );
    let filled = run(&emu, "d15cf011-0000-4000-8000-000000000002", &[&filler], 60);
    let reply = final_of(&emu, &filled);
    let p = plugin(&reply);
    assert_eq!(p["status"], "Success", "{reply}");
    assert_eq!(p["standardOutput"], "filled\n", "{reply}");
    let err = p["standardError"].as_str().unwrap();
    assert!(err.starts_with("to-err\n"), "{err}");
    assert!(
        err.contains("No space left on device") && err.contains(&state),
        "the reply says the output could not be kept, and where: {err}"
    );

    // While full: a clear failure naming the path; polling and sessions go on.
    let refused = run(
        &emu,
        "d15cf011-0000-4000-8000-000000000003",
        &["echo never"],
        60,
    );
    let reply = final_of(&emu, &refused);
    assert_eq!(reply["documentStatus"], "Failed", "{reply}");
    let text = reply.to_string();
    assert!(
        text.contains("No space left on device") && text.contains(&state),
        "{reply}"
    );
    assert!(emu.wait_mgs_connected(FINAL_WAIT), "control channel up");
    let s = emu
        .start_session(ssm_emulator::SessionSpec::non_interactive_commands(
            "echo alive",
            false,
        ))
        .expect("a session starts on a full disk");
    assert!(
        s.wait_output(FINAL_WAIT, |o| o == b"alive\n"),
        "{:?}",
        s.output_string()
    );

    // Space returns: the next command succeeds, with nothing done by hand.
    fs::remove_file(agent.state_dir().join("fill")).unwrap();
    let back = run(
        &emu,
        "d15cf011-0000-4000-8000-000000000004",
        &["echo back"],
        60,
    );
    let reply = final_of(&emu, &back);
    assert_eq!(plugin(&reply)["output"], "back\n", "{reply}");

    // What the full disk refused was written once space returned: a restart neither runs the
    // filling command again nor reports it a second time.
    agent.restart();
    let again = run(
        &emu,
        "d15cf011-0000-4000-8000-000000000005",
        &["echo again"],
        60,
    );
    assert_eq!(final_of(&emu, &again)["documentStatus"], "Success");
    let finals = |m: &str| emu.replies(m).iter().filter(|r| r.is_final()).count();
    assert_eq!(finals(&filled), 1, "{}", agent.log());
    assert_eq!(finals(&refused), 1, "{}", agent.log());
    drop(volume);
}

/// A device whose clock is an hour behind the services' (no real-time clock, a wrong date at
/// boot): the first GetMessages is refused as "Signature expired", the agent takes the time from
/// the answer's `Date`, signs again, and commands run. ssm and MGS are out of reach, so that the
/// correction is ec2messages' own.
#[test]
fn a_clock_an_hour_behind_is_corrected_from_ec2messages() {
    let emu = skewed_emulator(3600);
    let dead = nowhere();
    let agent = Agent::start(
        &emu,
        json!({ "Ssm": { "Endpoint": dead }, "Mgs": { "Endpoint": dead } }),
    );
    let msg = run(
        &emu,
        "5ce70000-0000-4000-8000-000000000001",
        &["echo on time"],
        3600,
    );
    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "Success", "{reply}");
    assert_eq!(plugin(&reply)["output"], "on time\n");
    assert_clock_corrected_once(
        &emu,
        &agent,
        &[targets::GET_MESSAGES],
        "Signature expired",
        "behind",
    );
}

/// The health ping (ssm UpdateInstanceInformation) corrects the clock by itself too.
#[test]
fn a_clock_an_hour_behind_is_corrected_from_ssm() {
    let emu = skewed_emulator(3600);
    let dead = nowhere();
    let agent = Agent::start(
        &emu,
        json!({ "Mds": { "Endpoint": dead }, "Mgs": { "Endpoint": dead } }),
    );
    assert!(
        emu.wait_until(FINAL_WAIT, |s| !s.health_pings().is_empty()),
        "a health ping got through; log:\n{}",
        agent.log()
    );
    let target = targets::UPDATE_INSTANCE_INFORMATION;
    assert_clock_corrected_once(&emu, &agent, &[target], "Signature expired", "behind");
}

/// The clock jumps while the agent runs (here the services' clock, by two hours back: the agent
/// is then ahead): the next poll is refused as "Signature not yet current" and corrected.
#[test]
fn a_clock_jump_while_running_is_corrected() {
    let emu = emulator();
    let dead = nowhere();
    let agent = Agent::start(
        &emu,
        json!({ "Ssm": { "Endpoint": dead }, "Mgs": { "Endpoint": dead } }),
    );
    let first = run(
        &emu,
        "5ce70000-0000-4000-8000-000000000002",
        &["echo before"],
        3600,
    );
    assert_eq!(final_of(&emu, &first)["documentStatus"], "Success");
    emu.set_clock_offset(-7200);
    let second = run(
        &emu,
        "5ce70000-0000-4000-8000-000000000003",
        &["echo after"],
        3600,
    );
    let reply = final_of(&emu, &second);
    assert_eq!(reply["documentStatus"], "Success", "{reply}");
    // A reply still on its way when the clock moved is refused and corrected as well.
    let refusal = "Signature not yet current";
    let signers = [
        targets::GET_MESSAGES,
        targets::SEND_REPLY,
        targets::ACKNOWLEDGE_MESSAGE,
    ];
    assert_clock_corrected_once(&emu, &agent, &signers, refusal, "ahead of");
}

/// A call refused for its credentials (`ExpiredTokenException`, as when a role's keys are
/// revoked or expire early) makes the agent fetch new credentials and send that call again at
/// once, instead of failing it to its caller.
#[test]
fn refused_credentials_are_refreshed_and_the_call_resent() {
    let emu = emulator();
    let dead = nowhere();
    let agent = Agent::start(
        &emu,
        json!({ "Ssm": { "Endpoint": dead }, "Mgs": { "Endpoint": dead } }),
    );
    let first = run(
        &emu,
        "c4ed0000-0000-4000-8000-000000000001",
        &["echo one"],
        3600,
    );
    assert_eq!(final_of(&emu, &first)["documentStatus"], "Success");
    let issued = emu.read(|s| s.credentials_issued());
    emu.fail_next(1, 400, "ExpiredTokenException");
    let second = run(
        &emu,
        "c4ed0000-0000-4000-8000-000000000002",
        &["echo two"],
        3600,
    );
    assert_eq!(final_of(&emu, &second)["documentStatus"], "Success");
    // The refused call may be the poll after the delivery, whose resend the emulator holds
    // until it times out: wait for it to complete.
    let log = emu.request_log();
    let refused = log
        .iter()
        .position(|r| r.fault.is_some())
        .expect("fault applied");
    let target = log[refused].target.clone();
    let done = log[..=refused]
        .iter()
        .filter(|r| r.target == target)
        .count();
    assert!(emu.wait_until(FINAL_WAIT, |s| s.count(&target) > done));
    let log = emu.request_log();
    let after: Vec<(&str, u16)> = log[refused + 1..]
        .iter()
        .map(|r| (r.target.as_str(), r.status))
        .collect();
    let resent = after.iter().position(|(t, _)| *t == target).unwrap();
    assert_eq!(after[resent].1, 200, "{after:?}");
    let fetched = emu.read(|s| s.credentials_issued()) - issued;
    assert_eq!(fetched, 1, "new credentials, fetched once: {after:?}");
    assert!(
        agent.log().contains("refused the credentials"),
        "{}",
        agent.log()
    );
}

/// Every message is acknowledged before any reply for it, also a malformed one's `Failed` reply,
/// and however many arrive at once.
#[test]
fn every_message_is_acknowledged_before_its_first_reply() {
    let emu = emulator();
    let _agent = Agent::start(&emu, json!({}));
    let malformed: Vec<String> = (0..20)
        .map(|i| {
            let id = format!("aws.ssm.cccccccc-0000-4000-8000-{i:012}.i-0123456789abcdef0");
            emu.enqueue_raw("aws.ssm.sendCommand.us.east.1.1", "{not json", &id);
            id
        })
        .collect();
    let good = run(
        &emu,
        "cccccccc-0000-4000-8000-100000000000",
        &["true"],
        3600,
    );
    for id in &malformed {
        assert_eq!(final_of(&emu, id)["documentStatus"], "Failed");
        assert_eq!(emu.mds_events(id), ["ack", "reply"], "{id}");
    }
    final_of(&emu, &good);
    assert_eq!(emu.mds_events(&good), ["ack", "reply", "reply", "reply"]);
}

/// A reply refused with a credential or proxy error is kept and sent once the service takes
/// replies again, within the outbox's 20 s back-off cap (30 s allowed here).
#[test]
fn replies_refused_with_4xx_are_kept_and_arrive_once_accepted() {
    let emu = emulator();
    let agent = Agent::start(&emu, json!({}));
    emu.set_fault_target(FaultTarget::MdsOperation("SendReply"));
    let refusals = [
        (400, "InvalidSignatureException"),
        (400, "ExpiredTokenException"),
        (407, "ProxyAuthenticationRequired"),
        (403, "AuthorizationFailureException"),
    ];
    for (i, (status, code)) in refusals.into_iter().enumerate() {
        let window = Duration::from_secs(3);
        emu.fail_for(window, status, code);
        let msg = run(
            &emu,
            &format!("dddddddd-0000-4000-8000-{i:012}"),
            &["true"],
            3600,
        );
        let reply = emu
            .wait_final(&msg, window + Duration::from_secs(30))
            .unwrap_or_else(|| panic!("final reply after {status} {code}; log:\n{}", agent.log()))
            .payload;
        assert_eq!(reply["documentStatus"], "Success");
        assert_eq!(
            emu.replies(&msg).len(),
            3,
            "receipt, step and final all kept"
        );
    }
    assert!(
        !agent.log().contains("reply sent"),
        "no reply is called sent that was not accepted"
    );
}

/// With every worker busy and the queue full, the poll thread still takes cancels at once: one for
/// the running command and one for a command waiting for room (it never runs).
#[test]
fn cancels_get_through_while_the_queue_is_full() {
    let emu = emulator();
    let agent = Agent::start(
        &emu,
        json!({ "Mds": { "CommandWorkersLimit": 1, "CommandWorkerBufferLimit": 1 } }),
    );
    let mark = agent.scratch().join("running");
    let never = agent.scratch().join("never");
    let long = run(
        &emu,
        "eeeeeeee-1111-4000-8000-000000000001",
        &[&format!("touch {}; sleep 60", mark.display())],
        3600,
    );
    wait_file_exists_within(WAIT_FOR_FILE, &mark);
    let queued = run(
        &emu,
        "eeeeeeee-1111-4000-8000-000000000002",
        &["true"],
        3600,
    );
    assert!(emu.wait_until(FINAL_WAIT, |s| !s.replies(&queued).is_empty()));
    let waiting = run(
        &emu,
        "eeeeeeee-1111-4000-8000-000000000003",
        &[&format!("touch {}", never.display())],
        3600,
    );
    assert!(
        emu.wait_until(FINAL_WAIT, |s| !s.deliveries(&waiting).is_empty()),
        "the third command was delivered"
    );
    emu.send_cancel(&waiting);
    let cancel = emu.send_cancel(&long);
    let reply = emu
        .wait_final(&long, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the cancel went through; log:\n{}", agent.log()))
        .payload;
    assert_eq!(reply["documentStatus"], "Cancelled");
    assert!(emu.acks().contains(&cancel));
    assert_eq!(final_of(&emu, &queued)["documentStatus"], "Success");
    assert_eq!(final_of(&emu, &waiting)["documentStatus"], "Cancelled");
    assert!(
        !never.exists(),
        "a command cancelled while waiting never runs"
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
    // AWS-JoinDirectoryServiceDomain's plugin, plus one upstream does not register on Linux.
    let msg = emu.send_command(&json!({
        "CommandId": "cccccccc-0000-4000-8000-000000000001",
        "DocumentName": "AWS-JoinDirectoryServiceDomain",
        "Parameters": { "directoryId": ["d-1234567890"] },
        "DocumentContent": {
            "schemaVersion": "2.2",
            "parameters": { "directoryId": { "type": "String" } },
            "mainSteps": [
                { "action": "aws:domainJoin", "name": "domainJoin",
                  "inputs": { "directoryId": "{{ directoryId }}" } },
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
        "ssm-lite does not implement plugin aws:domainJoin yet, so this step did not run. \
         Step name: domainJoin"
    );
    assert_eq!(steps[1]["status"], "Skipped");
    assert_eq!(
        steps[1]["output"],
        "Step execution skipped due to unsupported plugin: aws:psModule. Step name: windowsOnly"
    );
}

// ---- Parameter Store: `{{ssm:…}}` resolved with GetParameters (docs/protocol.md §3.7) ----

/// A 2.2 command that echoes parameter `who` (lower-case letters only) and runs `commands`.
fn greeting_payload(id: &str, who: &str, commands: &[&str]) -> Value {
    let mut run = vec![json!("echo {{ who }}")];
    run.extend(commands.iter().map(|c| json!(c)));
    json!({
        "CommandId": id,
        "DocumentName": "Greeting",
        "Parameters": { "who": who },
        "DocumentContent": {
            "schemaVersion": "2.2",
            "parameters": { "who": { "type": "String", "allowedPattern": "^[a-z]+$" } },
            "mainSteps": [{ "action": "aws:runShellScript", "name": "greet",
                            "inputs": { "runCommand": run } }]
        }
    })
}

/// Every GetParameters call asked for no decryption, and every signature held.
fn assert_plain_signed_lookups(emu: &ssm_emulator::Emulator) {
    let calls = emu.get_parameters_calls();
    assert!(!calls.is_empty(), "no GetParameters call");
    assert!(calls.iter().all(|c| !c.with_decryption()), "{calls:?}");
    assert!(calls.iter().all(|c| c.error.is_none()), "{calls:?}");
    assert!(
        emu.signature_failures().is_empty(),
        "{:?}",
        emu.signature_failures()
    );
}

#[test]
fn parameter_store_values_reach_scripts_and_parameters() {
    let emu = emulator();
    let _agent = Agent::start(&emu, json!({}));
    emu.put_parameter("/app/greeting", ParameterType::String, "hello");
    emu.put_parameter("/app/greeting", ParameterType::String, "howdy");
    emu.put_parameter("/app/steps", ParameterType::StringList, "echo one,echo two");
    let direct = run(
        &emu,
        "eeeeeeee-0000-4000-8000-000000000001",
        &["echo {{ssm:/app/greeting}} {{ ssm:/app/greeting:1 }}"],
        3600,
    );
    assert_eq!(
        plugin(&final_of(&emu, &direct))["standardOutput"],
        "howdy hello\n"
    );
    // The value is resolved before `allowedPattern` sees it: the reference itself would not match.
    let through_parameter = emu.send_command(&greeting_payload(
        "eeeeeeee-0000-4000-8000-000000000002",
        "{{ssm:/app/greeting}}",
        &[],
    ));
    let reply = final_of(&emu, &through_parameter);
    assert_eq!(reply["documentStatus"], "Success", "{reply}");
    assert_eq!(plugin(&reply)["standardOutput"], "howdy\n");
    // A StringList that is a whole element of runCommand becomes one line per item.
    let list = run(
        &emu,
        "eeeeeeee-0000-4000-8000-000000000003",
        &["{{ssm:/app/steps}}", "echo three"],
        3600,
    );
    assert_eq!(
        plugin(&final_of(&emu, &list))["standardOutput"],
        "one\ntwo\nthree\n"
    );
    let asked: Vec<Vec<String>> = emu
        .get_parameters_calls()
        .iter()
        .map(|c| c.names())
        .collect();
    assert_eq!(
        asked,
        [
            vec!["/app/greeting".to_owned(), "/app/greeting:1".to_owned()],
            vec!["/app/greeting".to_owned()],
            vec!["/app/steps".to_owned()],
        ]
    );
    assert_plain_signed_lookups(&emu);
}

#[test]
fn unknown_secure_and_misused_parameters_fail_before_anything_runs() {
    let emu = emulator();
    let agent = Agent::start(&emu, json!({}));
    emu.put_parameter("/app/token", ParameterType::SecureString, "t0ps3cret");
    emu.put_parameter("/app/steps", ParameterType::StringList, "a,b");
    let marker = agent.scratch().join("ran");
    let touch = format!("touch {}", marker.display());
    let cases = [
        (
            "echo {{ssm:/app/nope}} {{ssm:/app/steps:9}}",
            "Input contains invalid parameters [/app/nope /app/steps:9]",
        ),
        (
            "echo {{ssm:/app/token}}",
            "Parameters [/app/token] of type SecureString are not supported",
        ),
        (
            "echo {{ssm:/app/steps}}",
            "Parameter /app/steps of type StringList cannot be used as a String",
        ),
    ];
    let sent: Vec<(String, &str)> = cases
        .iter()
        .enumerate()
        .map(|(i, (command, why))| {
            let id = format!("eeeeeeee-0000-4000-8000-00000000001{i}");
            (run(&emu, &id, &[&touch, command], 3600), *why)
        })
        .collect();
    // Through a document parameter too: resolved for validation, before anything runs.
    let in_parameter = emu.send_command(&greeting_payload(
        "eeeeeeee-0000-4000-8000-000000000020",
        "{{ssm:/app/token}}",
        &[&touch],
    ));
    for (msg, why) in sent.iter().map(|(m, w)| (m, *w)).chain([(
        &in_parameter,
        "Parameters [/app/token] of type SecureString are not supported",
    )]) {
        let reply = final_of(&emu, msg);
        assert_eq!(reply["documentStatus"], "Failed", "{reply}");
        assert_eq!(trace(&reply), why, "{reply}");
    }
    assert!(!marker.exists(), "a script ran");
    assert_plain_signed_lookups(&emu);
    // `{{ssm-secure:…}}` is no reference for runShellScript (upstream resolves it only in
    // downloadContent): the script gets the text, and nothing is looked up.
    let calls = emu.get_parameters_calls().len();
    let secure = run(
        &emu,
        "eeeeeeee-0000-4000-8000-000000000030",
        &["echo '{{ssm-secure:/app/token}}'"],
        3600,
    );
    assert_eq!(
        plugin(&final_of(&emu, &secure))["standardOutput"],
        "{{ssm-secure:/app/token}}\n"
    );
    assert_eq!(emu.get_parameters_calls().len(), calls);
}

#[test]
fn twenty_three_names_take_three_get_parameters_calls() {
    let emu = emulator();
    let _agent = Agent::start(&emu, json!({}));
    for i in 0..23 {
        emu.put_parameter(&format!("/n/p{i}"), ParameterType::String, &format!("v{i}"));
    }
    let echo = format!(
        "echo {}",
        (0..23)
            .map(|i| format!("{{{{ssm:/n/p{i}}}}}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let msg = run(&emu, "eeeeeeee-0000-4000-8000-000000000040", &[&echo], 3600);
    let want: Vec<String> = (0..23).map(|i| format!("v{i}")).collect();
    assert_eq!(
        plugin(&final_of(&emu, &msg))["standardOutput"],
        format!("{}\n", want.join(" "))
    );
    let calls = emu.get_parameters_calls();
    let sizes: Vec<usize> = calls.iter().map(|c| c.names().len()).collect();
    assert_eq!(sizes, [10, 10, 3]);
    let mut asked: Vec<String> = calls.iter().flat_map(|c| c.names()).collect();
    asked.sort();
    let mut all: Vec<String> = (0..23).map(|i| format!("/n/p{i}")).collect();
    all.sort();
    assert_eq!(asked, all, "each name asked once");
    assert_plain_signed_lookups(&emu);
}

#[test]
fn a_throttled_get_parameters_is_retried_and_a_refused_one_reported() {
    let emu = emulator();
    let agent = Agent::start_with_env(
        &emu,
        json!({}),
        &[("SSM_LITE_ASSOCIATION_JITTER_SECS", "1")],
    );
    emu.put_parameter("/app/greeting", ParameterType::String, "hello");
    // After the start's health ping and the two association polls (both due within 2 s here,
    // then not for 10 minutes) the only ssm calls are the lookups.
    assert!(emu.wait_until(FINAL_WAIT, |s| !s.health_pings().is_empty()
        && s.list_associations_calls().len() >= 2));
    emu.set_fault_target(FaultTarget::Ssm);
    emu.fail_next(2, 400, "ThrottlingException");
    let throttled = run(
        &emu,
        "eeeeeeee-0000-4000-8000-000000000050",
        &["echo {{ssm:/app/greeting}}"],
        3600,
    );
    assert_eq!(
        plugin(&final_of(&emu, &throttled))["standardOutput"],
        "hello\n"
    );
    assert_eq!(emu.count(targets::GET_PARAMETERS), 3);
    emu.fail_next(1, 400, "AccessDeniedException");
    let marker = agent.scratch().join("ran");
    let refused = run(
        &emu,
        "eeeeeeee-0000-4000-8000-000000000051",
        &[
            &format!("touch {}", marker.display()),
            "echo {{ssm:/app/greeting}}",
        ],
        3600,
    );
    let reply = final_of(&emu, &refused);
    assert_eq!(reply["documentStatus"], "Failed", "{reply}");
    assert_eq!(
        trace(&reply),
        "Encountered error while calling GetParameters API. Error: AccessDeniedException: \
         injected by the emulator"
    );
    assert_eq!(
        emu.count(targets::GET_PARAMETERS),
        4,
        "a refusal is not retried"
    );
    assert!(!marker.exists(), "the script ran");
}
