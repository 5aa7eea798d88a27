//! Scripts that outlive the agent: every script runs under a supervisor process, and a restarted
//! agent reports each one's real exit code and whole output, whether the agent was killed or
//! stopped, and whether the script ended while the agent was down.

mod common;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::{Emulator, aws_run_shell_script_payload as shell_payload};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FINAL_WAIT: Duration = Duration::from_secs(30);

/// A script that prints, marks that it runs, waits (up to 20 s) until the test creates `go`,
/// prints again and exits `code`.
fn gated_script(agent: &Agent, code: i32) -> (String, PathBuf, PathBuf) {
    let (mark, go) = (agent.scratch().join("started"), agent.scratch().join("go"));
    let script = format!(
        "echo before; echo err-before >&2; touch {mark}\n\
         i=0; while [ ! -e {go} ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done\n\
         echo after; echo err-after >&2; exit {code}",
        mark = mark.display(),
        go = go.display()
    );
    (script, mark, go)
}

fn send(emu: &Emulator, id: &str, script: &str, timeout: u64) -> String {
    emu.send_command(&shell_payload(id, &[script], timeout))
}

/// Sends `script` as command `id`, waits until it runs (it creates `mark`) and the record names
/// its supervisor; returns the message id.
fn start_under_supervisor(
    emu: &Emulator,
    agent: &Agent,
    id: &str,
    script: &str,
    mark: &Path,
) -> String {
    let msg = send(emu, id, script, 3600);
    wait_file_exists_within(Duration::from_secs(20), mark);
    recorded_supervisor(agent, id);
    msg
}

fn final_of(emu: &Emulator, msg: &str) -> Value {
    emu.wait_final(msg, FINAL_WAIT)
        .unwrap_or_else(|| panic!("no final reply for {msg}; replies: {:?}", emu.replies(msg)))
        .payload
}

/// The first file called `name` under `dir`.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if path.is_dir()
            && let Some(found) = find(&path, name)
        {
            return Some(found);
        }
    }
    None
}

