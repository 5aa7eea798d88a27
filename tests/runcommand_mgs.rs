//! Run Command over the MGS control channel (agent_job): the same engine as over ec2messages.

mod common;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::aws_run_shell_script_payload as shell_payload;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn agent(emu: &ssm_emulator::Emulator, extra: Value) -> Agent {
    let agent = Agent::start(emu, extra);
    assert!(
        emu.wait_mgs_connected(WAIT),
        "control channel connected; log:\n{}",
        agent.log()
    );
    agent
}

fn final_of(emu: &ssm_emulator::Emulator, job: &str) -> Value {
    emu.wait_job_final(job, WAIT)
        .unwrap_or_else(|| panic!("no final reply for {job}: {:?}", emu.job_replies(job)))
        .payload
}

#[test]
fn a_job_is_acked_and_replied_in_order() {
    let emu = emulator();
    let _agent = agent(&emu, json!({}));
    let job = emu.send_agent_job(&shell_payload(
        "eeeeeeee-0000-4000-8000-000000000001",
        &["echo over mgs"],
        3600,
    ));
    let reply = final_of(&emu, &job);
    assert_eq!(reply["documentStatus"], "Success");
    assert_eq!(plugin(&reply)["standardOutput"], "over mgs\n");
    assert!(
        reply["additionalInfo"]
            .get("ableToOpenMGSConnection")
            .is_none(),
        "MGS replies do not carry it"
    );
    let acks = emu.job_acks(&job);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].status_code, "200");
    let statuses: Vec<String> = emu
        .job_replies(&job)
        .iter()
        .map(|r| r.document_status().to_owned())
        .collect();
    assert_eq!(
        statuses,
        ["InProgress", "InProgress", "Success"],
        "receipt, step, final: the final one last"
    );
    assert!(emu.signature_failures().is_empty());
}

#[test]
fn duplicates_full_queues_and_cancels_get_their_ack_codes() {
    let emu = emulator();
    let agent = agent(
        &emu,
        json!({ "Mds": { "CommandWorkersLimit": 1, "CommandWorkerBufferLimit": 1 } }),
    );
    let mark = agent.scratch().join("running");
    let long = emu.send_agent_job(&shell_payload(
        "eeeeeeee-0000-4000-8000-000000000002",
        &[&format!("touch {}; sleep 60", mark.display())],
        3600,
    ));
    wait_file_exists_within(WAIT_FOR_FILE, &mark);
    let queued = emu.send_agent_job(&shell_payload(
        "eeeeeeee-0000-4000-8000-000000000003",
        &["true"],
        3600,
    ));
    assert_eq!(emu.wait_job_ack(&queued, WAIT).unwrap().status_code, "200");
    let full = emu.send_agent_job(&shell_payload(
        "eeeeeeee-0000-4000-8000-000000000004",
        &["true"],
        3600,
    ));
    assert_eq!(emu.wait_job_ack(&full, WAIT).unwrap().status_code, "51402");
    emu.send_agent_job(&shell_payload(
        "eeeeeeee-0000-4000-8000-000000000003",
        &["true"],
        3600,
    ));
    assert!(
        emu.wait_until(WAIT, |s| s.mgs().job_acks(&queued).len() >= 2),
        "duplicate acked"
    );
    assert_eq!(emu.job_acks(&queued)[1].status_code, "51405");
    emu.send_agent_cancel(&queued);
    assert_eq!(
        final_of(&emu, &queued)["documentStatus"],
        "Cancelled",
        "a queued job reports Cancelled"
    );
    emu.send_agent_cancel(&long);
    assert_eq!(final_of(&emu, &long)["documentStatus"], "Cancelled");
}

