//! AWS-RunRemoteScript-shaped commands end to end (issue 11, "Done when"): the real agent
//! against the emulator's HTTPS file server, S3 (one object and a "folder", listed with
//! ListObjectsV2) and GetDocument; aws:downloadContent then aws:runShellScript or
//! aws:runDocument (`LocalPath`) of what it fetched.

mod common;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::Emulator;
use std::fs;

const SCRIPT: &[u8] =
    b"#!/bin/sh\necho \"hello from $(basename \"$0\") in $(basename \"$(pwd)\")\"\n";
/// A command document whose one step prints its `Name` parameter.
const GREET_YAML: &str = "schemaVersion: '2.2'\ndescription: greet\nparameters:\n  Name:\n    type: String\n    default: nobody\nmainSteps:\n  - action: aws:runShellScript\n    name: greet\n    inputs:\n      runCommand:\n        - echo \"hello {{ Name }}\"\n";
/// The bucket's region differs from the agent's: found from the first signed HEAD.
const BUCKET: &str = "remote-scripts";
const BUCKET_REGION: &str = "eu-west-1";

/// The agent sent to the emulator's S3, trusting its file server.
fn agent(emu: &Emulator) -> (Agent, TempDir) {
    emu.create_bucket(BUCKET, BUCKET_REGION);
    agent_for(emu, json!({ "S3": { "Endpoint": emu.url() } }))
}

/// An S3 URL in the public form upstream parses; the agent's `S3.Endpoint` takes it to the
/// emulator.
fn s3_url(key: &str) -> String {
    format!("https://s3.amazonaws.com/{BUCKET}/{key}")
}

/// AWS-RunRemoteScript's parameters for `source_info` and `command_line`, run in the
/// downloads directory.
fn remote_script(source_type: &str, source_info: Value, command_line: &str) -> Value {
    remote_script_in(source_type, source_info, command_line, "")
}

fn remote_script_in(source_type: &str, source_info: Value, command_line: &str, dir: &str) -> Value {
    json!({
        "sourceType": source_type,
        "sourceInfo": source_info,
        "commandLine": command_line,
        "workingDirectory": dir,
        "executionTimeout": "3600"
    })
}

/// Sends AWS-RunRemoteScript (HTTP, S3 and GitHub allowed) with `parameters`; the outcome.
fn run_remote_script(
    emu: &Emulator,
    id: &str,
    parameters: Value,
) -> (Value, std::collections::BTreeMap<String, Value>) {
    let document = remote_script_document(&["GitHub", "S3", "HTTP"]);
    let msg = send(emu, id, "AWS-RunRemoteScript", document, parameters);
    outcome(emu, &msg)
}

/// downloadContent of `source_type`/`source_info` into `destination`, then aws:runDocument
/// of the local file `path` with `parameters`.
fn fetch_and_run_document(
    source_type: &str,
    source_info: Value,
    destination: &str,
    path: &str,
    parameters: Value,
) -> Value {
    json!({
        "schemaVersion": "2.2",
        "description": "fetch a document, then run it",
        "mainSteps": [
            {"action": "aws:downloadContent", "name": "fetch",
             "inputs": {"sourceType": source_type, "sourceInfo": source_info,
                        "destinationPath": destination}},
            {"action": "aws:runDocument", "name": "run",
             "inputs": {"documentType": "LocalPath", "documentPath": path,
                        "documentParameters": parameters}}
        ]
    })
}

/// Into a directory an HTTP download is named `download<random>`, as upstream's
/// `adjustDownloadPath` names it (AWS-RunRemoteScript itself offers only GitHub and S3).
#[test]
fn a_script_from_the_https_server_runs() {
    let emu = emulator();
    let (agent, _ca) = agent(&emu);
    emu.put_file("/scripts/hello.sh", SCRIPT);
    let id = "7e000000-0000-4000-8000-000000000001";
    let info = json!({"url": format!("{}/scripts/hello.sh", emu.files().url())});
    let parameters = remote_script_in("HTTP", info, "sh ./download*", "tools/");
    let (last, steps) = run_remote_script(&emu, id, parameters);
    assert_eq!(last["documentStatus"], "Success", "{last} {steps:?}");
    assert_eq!(steps["runPowerShellScript"]["status"], "Skipped");
    let out = steps["runShellScript"]["standardOutput"].as_str().unwrap();
    let name = out
        .strip_prefix("hello from ")
        .and_then(|rest| rest.strip_suffix(" in tools\n"))
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(name.starts_with("download"), "{name}");
    let tools = downloads(&agent, id).join("tools");
    assert_eq!(fs::read(tools.join(name)).unwrap(), SCRIPT);
    // Upstream names the destination as given, not the file.
    assert_eq!(
        steps["downloadContent"]["standardOutput"],
        format!("Content downloaded to {}/", tools.display())
    );
}

