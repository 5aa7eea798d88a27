//! `aws:runDocument` end to end (docs/protocol.md §3.13): the real agent fetches SSM documents
//! from the emulator's `GetDocument` (SigV4-checked), or reads local ones, and runs their steps.

mod common;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::{FaultTarget, ParameterType, targets};
use std::time::Duration;

const FINAL_WAIT: Duration = Duration::from_secs(60);

/// A 2.2 command whose steps are `steps`.
fn command(id: &str, steps: Value) -> Value {
    json!({
        "CommandId": id,
        "DocumentName": "Caller",
        "Parameters": {},
        "DocumentContent": { "schemaVersion": "2.2", "mainSteps": steps }
    })
}

fn run_document(name: &str, inputs: Value) -> Value {
    json!({ "action": "aws:runDocument", "name": name, "inputs": inputs })
}

fn final_of(emu: &ssm_emulator::Emulator, msg: &str) -> Value {
    emu.wait_final(msg, FINAL_WAIT)
        .unwrap_or_else(|| panic!("no final reply for {msg}; replies: {:?}", emu.replies(msg)))
        .payload
}

/// Step `name`'s result as its step reply carried it (a final reply of several steps has none).
fn step(emu: &ssm_emulator::Emulator, msg: &str, name: &str) -> Value {
    let replies = emu.replies(msg);
    let found = replies
        .iter()
        .rev()
        .find_map(|r| r.payload["runtimeStatus"].get(name).cloned());
    found.unwrap_or_else(|| panic!("no result for step {name}: {replies:?}"))
}

fn assert_signed(emu: &ssm_emulator::Emulator) {
    let failures = emu.signature_failures();
    assert!(failures.is_empty(), "{failures:?}");
}

const GREETER_YAML: &str = "---
schemaVersion: '2.2'
description: Greets someone.
parameters:
  Who:
    type: String
    default: nobody
    allowedValues: [world, moon, nobody]
  Times:
    type: StringList
    default: ['echo 1']
    maxItems: 3
mainSteps:
  - action: aws:runShellScript
    name: greet
    inputs:
      runCommand:
        - |
          echo \"hello {{ Who }}\"
  - action: aws:runShellScript
    name: count
    inputs:
      runCommand: '{{ Times }}'
";

const GREETER_JSON: &str = r#"{
  "schemaVersion": "2.2",
  "parameters": { "Word": { "type": "String", "minChars": "2", "maxChars": 8 } },
  "mainSteps": [{ "action": "aws:runShellScript", "name": "say",
                  "inputs": { "runCommand": ["echo json says {{ Word }}"] } }]
}"#;

#[test]
fn ssm_documents_in_yaml_and_json_run_with_their_parameters() {
    let emu = emulator();
    let _agent = Agent::start(&emu, json!({}));
    emu.put_document("Greeter", "YAML", GREETER_YAML);
    emu.put_document("GreeterJson", "JSON", GREETER_JSON);
    let steps = json!([
        run_document(
            "yaml",
            json!({"documentType": "SSMDocument", "documentPath": "Greeter",
            "documentParameters": {"Who": "moon", "Times": ["echo 1", "echo 2"]}})
        ),
        run_document(
            "json",
            json!({"documentType": "SSMDocument",
            "documentPath": "GreeterJson:$LATEST",
            "documentParameters": "Word: hi"})
        ),
    ]);
    let msg = emu.send_command(&command("aaaaaaaa-0000-4000-8000-000000000001", steps));
    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "Success", "{reply}");
    let yaml = step(&emu, &msg, "yaml");
    assert_eq!(yaml["status"], "Success");
    // Each sub-step's output follows the last with no separator, as upstream streams it.
    assert_eq!(yaml["standardOutput"], "hello moon\n1\n2\n");
    assert_eq!(step(&emu, &msg, "json")["standardOutput"], "json says hi\n");
    let asked: Vec<Value> = emu
        .get_document_calls()
        .iter()
        .map(|c| c.request.clone())
        .collect();
    assert_eq!(
        asked,
        [
            json!({"Name": "Greeter"}),
            json!({"Name": "GreeterJson", "DocumentVersion": "$LATEST"})
        ]
    );
    assert_signed(&emu);
}

/// One `GetDocument`, `InvalidDocument` not retried; upstream's texts, code 1.
#[test]
fn a_missing_ssm_document_fails_after_one_call() {
    let emu = emulator();
    let _agent = Agent::start(&emu, json!({}));
    let steps = json!([run_document(
        "missing",
        json!({"documentType": "SSMDocument", "documentPath": "NoSuchDocument"})
    )]);
    let msg = emu.send_command(&command("aaaaaaaa-0000-4000-8000-000000000002", steps));
    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "Failed", "{reply}");
    let missing = step(&emu, &msg, "missing");
    assert_eq!(
        (&missing["status"], &missing["code"]),
        (&json!("Failed"), &json!(1))
    );
    assert_eq!(
        missing["standardError"],
        "InvalidDocument: The specified document does not exist.\
         There was an error while preparing documents - File is empty!"
    );
    let calls = emu.get_document_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].error.as_ref().map(|e| e.0.as_str()),
        Some("InvalidDocument")
    );
    assert_signed(&emu);
}

