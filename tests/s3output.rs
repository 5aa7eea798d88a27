//! Output to S3 end to end (docs/protocol.md §3.10): the real agent against the emulator's S3, with
//! `OutputS3BucketName`/`OutputS3KeyPrefix` on AWS-RunShellScript commands.

mod common;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::{Emulator, aws_run_shell_script_payload as shell_payload};
use std::time::Duration;

const FINAL_WAIT: Duration = Duration::from_secs(60);
const INSTANCE: &str = "i-0123456789abcdef0";

/// The agent pointed at the emulator's S3, with the default output caps unless `extra_ssm` sets
/// them: output that goes to S3 is kept whole on disk, past the 4 MiB per-step cap.
fn agent(emu: &Emulator, extra_ssm: Value) -> Agent {
    let mut ssm = json!({});
    if let (Some(s), Some(e)) = (ssm.as_object_mut(), extra_ssm.as_object()) {
        s.extend(e.clone());
    }
    Agent::start(emu, json!({ "S3": { "Endpoint": emu.url() }, "Ssm": ssm }))
}

/// Runs `commands` with output to `bucket` under `prefix`; the final reply's plugin entry.
fn run_to_s3(emu: &Emulator, id: &str, commands: &[&str], bucket: &str, prefix: &str) -> Value {
    let mut payload = shell_payload(id, commands, 600);
    payload["OutputS3BucketName"] = json!(bucket);
    payload["OutputS3KeyPrefix"] = json!(prefix);
    let msg = emu.send_command(&payload);
    let reply = emu
        .wait_final(&msg, FINAL_WAIT)
        .unwrap_or_else(|| panic!("no final reply for {msg}: {:?}", emu.replies(&msg)))
        .payload;
    plugin(&reply).clone()
}

/// `seq 1 n` as bytes.
fn seq(n: u32) -> Vec<u8> {
    (1..=n)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect()
}

#[test]
fn five_megabytes_land_at_upstreams_keys_and_the_reply_names_them() {
    let emu = emulator();
    // Another region than the agent's: found from the refusal of the first signed HEAD.
    emu.create_bucket("ssm-output", "eu-central-1");
    let _agent = agent(&emu, json!({}));
    let id = "5e5e5e5e-0000-4000-8000-000000000001";
    let p = run_to_s3(
        &emu,
        id,
        &["seq 1 800000", "echo err-one >&2", "echo err-two >&2"],
        "ssm-output",
        "runs/nightly",
    );
    assert_eq!(p["status"], "Success", "{p}");
    let prefix = format!("runs/nightly/{id}/{INSTANCE}/awsrunShellScript");
    assert_eq!(p["outputS3BucketName"], "ssm-output");
    assert_eq!(p["outputS3KeyPrefix"], prefix.as_str());
    assert_eq!(p["stepName"], "0.awsrunShellScript");
    let output = p["output"].as_str().unwrap();
    assert!(
        output.len() < 3000,
        "output stays truncated: {}",
        output.len()
    );
    assert!(output.contains("---Output truncated---"), "{output}");

    let stdout = seq(800_000);
    assert!(stdout.len() > 5_000_000);
    let key = |name: &str| format!("{prefix}/0.awsrunShellScript/{name}");
    let object = emu
        .s3_object_with_headers("ssm-output", &key("stdout"))
        .unwrap_or_else(|| panic!("no stdout object; calls: {:?}", emu.s3_calls()));
    assert!(
        object.body == stdout,
        "stdout differs ({} bytes)",
        object.body.len()
    );
    assert_eq!(object.headers["content-type"], "text/plain");
    assert_eq!(object.headers["x-amz-acl"], "bucket-owner-full-control");
    assert!(!object.headers.contains_key("x-amz-server-side-encryption"));
    assert_eq!(
        emu.s3_object("ssm-output", &key("stderr")).as_deref(),
        Some(&b"err-one\nerr-two\n"[..])
    );

    // Per file: the region (cached after the first), the encryption, the object.
    let calls: Vec<String> = emu
        .s3_calls()
        .iter()
        .map(|c| format!("{} {}?{} {}", c.method, c.path, c.query, c.status))
        .collect();
    let object_path = |name: &str| format!("/ssm-output/{}", key(name));
    assert_eq!(
        calls,
        [
            "GET /ssm-output?encryption= 404".to_owned(),
            format!("PUT {}? 200", object_path("stdout")),
            "GET /ssm-output?encryption= 404".to_owned(),
            format!("PUT {}? 200", object_path("stderr")),
        ]
    );
    // The only refused signature is the first HEAD, signed for the agent's own region.
    let refused: Vec<String> = emu
        .signature_failures()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(refused, ["s3 HEAD /ssm-output"]);
}

