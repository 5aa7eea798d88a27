//! State Manager end to end: associations listed by the emulator run through the agent's engine,
//! report upstream's status sequence and compliance, honour their schedule across restarts, and
//! run on AWS-RefreshAssociation.

mod common;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::{Association, Emulator};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const SUCCESS_SUMMARY: &str =
    "1 out of 1 plugin processed, 1 success, 0 failed, 0 timedout, 0 skipped. ";

/// A schema 2.2 shell document with a `commands` StringList parameter.
fn shell_document() -> String {
    json!({
        "schemaVersion": "2.2",
        "description": "run a shell script",
        "parameters": {"commands": {"type": "StringList", "description": "commands"}},
        "mainSteps": [{"action": "aws:runShellScript", "name": "runShellScript",
                       "inputs": {"runCommand": "{{ commands }}"}}]
    })
    .to_string()
}

/// An agent that polls at once (no random wait) and again a second after an empty first poll.
fn agent(emu: &Emulator) -> Agent {
    Agent::start_with_env(emu, json!({}), &[("SSM_LITE_ASSOCIATION_JITTER_SECS", "1")])
}

fn statuses(emu: &Emulator, id: &str) -> Vec<(String, String, String)> {
    emu.association_statuses(id)
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (text("Status"), text("ErrorCode"), text("ExecutionSummary"))
        })
        .collect()
}

/// Waits for `n` statuses of `id`; the statuses then.
fn wait_statuses(
    emu: &Emulator,
    agent: &Agent,
    id: &str,
    n: usize,
) -> Vec<(String, String, String)> {
    assert!(
        emu.wait_until(WAIT, |st| st.association_statuses(id).len() >= n),
        "{n} statuses of {id}: {:?}\nlog:\n{}",
        statuses(emu, id),
        agent.log()
    );
    statuses(emu, id)
}

fn owned(items: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    items
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

/// Runs of a script made by [`counting`]: the lines of its marker file.
fn runs(marks: &TempDir, name: &str) -> usize {
    std::fs::read_to_string(marks.path().join(name))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// A command that adds a line to `name` in `marks` each time it runs.
fn counting(marks: &TempDir, name: &str) -> String {
    format!("echo ran >> {}", marks.path().join(name).display())
}

#[test]
fn an_association_runs_once_with_upstreams_statuses_and_not_again_within_its_rate() {
    let emu = emulator();
    let marks = TempDir::new("assoc-marks");
    emu.put_document("Custom-Shell", "JSON", &shell_document());
    emu.add_association(
        Association::new("Custom-Shell")
            .id("a-rate")
            .schedule("rate(30 minutes)")
            .detailed_status("Associated")
            .parameter("commands", &[&counting(&marks, "rate")]),
    );
    let agent = agent(&emu);
    let got = wait_statuses(&emu, &agent, "a-rate", 4);
    assert_eq!(
        got,
        owned(&[
            ("Pending", "", "Association is pending"),
            ("InProgress", "", "Executing association"),
            ("InProgress", "", SUCCESS_SUMMARY),
            ("Success", "", SUCCESS_SUMMARY),
        ])
    );
    assert_eq!(runs(&marks, "rate"), 1);
    assert!(emu.wait_until(WAIT, |st| !st.compliance_puts().is_empty()));
    let compliance = &emu.compliance_puts()[0];
    assert_eq!(compliance["ComplianceType"], "Association");
    assert_eq!(compliance["Items"][0]["Id"], "a-rate");
    assert_eq!(compliance["Items"][0]["Status"], "COMPLIANT");
    // A refresh naming another association makes the agent poll again: a-rate is not due.
    let polls = emu.list_associations_calls().len();
    let reply = refresh_associations(&emu, "11111111-0000-4000-8000-000000000001", &["a-other"]);
    assert_eq!(reply["documentStatus"], "Success", "{reply}");
    assert!(emu.wait_until(WAIT, |st| st.list_associations_calls().len() > polls));
    assert_eq!(statuses(&emu, "a-rate").len(), 4, "ran once only");
    assert_eq!(runs(&marks, "rate"), 1);
}

#[test]
fn a_failing_association_reports_failed_with_its_error() {
    let emu = emulator();
    emu.put_document("Custom-Shell", "JSON", &shell_document());
    emu.add_association(
        Association::new("Custom-Shell")
            .id("a-fail")
            .detailed_status("Associated")
            .parameter("commands", &["echo broken >&2; exit 3"]),
    );
    let agent = agent(&emu);
    let last = wait_statuses(&emu, &agent, "a-fail", 4).pop().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1.as_str()),
        ("Failed", "ExecutionError")
    );
    assert_eq!(
        last.2,
        "1 out of 1 plugin processed, 0 success, 1 failed, 0 timedout, 0 skipped. \nThe operation runShellScript failed because broken\nfailed to run commands: exit status 3."
    );
    assert!(emu.wait_until(WAIT, |st| !st.compliance_puts().is_empty()));
    assert_eq!(
        emu.compliance_puts()[0]["Items"][0]["Status"],
        "NON_COMPLIANT"
    );
}