/// A first step writes a YAML document into the command's `downloads` directory (two levels
/// above its script: `<command>/awsrunShellScript/<step>/_script.sh`), as aws:downloadContent
/// would; the second runs it by its relative path, a third by its absolute one.
#[test]
fn a_local_yaml_document_runs_from_downloads_or_an_absolute_path() {
    let emu = emulator();
    let agent = Agent::start(&emu, json!({}));
    let absolute = agent.scratch().join("absolute.yaml");
    let local = "schemaVersion: '2.2'\nparameters:\n  Note: {type: String, default: none}\nmainSteps:\n  - action: aws:runShellScript\n    name: local\n    inputs:\n      runCommand:\n        - echo local {{ Note }}\n";
    std::fs::write(&absolute, local).unwrap();
    let write = format!(
        "d=\"$(dirname \"$0\")/../../downloads\"; mkdir -p \"$d/docs\"; cat > \"$d/docs/doc.yaml\" <<'EOF'\n{local}EOF"
    );
    let steps = json!([
        { "action": "aws:runShellScript", "name": "fetch", "inputs": { "runCommand": [write] } },
        run_document("relative", json!({"documentType": "LocalPath", "documentPath": "docs/doc.yaml",
            "documentParameters": "{\"Note\": \"rel\"}"})),
        run_document("absolute", json!({"documentType": "LocalPath",
            "documentPath": absolute.to_str().unwrap()})),
    ]);
    let msg = emu.send_command(&command("aaaaaaaa-0000-4000-8000-000000000003", steps));
    let reply = final_of(&emu, &msg);
    assert_eq!(
        reply["documentStatus"],
        "Success",
        "{:?}",
        emu.replies(&msg)
    );
    assert_eq!(
        step(&emu, &msg, "relative")["standardOutput"],
        "local rel\n"
    );
    assert_eq!(
        step(&emu, &msg, "absolute")["standardOutput"],
        "local none\n"
    );
    assert!(emu.get_document_calls().is_empty());
}

/// Upstream's optional validators apply to a sub-document's parameters, in their words.
#[test]
fn parameters_a_sub_document_refuses_fail_the_step_with_the_validators_text() {
    let emu = emulator();
    let agent = Agent::start(&emu, json!({}));
    emu.put_document("Greeter", "YAML", GREETER_YAML);
    emu.put_document("GreeterJson", "JSON", GREETER_JSON);
    let marker = agent.scratch().join("ran");
    let steps = json!([
        run_document(
            "values",
            json!({"documentType": "SSMDocument", "documentPath": "Greeter",
            "documentParameters": {"Who": "sun", "Times": ["1", "2", "3", "4"]}})
        ),
        run_document(
            "chars",
            json!({"documentType": "SSMDocument", "documentPath": "GreeterJson",
            "documentParameters": {"Word": format!("x; touch {}", marker.display())}})
        ),
    ]);
    let msg = emu.send_command(&command("aaaaaaaa-0000-4000-8000-000000000004", steps));
    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "Failed", "{reply}");
    let values = step(&emu, &msg, "values");
    assert_eq!(
        (&values["status"], &values["code"]),
        (&json!("Failed"), &json!(1))
    );
    assert_eq!(
        values["standardError"],
        "There was an error while preparing documents - all errors during param validation errors: \
         error thrown in 'MinMaxItemParamValidator' while validating parameter /Times/: parameter value list length /3/ has exceeded the max item count\n\
         error thrown in 'AllowedValueParamValidator' while validating parameter /Who/: parameter value /sun/ is not in the allowed list [world moon nobody]"
    );
    let chars = step(&emu, &msg, "chars");
    let expected = format!(
        "There was an error while preparing documents - all errors during param validation errors: \
         error thrown in 'MinMaxCharParamValidator' while validating parameter /Word/: parameter value /x; touch {}/ is exceeding the max chars /8/",
        marker.display()
    );
    assert_eq!(chars["standardError"], expected);
    assert!(!marker.exists(), "a refused parameter reached a script");
}