#[test]
fn an_s3_object_and_an_s3_folder_are_downloaded_and_run() {
    let emu = emulator();
    let (agent, _ca) = agent(&emu);
    emu.put_s3_object(BUCKET, "tools/hello.sh", SCRIPT);
    emu.put_s3_object(BUCKET, "tools/lib/util.sh", b"echo util\n");
    // `&` is escaped in the listing's XML; the agent must decode it to fetch the key.
    emu.put_s3_object(BUCKET, "tools/a & b.txt", b"ampersand\n");
    emu.put_s3_object(BUCKET, "toolshed/not-in-the-folder.sh", b"exit 1\n");

    let id = "7e000000-0000-4000-8000-000000000002";
    let info = json!({"path": s3_url("tools/hello.sh")});
    let (last, steps) = run_remote_script(&emu, id, remote_script("S3", info, "hello.sh"));
    assert_eq!(last["documentStatus"], "Success", "{last} {steps:?}");
    assert_eq!(
        steps["runShellScript"]["standardOutput"],
        "hello from hello.sh in downloads\n"
    );
    assert_eq!(
        fs::read(downloads(&agent, id).join("hello.sh")).unwrap(),
        SCRIPT
    );

    let id = "7e000000-0000-4000-8000-000000000003";
    let info = json!({"path": s3_url("tools/")});
    let command = "hello.sh && sh lib/util.sh && cat 'a & b.txt'";
    let (last, steps) = run_remote_script(&emu, id, remote_script("S3", info, command));
    assert_eq!(last["documentStatus"], "Success", "{last} {steps:?}");
    assert_eq!(
        steps["runShellScript"]["standardOutput"],
        "hello from hello.sh in downloads\nutil\nampersand\n"
    );
    let tree = downloads(&agent, id);
    assert_eq!(fs::read(tree.join("lib/util.sh")).unwrap(), b"echo util\n");
    assert!(!tree.join("not-in-the-folder.sh").exists());
    assert!(!tree.join("shed").exists(), "toolshed/ is not under tools/");

    // Every S3 call signed for the bucket's own region once it was known; one listing of the
    // folder, and one of `tools/hello.sh/` (nothing: the key is one object).
    let calls = emu.s3_calls();
    let lists: Vec<&str> = calls
        .iter()
        .filter(|c| c.query.contains("list-type=2"))
        .map(|c| c.query.as_str())
        .collect();
    assert_eq!(
        lists,
        [
            "list-type=2&max-keys=1000&prefix=tools%2Fhello.sh%2F",
            "list-type=2&max-keys=1000&prefix=tools%2F"
        ],
        "{calls:?}"
    );
    let gets: Vec<&str> = calls
        .iter()
        .filter(|c| c.method == "GET" && c.query.is_empty())
        .map(|c| c.path.as_str())
        .collect();
    assert_eq!(gets.len(), 4, "{gets:?}");
    assert!(
        gets.contains(&"/remote-scripts/tools/a%20%26%20b.txt"),
        "{gets:?}"
    );
}

/// A folder of more objects than one download takes (1000) is refused after the listing's
/// second page, before anything is fetched.
#[test]
fn a_folder_beyond_the_object_limit_fails_after_two_listing_pages() {
    let emu = emulator();
    let (_agent, _ca) = agent(&emu);
    for i in 0..1001 {
        emu.put_s3_object(BUCKET, &format!("many/{i:04}.txt"), b"x");
    }
    let id = "7e000000-0000-4000-8000-000000000004";
    let info = json!({"path": s3_url("many/")});
    let (last, steps) = run_remote_script(&emu, id, remote_script("S3", info, "true"));
    assert_eq!(last["documentStatus"], "Failed", "{last}");
    let step = &steps["downloadContent"];
    assert_eq!(
        (&step["status"], &step["code"]),
        (&json!("Failed"), &json!(1))
    );
    assert_eq!(
        step["standardError"],
        format!(
            "cannot list s3://{BUCKET}/many/: s3://{BUCKET}/many/ holds more than the 1000 \
             objects allowed; name a narrower folder"
        )
    );
    let calls = emu.s3_calls();
    let lists: Vec<&str> = calls
        .iter()
        .filter(|c| c.query.contains("list-type=2"))
        .map(|c| c.query.as_str())
        .collect();
    assert_eq!(lists.len(), 2, "{lists:?}");
    assert!(
        lists[1].starts_with("list-type=2&max-keys=1&prefix=many%2F&continuation-token="),
        "{lists:?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.method == "GET" && c.query.is_empty()),
        "nothing fetched"
    );
}