/// The supervisor the command record names for the running step (`pid`, `start_time`,
/// `run_dir`), once the agent has written it down.
fn recorded_supervisor(agent: &Agent, command_id: &str) -> Value {
    let deadline = Instant::now() + FINAL_WAIT;
    loop {
        let record = find(&agent.state_dir(), &format!("{command_id}.json"))
            .and_then(|p| fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let supervisor = record.map(|r| r["running"]["supervisor"].clone());
        if let Some(s) = supervisor.filter(|s| s["pid"].is_i64()) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no supervisor recorded; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the step's `status.json`: the supervisor has seen its script end.
fn wait_status(agent: &Agent) -> PathBuf {
    let deadline = Instant::now() + FINAL_WAIT;
    loop {
        if let Some(p) = find(&agent.state_dir(), "status.json") {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "no status.json; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_whole_output(reply: &Value, code: i32) {
    let p = plugin(reply);
    assert_eq!(p["code"], code, "{reply}");
    assert_eq!(p["standardOutput"], "before\nafter\n", "{reply}");
    let stderr = p["standardError"].as_str().unwrap();
    assert!(stderr.starts_with("err-before\nerr-after\n"), "{reply}");
}

#[test]
fn a_script_outlives_a_killed_agent_and_the_next_start_reports_its_code_and_output() {
    let emu = emulator();
    let mut agent = Agent::start(&emu, json!({}));
    let (script, mark, go) = gated_script(&agent, 3);
    let id = "5a000000-0000-4000-8000-000000000001";
    let msg = start_under_supervisor(&emu, &agent, id, &script, &mark);
    agent.kill9();
    agent.start_again();
    assert!(
        agent
            .wait_latest_log("following step", FINAL_WAIT)
            .is_some(),
        "the second agent follows the script"
    );
    fs::write(&go, "").unwrap();
    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "Failed", "{reply}");
    assert_whole_output(&reply, 3);
    assert!(
        plugin(&reply)["standardError"]
            .as_str()
            .unwrap()
            .ends_with("failed to run commands: exit status 3"),
        "{reply}"
    );
}

#[test]
fn a_graceful_stop_leaves_the_script_running_and_the_next_start_reports_it() {
    let emu = emulator();
    // A grace far longer than the wait for the agent's exit: it leaves the script at once (an
    // upgrade run by the script, `dpkg -i`, waits for this stop).
    let mut agent = Agent::start(&emu, json!({ "Mds": { "StopTimeoutMillis": 600_000 } }));
    let (script, mark, go) = gated_script(&agent, 0);
    let id = "5a000000-0000-4000-8000-000000000002";
    let msg = send(&emu, id, &script, 3600);
    wait_file_exists_within(Duration::from_secs(20), &mark);
    assert_eq!(agent.terminate(FINAL_WAIT).code(), Some(0), "clean exit");
    assert!(
        agent.log().contains("leaving the script of command"),
        "{}",
        agent.log()
    );
    assert!(
        !emu.replies(&msg).iter().any(|r| r.is_final()),
        "the stopped agent made no final reply"
    );
    recorded_supervisor(&agent, id);
    agent.start_again();
    fs::write(&go, "").unwrap();
    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "Success", "{reply}");
    assert_whole_output(&reply, 0);
}

#[test]
fn a_script_that_ended_while_the_agent_was_down_is_reported_at_start() {
    let emu = emulator();
    let mut agent = Agent::start(&emu, json!({}));
    let (script, mark, go) = gated_script(&agent, 3);
    let id = "5a000000-0000-4000-8000-000000000003";
    let msg = start_under_supervisor(&emu, &agent, id, &script, &mark);
    agent.kill9();
    fs::write(&go, "").unwrap();
    wait_status(&agent);
    let started = Instant::now();
    agent.start_again();
    let reply = final_of(&emu, &msg);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reply["documentStatus"], "Failed", "{reply}");
    assert_whole_output(&reply, 3);
}

#[test]
fn the_supervisor_enforces_the_timeout_while_the_agent_is_down() {
    let emu = emulator();
    let mut agent = Agent::start(&emu, json!({}));
    let pgid_file = agent.scratch().join("pgid");
    let script = format!(
        "set -- $(cat /proc/$$/stat); echo $5 > {}; echo before; sleep 60 & sleep 60",
        pgid_file.display()
    );
    let id = "5a000000-0000-4000-8000-000000000004";
    let msg = send(&emu, id, &script, 5);
    let pgid = wait_file(&pgid_file, Duration::from_secs(20)).expect("script started");
    recorded_supervisor(&agent, id);
    agent.kill9();
    wait_status(&agent);
    assert!(
        group_gone_within(&pgid, Duration::from_secs(10)),
        "process group {pgid} must be gone"
    );
    agent.start_again();
    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "TimedOut", "{reply}");
    assert_eq!(plugin(&reply)["code"], 137);
    assert_eq!(plugin(&reply)["standardOutput"], "before\n");
}

#[test]
fn a_supervisor_gone_without_a_status_is_reported_interrupted() {
    let emu = emulator();
    let mut agent = Agent::start(&emu, json!({}));
    let pgid_file = agent.scratch().join("pgid");
    let script = format!(
        "set -- $(cat /proc/$$/stat); echo $5 > {}; sleep 60",
        pgid_file.display()
    );
    let id = "5a000000-0000-4000-8000-000000000005";
    let msg = send(&emu, id, &script, 3600);
    let pgid = wait_file(&pgid_file, Duration::from_secs(20)).expect("script started");
    let supervisor = recorded_supervisor(&agent, id)["pid"].as_i64().unwrap();
    agent.kill9();
    // As a reboot would: the supervisor and its script vanish, and nothing says how it ended.
    signal(supervisor as u32, "KILL");
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status();
    assert!(group_gone_within(&pgid, Duration::from_secs(10)));
    agent.start_again();
    assert_interrupted(&final_of(&emu, &msg));
}

#[test]
fn a_cancel_reaches_a_script_followed_after_a_restart() {
    let emu = emulator();
    let mut agent = Agent::start(&emu, json!({}));
    let (script, mark, _go) = gated_script(&agent, 0);
    let id = "5a000000-0000-4000-8000-000000000006";
    let msg = start_under_supervisor(&emu, &agent, id, &script, &mark);
    agent.kill9();
    agent.start_again();
    assert!(
        agent
            .wait_latest_log("following step", FINAL_WAIT)
            .is_some()
    );
    emu.send_cancel(&msg);
    let started = Instant::now();
    let reply = final_of(&emu, &msg);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reply["documentStatus"], "Cancelled", "{reply}");
    assert_eq!(plugin(&reply)["standardOutput"], "before\n");
}

