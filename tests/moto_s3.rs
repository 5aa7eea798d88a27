//! Output to S3 (docs/protocol.md §3.10) judged by moto's server (tests/moto/server.rs), an S3 this
//! project did not write: the agent uploads a 5 MB stdout and a stderr with `S3.Endpoint` set to
//! moto's URL, and boto3 reads back what moto stored. ec2messages, IMDS and the rest are the
//! emulator's, which sends the command and collects the reply.

mod common;
#[path = "moto/server.rs"]
mod moto;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::aws_run_shell_script_payload as shell_payload;
use std::fs;
use std::time::Duration;

const INSTANCE: &str = "i-0123456789abcdef0";

#[test]
fn five_megabytes_of_output_reach_moto_at_upstreams_keys() {
    let Some(venv) = moto::installed() else {
        return;
    };
    let scratch = TempDir::new("moto-s3");
    let moto = moto::Moto::start(&venv, scratch.path().join("moto.log"));
    // Not the agent's region: the agent finds it with HEAD / on the bucket.
    let created: Value = serde_json::from_str(&moto.python(
        &venv,
        "read_s3.py",
        &[moto.url(), "create", "ssm-output", "eu-west-1"],
        "",
    ))
    .unwrap();
    assert_eq!(created["region"], "eu-west-1");

    let emu = emulator();
    let _agent = Agent::start(
        &emu,
        json!({
            "S3": { "Endpoint": moto.url() }
        }),
    );
    let id = "5e5e5e5e-0000-4000-8000-0000000000a1";
    let mut payload = shell_payload(id, &["seq 1 800000", "echo to-stderr >&2"], 600);
    payload["OutputS3BucketName"] = json!("ssm-output");
    payload["OutputS3KeyPrefix"] = json!("fleet");
    let msg = emu.send_command(&payload);
    let reply = emu
        .wait_final(&msg, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no final reply: {:?}", emu.replies(&msg)))
        .payload;
    let p = plugin(&reply);
    assert_eq!(p["status"], "Success", "{reply}");
    let prefix = format!("fleet/{id}/{INSTANCE}/awsrunShellScript");
    assert_eq!(p["outputS3KeyPrefix"], prefix.as_str());
    assert_eq!(p["outputS3BucketName"], "ssm-output");
    assert_eq!(p["stepName"], "0.awsrunShellScript");
    assert!(
        !p["standardError"].as_str().unwrap().contains("Failed"),
        "{p}"
    );

    let out_dir = scratch.path().join("objects");
    fs::create_dir_all(&out_dir).unwrap();
    let held: Value = serde_json::from_str(&moto.python(
        &venv,
        "read_s3.py",
        &[moto.url(), "read", "ssm-output", out_dir.to_str().unwrap()],
        "",
    ))
    .unwrap();
    let objects = held.as_array().unwrap();
    let keys: Vec<&str> = objects.iter().map(|o| o["key"].as_str().unwrap()).collect();
    let key = |name: &str| format!("{prefix}/0.awsrunShellScript/{name}");
    assert_eq!(keys, [key("stderr"), key("stdout")]);
    let body = |i: usize| fs::read(objects[i]["file"].as_str().unwrap()).unwrap();
    let stdout: Vec<u8> = (1..=800_000u32)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    assert!(body(1) == stdout, "stdout differs: {} bytes", body(1).len());
    assert_eq!(body(0), b"to-stderr\n");
    for object in objects {
        assert_eq!(object["content_type"], "text/plain", "{object}");
        assert!(
            object["acl_grants"]
                .as_array()
                .unwrap()
                .contains(&json!("FULL_CONTROL")),
            "{object}"
        );
    }
}