#[test]
fn a_yaml_document_from_https_or_s3_runs_with_its_parameters() {
    let emu = emulator();
    let (agent, _ca) = agent(&emu);
    emu.put_file("/docs/greet.yaml", GREET_YAML.as_bytes());
    emu.put_s3_object(BUCKET, "docs/greet.yaml", GREET_YAML.as_bytes());
    let https = json!({"url": format!("{}/docs/greet.yaml", emu.files().url())});
    let s3 = json!({"path": s3_url("docs/greet.yaml")});
    let cases = [
        (
            "7e000000-0000-4000-8000-000000000005",
            "HTTP",
            https,
            json!({"Name": "web"}),
            "web",
        ),
        // AWS-RunDocument passes its StringMap as a JSON text.
        (
            "7e000000-0000-4000-8000-000000000006",
            "S3",
            s3,
            json!("{\"Name\": \"s3\"}"),
            "s3",
        ),
    ];
    for (id, source, info, parameters, name) in cases {
        let document = fetch_and_run_document(
            source,
            info,
            "docs/greet.yaml",
            "docs/greet.yaml",
            parameters,
        );
        let msg = send(&emu, id, "FetchDocument", document, json!({}));
        let (last, steps) = outcome(&emu, &msg);
        assert_eq!(
            last["documentStatus"], "Success",
            "{source}: {last} {steps:?}"
        );
        assert_eq!(
            steps["run"]["standardOutput"],
            format!("hello {name}\n"),
            "{steps:?}"
        );
        assert_eq!(
            fs::read_to_string(downloads(&agent, id).join("docs/greet.yaml")).unwrap(),
            GREET_YAML
        );
    }
    assert!(emu.get_document_calls().is_empty());
}

#[test]
fn an_ssm_document_downloaded_runs_from_its_local_copy() {
    let emu = emulator();
    let (agent, _ca) = agent(&emu);
    emu.put_document("Acme-Greet", "YAML", GREET_YAML);
    let id = "7e000000-0000-4000-8000-000000000007";
    // Into a directory: upstream names the file `<name>.json` whatever the format.
    let document = fetch_and_run_document(
        "SSMDocument",
        json!({"name": "Acme-Greet"}),
        "docs/",
        "docs/Acme-Greet.json",
        json!({"Name": "ssm"}),
    );
    let msg = send(&emu, id, "FetchDocument", document, json!({}));
    let (last, steps) = outcome(&emu, &msg);
    assert_eq!(last["documentStatus"], "Success", "{last} {steps:?}");
    assert_eq!(steps["run"]["standardOutput"], "hello ssm\n");
    assert_eq!(
        fs::read_to_string(downloads(&agent, id).join("docs/Acme-Greet.json")).unwrap(),
        GREET_YAML
    );
    let calls = emu.get_document_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
}

/// A 404 from the file server and a document the service does not know: the download fails
/// with upstream's text, code 1, and so does the command.
#[test]
fn a_missing_file_or_ssm_document_fails_the_command() {
    let emu = emulator();
    let (_agent, _ca) = agent(&emu);
    let id = "7e000000-0000-4000-8000-000000000008";
    let info = json!({"url": format!("{}/scripts/absent.sh", emu.files().url())});
    let (last, steps) = run_remote_script(&emu, id, remote_script("HTTP", info, "absent.sh"));
    assert_eq!(last["documentStatus"], "Failed", "{last}");
    let step = &steps["downloadContent"];
    assert_eq!(
        (&step["status"], &step["code"]),
        (&json!("Failed"), &json!(1))
    );
    assert_eq!(
        step["standardError"],
        "Failed to download file: Status: 404 Not Found"
    );

    let id = "7e000000-0000-4000-8000-000000000009";
    let document = fetch_and_run_document(
        "SSMDocument",
        json!({"name": "No-Such-Document"}),
        "docs/",
        "docs/No-Such-Document.json",
        json!({}),
    );
    let msg = send(&emu, id, "FetchDocument", document, json!({}));
    let (last, steps) = outcome(&emu, &msg);
    assert_eq!(last["documentStatus"], "Failed", "{last}");
    let step = &steps["fetch"];
    assert_eq!(
        (&step["status"], &step["code"]),
        (&json!("Failed"), &json!(1))
    );
    assert_eq!(
        step["standardError"],
        "InvalidDocument: The specified document does not exist."
    );
    let calls = emu.get_document_calls();
    assert_eq!(calls.len(), 1, "not retried: {calls:?}");
}