#[test]
fn a_refresh_runs_the_named_association_and_not_the_others() {
    let emu = emulator();
    let marks = TempDir::new("assoc-marks");
    emu.put_document("Custom-Shell", "JSON", &shell_document());
    let agent = agent(&emu);
    // Both first polls (at start and a second later) find nothing.
    assert!(emu.wait_until(WAIT, |st| st.list_associations_calls().len() >= 2));
    for id in ["a-named", "a-other"] {
        emu.add_association(
            Association::new("Custom-Shell")
                .id(id)
                .schedule("rate(1 day)")
                .detailed_status("Associated")
                .parameter("commands", &[&counting(&marks, id)]),
        );
    }
    let reply = refresh_associations(&emu, "11111111-0000-4000-8000-000000000002", &["a-named"]);
    assert_eq!(
        plugin(&reply)["standardOutput"],
        "Associations [a-named] have been requested to execute immediately"
    );
    let last = wait_statuses(&emu, &agent, "a-named", 4).pop().unwrap();
    assert_eq!(last.0, "Success");
    assert_eq!(runs(&marks, "a-named"), 1);
    assert!(statuses(&emu, "a-other").is_empty(), "not named, not run");
    assert_eq!(runs(&marks, "a-other"), 0);
}

#[test]
fn a_restart_neither_reruns_before_the_schedule_nor_skips_a_missed_run() {
    let emu = emulator();
    let marks = TempDir::new("assoc-marks");
    emu.put_document("Custom-Shell", "JSON", &shell_document());
    emu.add_association(
        Association::new("Custom-Shell")
            .id("a-daily")
            .schedule("rate(1 day)")
            .detailed_status("Associated")
            .parameter("commands", &[&counting(&marks, "daily")]),
    );
    let mut agent = agent(&emu);
    wait_statuses(&emu, &agent, "a-daily", 4);
    // Compliance comes after the final status is taken and the run is closed: a crash before
    // that sends the final status again (at least once, never lost).
    assert!(emu.wait_until(WAIT, |st| !st.compliance_puts().is_empty()));
    // The service lags: it still shows the association as never run.
    let lagging = emu.association("a-daily").unwrap();
    emu.add_association(Association {
        last_execution_date: None,
        detailed_status: Some("Associated".into()),
        ..lagging
    });
    agent.restart();
    let planned = agent
        .wait_latest_log("association a-daily: ", WAIT)
        .unwrap_or_else(|| panic!("the restarted agent's plan:\n{}", agent.log()));
    assert!(
        planned.contains("association a-daily: next run at "),
        "{planned}"
    );
    assert_eq!(runs(&marks, "daily"), 1, "not run again after a restart");
    assert_eq!(statuses(&emu, "a-daily").len(), 4);
    // A run missed while the agent was down: the last one was two days ago.
    agent.terminate(WAIT);
    let two_days_ago = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 2 * 86400) as f64;
    rewrite_last_run(&agent, "a-daily", two_days_ago as u64);
    let done = emu.association("a-daily").unwrap();
    emu.add_association(Association {
        last_execution_date: Some(two_days_ago),
        detailed_status: Some("Success".into()),
        ..done
    });
    agent.start_again();
    wait_statuses(&emu, &agent, "a-daily", 8);
    assert_eq!(runs(&marks, "daily"), 2, "the missed run ran once");
}

#[test]
fn an_association_resolves_parameter_store_and_writes_its_output_to_s3_at_upstreams_key() {
    let emu = emulator();
    emu.create_bucket("assoc-output", "us-east-1");
    emu.put_parameter(
        "/fleet/greeting",
        ssm_emulator::ParameterType::String,
        "hello fleet",
    );
    emu.put_document("Custom-Shell", "JSON", &shell_document());
    emu.add_association(
        Association::new("Custom-Shell")
            .id("a-s3")
            .detailed_status("Associated")
            .parameter("commands", &["echo {{ssm:/fleet/greeting}}"])
            .output_to_s3("us-east-1", "assoc-output", "runs"),
    );
    let agent = Agent::start_with_env(
        &emu,
        json!({ "S3": { "Endpoint": emu.url() } }),
        &[("SSM_LITE_ASSOCIATION_JITTER_SECS", "1")],
    );
    wait_statuses(&emu, &agent, "a-s3", 4);
    let last = emu.association_statuses("a-s3").pop().unwrap();
    assert_eq!(last["Status"], "Success", "{last}");
    // `<bucket>/<prefix>/<InstanceId>/<AssociationId>/<RunId>`.
    let url = last["OutputUrl"]["S3OutputUrl"]["OutputUrl"]
        .as_str()
        .unwrap();
    let run = url
        .strip_prefix("assoc-output/runs/i-0123456789abcdef0/a-s3/")
        .unwrap_or_else(|| panic!("{url}"));
    assert!(!run.is_empty() && !run.contains('/'), "{url}");
    let key =
        format!("runs/i-0123456789abcdef0/a-s3/{run}/awsrunShellScript/runShellScript/stdout");
    let stdout = emu
        .s3_object("assoc-output", &key)
        .unwrap_or_else(|| panic!("no {key}"));
    assert_eq!(String::from_utf8_lossy(&stdout), "hello fleet\n");
}

/// Sets the agent's own record of `id`'s last start, as if it had run `at`.
fn rewrite_last_run(agent: &Agent, id: &str, at: u64) {
    let path = agent
        .state_dir()
        .join("i-0123456789abcdef0/associations/book.json");
    let mut book: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    book["last_runs"][id] = json!(at);
    std::fs::write(&path, serde_json::to_vec(&book).unwrap()).unwrap();
}