#[test]
fn a_reply_survives_a_control_channel_drop() {
    let emu = emulator();
    let agent = agent(&emu, json!({}));
    let mark = agent.scratch().join("started");
    let job = emu.send_agent_job(&shell_payload(
        "eeeeeeee-0000-4000-8000-000000000005",
        &[&format!("touch {}; sleep 2; echo finished", mark.display())],
        3600,
    ));
    wait_file_exists_within(WAIT_FOR_FILE, &mark);
    let connects = emu.mgs_connects();
    emu.drop_control_channel();
    let reply = final_of(&emu, &job);
    assert_eq!(plugin(&reply)["standardOutput"], "finished\n");
    assert!(emu.mgs_connects() > connects, "the agent reconnected");
}

#[test]
fn unacknowledged_replies_are_sent_again_with_the_same_id() {
    let emu = emulator();
    let _agent = agent(&emu, json!({}));
    emu.set_reply_acks(ssm_emulator::AckPolicy::Withhold);
    let job = emu.send_agent_job(&shell_payload(
        "eeeeeeee-0000-4000-8000-000000000006",
        &["true"],
        3600,
    ));
    assert!(
        emu.wait_until(WAIT, |s| !s.mgs().duplicate_job_replies.is_empty()),
        "a reply was re-sent"
    );
    emu.set_reply_acks(ssm_emulator::AckPolicy::Ack);
    assert_eq!(final_of(&emu, &job)["documentStatus"], "Success");
}