/// A document that runs itself: three levels run, the fourth fails with upstream's text
/// without fetching anything.
#[test]
fn nesting_beyond_three_levels_fails() {
    let emu = emulator();
    let _agent = Agent::start(&emu, json!({}));
    let recurse = "schemaVersion: '2.2'\nmainSteps:\n  - action: aws:runShellScript\n    name: say\n    inputs: {runCommand: [echo down]}\n  - action: aws:runDocument\n    name: again\n    inputs: {documentType: SSMDocument, documentPath: Recurse}\n";
    emu.put_document("Recurse", "YAML", recurse);
    let steps = json!([run_document(
        "top",
        json!({"documentType": "SSMDocument", "documentPath": "Recurse"})
    )]);
    let msg = emu.send_command(&command("aaaaaaaa-0000-4000-8000-000000000005", steps));
    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "Failed", "{reply}");
    let top = step(&emu, &msg, "top");
    assert_eq!(top["status"], "Failed");
    assert_eq!(top["standardOutput"], "down\ndown\ndown\n");
    assert_eq!(
        top["standardError"],
        "Maximum depth for document execution exceeded. Maximum depth permitted - 3 and current depth - 4"
    );
    assert_eq!(emu.get_document_calls().len(), 3);
    assert_signed(&emu);
}

/// `{{ssm:…}}` in a sub-document are resolved with GetParameters before its steps run; a
/// parameter that held one skips the optional validators, as upstream.
#[test]
fn parameter_store_references_in_a_sub_document_are_resolved() {
    let emu = emulator();
    let _agent = Agent::start(&emu, json!({}));
    emu.put_parameter("/app/who", ParameterType::String, "world");
    let doc = "schemaVersion: '2.2'\nparameters:\n  Who: {type: String, default: '{{ssm:/app/who}}', maxChars: 1}\nmainSteps:\n  - action: aws:runShellScript\n    name: greet\n    inputs:\n      runCommand:\n        - echo {{ Who }} {{ssm:/app/who}}\n";
    emu.put_document("Store", "YAML", doc);
    // The command's own inputs are resolved before it starts: the unknown name must be in the
    // sub-document to reach aws:runDocument.
    emu.put_document(
        "StoreBad",
        "YAML",
        &doc.replace(
            "default: '{{ssm:/app/who}}'",
            "default: '{{ssm:/app/none}}'",
        ),
    );
    let steps = json!([
        run_document(
            "store",
            json!({"documentType": "SSMDocument", "documentPath": "Store"})
        ),
        run_document(
            "unknown",
            json!({"documentType": "SSMDocument", "documentPath": "StoreBad"})
        ),
    ]);
    let msg = emu.send_command(&command("aaaaaaaa-0000-4000-8000-000000000006", steps));
    let reply = final_of(&emu, &msg);
    assert_eq!(reply["documentStatus"], "Failed", "{reply}");
    let store = step(&emu, &msg, "store");
    assert_eq!(store["status"], "Success", "{store}");
    assert_eq!(store["standardOutput"], "world world\n");
    let unknown = step(&emu, &msg, "unknown");
    assert_eq!(
        unknown["standardError"],
        "There was an error while preparing documents - Input contains invalid parameters [/app/none]"
    );
    assert!(
        emu.get_parameters_calls()
            .iter()
            .all(|c| !c.with_decryption())
    );
    assert_signed(&emu);
}

/// Throttling is retried (the SDK's 3 retries); a refusal is not, and its code and message are
/// the step's error.
#[test]
fn a_throttled_get_document_is_retried_and_a_refused_one_reported() {
    let emu = emulator();
    let _agent = Agent::start_with_env(
        &emu,
        json!({}),
        &[("SSM_LITE_ASSOCIATION_JITTER_SECS", "1")],
    );
    emu.put_document("Greeter", "YAML", GREETER_YAML);
    // After the start's health ping and the two association polls (both due within 2 s here,
    // then not for 10 minutes) the only ssm calls are the documents'.
    assert!(emu.wait_until(FINAL_WAIT, |s| !s.health_pings().is_empty()
        && s.list_associations_calls().len() >= 2));
    emu.set_fault_target(FaultTarget::Ssm);
    emu.fail_next(2, 400, "ThrottlingException");
    let greet = json!([run_document(
        "greet",
        json!({"documentType": "SSMDocument", "documentPath": "Greeter"})
    )]);
    let msg = emu.send_command(&command(
        "aaaaaaaa-0000-4000-8000-000000000007",
        greet.clone(),
    ));
    assert_eq!(final_of(&emu, &msg)["documentStatus"], "Success");
    assert_eq!(emu.count(targets::GET_DOCUMENT), 3);
    emu.fail_next(1, 400, "AccessDeniedException");
    let msg = emu.send_command(&command("aaaaaaaa-0000-4000-8000-000000000008", greet));
    assert_eq!(final_of(&emu, &msg)["documentStatus"], "Failed");
    assert_eq!(
        step(&emu, &msg, "greet")["standardError"],
        "AccessDeniedException: injected by the emulator\
         There was an error while preparing documents - File is empty!"
    );
    assert_eq!(emu.count(targets::GET_DOCUMENT), 4);
}