#[test]
fn a_refused_upload_is_written_into_stderr_and_the_step_keeps_its_own_status() {
    let emu = emulator();
    let _agent = agent(&emu, json!({}));
    let id = "5e5e5e5e-0000-4000-8000-000000000002";
    let p = run_to_s3(
        &emu,
        id,
        &["echo out", "echo err >&2"],
        "no-such-bucket",
        "",
    );
    // Upstream logs the failure and leaves the step as the script ended it.
    assert_eq!(p["status"], "Success", "{p}");
    assert_eq!(p["standardOutput"], "out\n");
    let stderr = p["standardError"].as_str().unwrap();
    assert!(stderr.starts_with("err\n"), "{stderr}");
    assert!(
        stderr.contains("Failed to upload the output to s3: ") && stderr.contains("NoSuchBucket"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("Failed to upload").count(), 2, "{stderr}");
    // An empty prefix: no leading `/`.
    assert_eq!(
        p["outputS3KeyPrefix"],
        format!("{id}/{INSTANCE}/awsrunShellScript").as_str()
    );
    assert_eq!(p["outputS3BucketName"], "no-such-bucket");
}

#[test]
fn large_output_goes_in_parts_to_an_encrypted_bucket_and_after_upload_cleans_up() {
    let emu = emulator();
    emu.create_bucket("big-output", "us-east-1");
    emu.set_bucket_encryption("big-output", "AES256");
    let agent = agent(&emu, json!({ "PluginLocalOutputCleanup": "after-upload" }));
    let id = "5e5e5e5e-0000-4000-8000-000000000003";
    // 21.9 MB: two 16 MiB parts.
    let p = run_to_s3(&emu, id, &["seq 1 3000000"], "big-output", "");
    assert_eq!(p["status"], "Success", "{p}");
    let key = format!("{id}/{INSTANCE}/awsrunShellScript/0.awsrunShellScript/stdout");
    let object = emu
        .s3_object_with_headers("big-output", &key)
        .unwrap_or_else(|| panic!("no object; calls: {:?}", emu.s3_calls()));
    assert!(object.body == seq(3_000_000), "{} bytes", object.body.len());
    assert_eq!(object.headers["x-amz-server-side-encryption"], "AES256");
    assert_eq!(object.headers["content-type"], "text/plain");
    let parts = emu
        .s3_calls()
        .iter()
        .filter(|c| c.method == "PUT" && c.query.contains("partNumber="))
        .count();
    assert_eq!(parts, 2);
    assert_eq!(emu.s3_open_uploads(), 0);
    // Uploaded, so its local copy is gone (no stderr file was written to be kept either way).
    let run_dir = agent
        .state_dir()
        .join(INSTANCE)
        .join("document/orchestration")
        .join(id)
        .join("awsrunShellScript/0.awsrunShellScript");
    assert!(run_dir.is_dir(), "{run_dir:?}");
    assert!(!run_dir.join("stdout").exists(), "after-upload removes it");
}

#[test]
fn a_job_over_mgs_uploads_to_the_same_keys() {
    let emu = emulator();
    emu.create_bucket("mgs-output", "us-east-1");
    let agent = agent(&emu, json!({}));
    assert!(
        emu.wait_mgs_connected(FINAL_WAIT),
        "control channel connected; log:\n{}",
        agent.log()
    );
    let id = "5e5e5e5e-0000-4000-8000-000000000004";
    let mut payload = shell_payload(id, &["echo over mgs"], 600);
    payload["OutputS3BucketName"] = json!("mgs-output");
    payload["OutputS3KeyPrefix"] = json!("jobs");
    let job = emu.send_agent_job(&payload);
    let reply = emu
        .wait_job_final(&job, FINAL_WAIT)
        .unwrap_or_else(|| panic!("no final reply for {job}: {:?}", emu.job_replies(&job)))
        .payload;
    let p = plugin(&reply);
    let prefix = format!("jobs/{id}/{INSTANCE}/awsrunShellScript");
    assert_eq!(p["outputS3KeyPrefix"], prefix.as_str(), "{reply}");
    assert_eq!(p["stepName"], "0.awsrunShellScript");
    assert_eq!(
        emu.s3_object(
            "mgs-output",
            &format!("{prefix}/0.awsrunShellScript/stdout")
        )
        .as_deref(),
        Some(&b"over mgs\n"[..])
    );
    assert_eq!(
        emu.s3_object(
            "mgs-output",
            &format!("{prefix}/0.awsrunShellScript/stderr")
        ),
        None,
        "an empty stderr is not uploaded"
    );
}
