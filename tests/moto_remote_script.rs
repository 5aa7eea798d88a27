//! aws:downloadContent of an S3 folder (docs/protocol.md §3.12) judged by moto's server
//! (tests/moto/server.rs), an S3 this project did not write: its ListObjectsV2 answer, its XML
//! escaping of keys and its GetObject, for an AWS-RunRemoteScript-shaped command whose script
//! uses the files fetched. The rest of the AWS side is the emulator's.

mod common;
#[path = "moto/server.rs"]
mod moto;

use common::*;
use serde_json::json;
use std::fs;

#[test]
fn an_s3_folder_in_moto_is_downloaded_and_run() {
    let Some(venv) = moto::installed() else {
        return;
    };
    let scratch = TempDir::new("moto-remote");
    let moto = moto::Moto::start(&venv, scratch.path().join("moto.log"));
    let objects = json!({
        "tools/hello.sh": "#!/bin/sh\necho hello from $(basename \"$0\")\n",
        "tools/lib/util.sh": "echo util\n",
        "tools/a & b.txt": "ampersand\n",
        "toolshed/outside.sh": "exit 1\n",
    });
    let listed = moto.python(
        &venv,
        "put_s3.py",
        &[moto.url(), "remote-folder", "eu-west-1"],
        &objects.to_string(),
    );
    assert!(listed.contains("tools/a & b.txt"), "{listed}");

    let emu = emulator();
    let agent = Agent::start(&emu, json!({ "S3": { "Endpoint": moto.url() } }));
    let id = "7e000000-0000-4000-8000-0000000000a1";
    let parameters = json!({
        "sourceType": "S3",
        "sourceInfo": {"path": "https://s3.amazonaws.com/remote-folder/tools"},
        "commandLine": "hello.sh && sh lib/util.sh && cat 'a & b.txt'",
        "workingDirectory": "",
        "executionTimeout": "3600"
    });
    let document = remote_script_document(&["GitHub", "S3"]);
    let msg = send(&emu, id, "AWS-RunRemoteScript", document, parameters);
    let (last, steps) = outcome(&emu, &msg);
    assert_eq!(
        last["documentStatus"],
        "Success",
        "{last} {steps:?}\n{}",
        moto.log()
    );
    assert_eq!(
        steps["runShellScript"]["standardOutput"],
        "hello from hello.sh\nutil\nampersand\n"
    );
    let tree = downloads(&agent, id);
    assert_eq!(fs::read(tree.join("lib/util.sh")).unwrap(), b"echo util\n");
    assert!(!tree.join("outside.sh").exists() && !tree.join("shed").exists());
}