#[test]
fn bad_jobs_get_parse_error_acks_and_failed_replies() {
    let emu = emulator();
    let _agent = agent(&emu, json!({}));
    let not_json = "aws.ssm.ffffffff-0000-4000-8000-000000000001.i-0123456789abcdef0";
    emu.send_agent_job_raw(not_json, "aws.ssm.sendCommand", "{not json");
    assert_eq!(
        emu.wait_job_ack(not_json, WAIT).unwrap().status_code,
        "51408"
    );
    let r = final_of(&emu, not_json);
    assert_eq!(r["documentStatus"], "Failed");
    assert!(
        r["documentTraceOutput"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let mut p = shell_payload("ffffffff-0000-4000-8000-000000000002", &["true"], 3600);
    p["DocumentContent"]["schemaVersion"] = json!("9999.0");
    let schema = emu.send_agent_job(&p);
    assert!(
        final_of(&emu, &schema)["documentTraceOutput"]
            .as_str()
            .unwrap()
            .contains("schema version 9999.0")
    );
    let good = emu.send_agent_job(&shell_payload(
        "ffffffff-0000-4000-8000-000000000003",
        &["exit 2"],
        3600,
    ));
    let r = final_of(&emu, &good);
    assert_eq!(r["documentStatus"], "Failed");
    assert_eq!(plugin(&r)["code"], 2);
}

#[test]
fn a_job_interrupted_by_a_crash_is_reported_over_mgs_after_restart() {
    let emu = emulator();
    let mut agent = agent(&emu, json!({}));
    let mark = agent.scratch().join("started");
    let job = emu.send_agent_job(&shell_payload(
        "ffffffff-0000-4000-8000-000000000004",
        &[&format!("touch {}; sleep 3; echo done", mark.display())],
        3600,
    ));
    wait_file_exists_within(WAIT_FOR_FILE, &mark);
    agent.kill9();
    agent.start_again();
    // The script outlived the crash under its supervisor: its real result, from the next start.
    let r = final_of(&emu, &job);
    assert_eq!(r["documentStatus"], "Success", "{r}");
    assert_eq!(plugin(&r)["standardOutput"], "done\n");
}

/// A clock an hour behind the services', with only MGS to reach: CreateControlChannel is refused
/// as "Signature expired", the agent corrects its clock from the answer's `Date`, signs the REST
/// call and then the websocket upgrade with it, and jobs run over the control channel.
#[test]
fn a_clock_an_hour_behind_is_corrected_from_mgs_rest_and_the_upgrade_signed_with_it() {
    let emu = skewed_emulator(3600);
    let dead = nowhere();
    let agent = Agent::start(
        &emu,
        json!({ "Mds": { "Endpoint": dead }, "Ssm": { "Endpoint": dead } }),
    );
    assert!(
        emu.wait_mgs_connected(WAIT),
        "control channel; log:\n{}",
        agent.log()
    );
    let job = emu.send_agent_job(&shell_payload(
        "5ce70000-0000-4000-8000-000000000004",
        &["echo mgs on time"],
        60,
    ));
    let reply = final_of(&emu, &job);
    assert_eq!(reply["documentStatus"], "Success", "{reply}");
    let target = "POST /v1/control-channel/";
    assert_clock_corrected_once(&emu, &agent, &[target], "Signature expired", "behind");
}

/// Output of NUL and control bytes grows sixfold and more once escaped: the replies are cut to
/// the service's limit by their encoded size, and the final one arrives.
#[test]
fn binary_output_is_cut_to_the_reply_limit_and_the_final_reply_arrives() {
    let emu = emulator();
    let agent = agent(&emu, json!({}));
    let job = emu.send_agent_job(&shell_payload(
        "ffffffff-0000-4000-8000-000000000010",
        &["head -c 3000000 /dev/zero; head -c 300000 /dev/zero | tr '\\0' '\\1' >&2"],
        3600,
    ));
    let reply = emu
        .wait_job_final(&job, WAIT)
        .unwrap_or_else(|| {
            panic!(
                "no final reply; emulator errors {:?}; log:\n{}",
                emu.mgs_errors(),
                agent.log()
            )
        })
        .payload;
    assert_eq!(reply["documentStatus"], "Success");
    let p = plugin(&reply);
    let (out, err) = (
        p["standardOutput"].as_str().unwrap(),
        p["standardError"].as_str().unwrap(),
    );
    assert!(out.starts_with('\0') && out.ends_with("--output truncated--"));
    assert!(err.starts_with('\u{1}') && err.ends_with("--output truncated--"));
    assert!(
        out.len() + err.len() > 10_000,
        "as much output as fits is kept"
    );
    assert!(emu.mgs_errors().is_empty(), "{:?}", emu.mgs_errors());
    let frames: Vec<usize> = emu
        .mgs_log()
        .iter()
        .filter(|r| r.inbound && r.message.message_type == "agent_job_reply")
        .map(|r| r.message.encode().len())
        .collect();
    assert!(frames.iter().all(|&n| n <= 120_000), "{frames:?}");
}

/// The `Failed` reply to a job of unknown topic is a final reply like any other: kept and sent
/// again until the service acknowledges it.
#[test]
fn the_failed_reply_to_an_unknown_topic_is_resent_until_acknowledged() {
    let emu = emulator();
    let _agent = agent(&emu, json!({}));
    emu.set_reply_acks(ssm_emulator::AckPolicy::Withhold);
    let job = "aws.ssm.ffffffff-0000-4000-8000-000000000020.i-0123456789abcdef0";
    emu.send_agent_job_raw(job, "aws.ssm.noSuchTopic", "{}");
    assert_eq!(emu.wait_job_ack(job, WAIT).unwrap().status_code, "51408");
    assert_eq!(final_of(&emu, job)["documentStatus"], "Failed");
    assert!(
        emu.wait_until(WAIT, |s| !s.mgs().duplicate_job_replies.is_empty()),
        "the Failed reply was sent again while unacknowledged"
    );
}

#[test]
fn parameter_store_references_resolve_for_a_job_over_mgs() {
    let emu = emulator();
    let _agent = agent(&emu, json!({}));
    emu.put_parameter(
        "/app/greeting",
        ssm_emulator::ParameterType::String,
        "over mgs",
    );
    let job = emu.send_agent_job(&shell_payload(
        "eeeeeeee-0000-4000-8000-0000000000a7",
        &["echo {{ssm:/app/greeting}}"],
        3600,
    ));
    let reply = final_of(&emu, &job);
    assert_eq!(reply["documentStatus"], "Success", "{reply}");
    assert_eq!(plugin(&reply)["standardOutput"], "over mgs\n");
    let calls = emu.get_parameters_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
}
