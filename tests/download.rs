//! aws:downloadContent end to end: the real agent against the emulator's HTTPS file server and
//! GitHub double, trusted through `SSL_CERT_FILE`, with a private repository's token read from
//! Parameter Store as a SecureString.

mod common;

use common::*;
use serde_json::json;
use ssm_emulator::ParameterType;
use std::fs;

const SCRIPT: &[u8] =
    b"#!/bin/sh\necho \"hello from $(basename \"$0\") in $(basename \"$(pwd)\")\"\n";

#[test]
fn a_script_downloaded_over_https_runs_in_the_next_step() {
    let emu = emulator();
    let (agent, _ca) = agent_for(&emu, json!({}));
    emu.put_file("/scripts/hello.sh", SCRIPT);
    let id = "d0000000-0000-4000-8000-000000000001";
    let document = json!({
        "schemaVersion": "2.2",
        "description": "fetch, then run",
        "mainSteps": [
            {"action": "aws:downloadContent", "name": "fetch",
             "inputs": {"sourceType": "HTTP",
                        "sourceInfo": format!("{{\"url\": \"{}/scripts/hello.sh\"}}", emu.files().url()),
                        "destinationPath": "tools/hello.sh"}},
            {"action": "aws:runShellScript", "name": "run",
             "inputs": {"runCommand": ["./hello.sh"], "workingDirectory": "tools"}}
        ]
    });
    let msg = send(&emu, id, "FetchAndRun", document, json!({}));
    let (last, steps) = outcome(&emu, &msg);
    assert_eq!(last["documentStatus"], "Success", "{last} {steps:?}");
    let target = downloads(&agent, id).join("tools/hello.sh");
    assert_eq!(
        steps["fetch"]["standardOutput"],
        format!("Content downloaded to {}", target.display())
    );
    assert_eq!(
        steps["run"]["standardOutput"],
        "hello from hello.sh in tools\n"
    );
    assert_eq!(fs::read(&target).unwrap(), SCRIPT);
    let requests = emu.files().requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].target, "/scripts/hello.sh");
}

#[test]
fn missing_files_and_plain_http_fail_with_upstreams_texts() {
    let emu = emulator();
    let (_agent, _ca) = agent_for(&emu, json!({}));
    let cases = [
        (
            "d0000000-0000-4000-8000-000000000002",
            json!({"url": format!("{}/nothing-here.sh", emu.files().url())}),
            "Failed to download file: Status: 404 Not Found",
        ),
        (
            "d0000000-0000-4000-8000-000000000003",
            // Refused before any connection: nothing listens on port 9.
            json!({"url": "http://127.0.0.1:9/script.sh"}),
            "Non secure URL provided and insecure download is not allowed. Provide a secure URL or \
             set 'allowInsecureDownload' to true to perform the download operation",
        ),
    ];
    for (id, info, text) in cases {
        let msg = send(
            &emu,
            id,
            "Fetch",
            download_step("HTTP", info, "x.sh"),
            json!({}),
        );
        let (last, steps) = outcome(&emu, &msg);
        assert_eq!(last["documentStatus"], "Failed", "{last}");
        let step = &steps["download"];
        assert_eq!(step["status"], "Failed", "{step}");
        assert_eq!(step["code"], 1, "{step}");
        assert_eq!(step["standardError"], text, "{step}");
        assert_eq!(step["standardOutput"], "", "{step}");
    }
    assert_eq!(
        emu.files().requests().len(),
        1,
        "only the 404 reached the server"
    );
}

#[test]
fn aws_run_remote_script_runs_a_public_github_file() {
    let emu = emulator();
    let (agent, _ca) = agent_for(&emu, json!({}));
    emu.files()
        .put_github_file("acme", "tools", "master", "scripts/hello.sh", SCRIPT);
    let id = "d0000000-0000-4000-8000-000000000004";
    let parameters = json!({
        "sourceType": "GitHub",
        "sourceInfo": {"owner": "acme", "repository": "tools", "path": "scripts/hello.sh"},
        "commandLine": "hello.sh",
        "workingDirectory": "",
        "executionTimeout": "3600"
    });
    let document = remote_script_document(&["GitHub", "S3"]);
    let msg = send(&emu, id, "AWS-RunRemoteScript", document, parameters);
    let (last, steps) = outcome(&emu, &msg);
    assert_eq!(last["documentStatus"], "Success", "{last} {steps:?}");
    assert_eq!(steps["runPowerShellScript"]["status"], "Skipped");
    // Downloaded into the downloads directory itself, and run from there by name (PATH).
    assert_eq!(
        steps["runShellScript"]["standardOutput"],
        "hello from hello.sh in downloads\n"
    );
    assert_eq!(
        fs::read(downloads(&agent, id).join("hello.sh")).unwrap(),
        SCRIPT
    );
    let requests = emu.files().requests();
    assert_eq!(
        requests[0].target,
        "/repos/acme/tools/contents/scripts/hello.sh?ref=master"
    );
    assert_eq!(requests[0].authorization, None);
}

#[test]
fn a_private_repository_is_read_with_a_secure_string_token() {
    let emu = emulator();
    let (agent, _ca) = agent_for(&emu, json!({}));
    emu.put_parameter("/github/token", ParameterType::SecureString, "ghp_emulated");
    let files = emu.files();
    files.put_github_file("acme", "secret", "release", "deploy/run.sh", SCRIPT);
    files.put_github_file("acme", "secret", "release", "deploy/lib/util.sh", b"util\n");
    files.make_private("acme", "secret", "ghp_emulated");
    let info = |token: &str| {
        json!({"owner": "acme", "repository": "secret", "path": "deploy",
               "getOptions": "branch:release", "tokenInfo": token})
    };
    let id = "d0000000-0000-4000-8000-000000000005";
    let msg = send(
        &emu,
        id,
        "Fetch",
        download_step("GitHub", info("{{ ssm-secure:/github/token }}"), "deploy"),
        json!({}),
    );
    let (last, steps) = outcome(&emu, &msg);
    assert_eq!(last["documentStatus"], "Success", "{last} {steps:?}");
    let calls = emu.get_parameters_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].names(), ["/github/token"]);
    assert!(calls[0].with_decryption());
    let requests = files.requests();
    assert_eq!(
        requests.len(),
        4,
        "listing, file, sub-listing, file: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer ghp_emulated") && r.status == 200),
        "{requests:?}"
    );
    let tree = downloads(&agent, id).join("deploy");
    assert_eq!(fs::read(tree.join("run.sh")).unwrap(), SCRIPT, "{steps:?}");
    assert_eq!(fs::read(tree.join("lib/util.sh")).unwrap(), b"util\n");

    // Without the token the repository does not exist, as GitHub answers.
    let id = "d0000000-0000-4000-8000-000000000006";
    let mut no_token = info("");
    no_token.as_object_mut().unwrap().remove("tokenInfo");
    let msg = send(
        &emu,
        id,
        "Fetch",
        download_step("GitHub", no_token, ""),
        json!({}),
    );
    let (last, steps) = outcome(&emu, &msg);
    assert_eq!(last["documentStatus"], "Failed", "{last}");
    assert_eq!(
        steps["download"]["standardError"],
        format!(
            "GET {}/repos/acme/secret/contents/deploy?ref=release: 404 Not Found []",
            files.url()
        )
    );
}