#[test]
fn a_reboot_asked_while_the_agent_was_down_still_happens_and_the_step_runs_again() {
    let emu = emulator();
    let mut agent = Agent::start(&emu, json!({}));
    let flag = agent.scratch().join("rebooted");
    let (gated, mark, go) = gated_script(&agent, 0);
    // The first run exits 194 (reboot); the run after the reboot succeeds.
    let script = gated.replace(
        "exit 0",
        &format!(
            "[ -e {f} ] && exit 0; touch {f}; exit 194",
            f = flag.display()
        ),
    );
    let id = "5a000000-0000-4000-8000-000000000007";
    let msg = start_under_supervisor(&emu, &agent, id, &script, &mark);
    agent.kill9();
    fs::write(&go, "").unwrap();
    wait_status(&agent);
    agent.start_again();
    assert!(
        agent
            .wait_latest_log("asked for a reboot", FINAL_WAIT)
            .is_some(),
        "the 194 the supervisor recorded asks for the reboot:\n{}",
        agent.log()
    );
    agent.restart(); // the machine's reboot
    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "Success", "{reply}");
}

/// A supervisor runs its script only after the agent's go-ahead, which the agent sends once its
/// command record names it: an agent killed in between leaves no script that no record names.
#[test]
fn a_supervisor_runs_nothing_until_the_agent_has_recorded_it() {
    let dir = TempDir::new("supervise");
    let run_dir = dir.path();
    let mark = run_dir.join("ran");
    fs::write(
        run_dir.join("_script.sh"),
        format!("echo ran > {}\n", mark.display()),
    )
    .unwrap();
    let path = |name: &str| run_dir.join(name).to_str().unwrap().to_owned();
    let job = json!({
        "script": path("_script.sh"), "working_dir": null,
        "stdout": path("stdout"), "stderr": path("stderr"),
        "deadline_ms": 4_102_444_800_000u64, "file_bytes": 1 << 20, "head_bytes": 2500,
    });
    fs::write(run_dir.join("job.json"), job.to_string()).unwrap();
    let supervise = |go: &[u8]| {
        let mut child = agent_command()
            .args(["__supervise", run_dir.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), go).unwrap();
        child.wait_with_output().unwrap()
    };
    // The agent went away (its end of the pipe closed) without a go-ahead.
    let gone = supervise(b"");
    assert_eq!(gone.status.code(), Some(1));
    let said = String::from_utf8_lossy(&gone.stderr);
    assert!(said.contains("went away before it recorded"), "{said}");
    assert!(!mark.exists(), "the script ran without a go-ahead");
    assert!(!run_dir.join("status.json").exists());
    // With it, the script runs and its status comes back on stdout and in status.json.
    let ran = supervise(b"1");
    assert_eq!(ran.status.code(), Some(0));
    assert_eq!(fs::read_to_string(&mark).unwrap(), "ran\n");
    let status: Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!(status["ended"], "exited", "{status}");
    assert_eq!(status["code"], 0);
    assert!(run_dir.join("status.json").exists());
}
