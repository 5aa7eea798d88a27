//! `ssm-emulator demo-association`: two State Manager associations, a shell script and a
//! software inventory, run through the agent binary; prints each one's status sequence and the
//! inventory the service received. Ok(true) only when both ended `Success`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::demo::AgentRun;
use crate::s3::split_path;
use crate::{Association, Emulator, Options};

const TAG: &str = "demo-association";
const SHELL_DOCUMENT: &str = "Demo-RunShellScript";
const INVENTORY_DOCUMENT: &str = "Demo-GatherSoftwareInventory";
const SHELL_COMMANDS: [&str; 2] = ["echo \"host: $(uname -n)\"", "date -u"];
const SCHEDULE: &str = "rate(30 minutes)";
/// Where the shell association's output goes, so the demo can show what the run printed.
const OUTPUT_BUCKET: &str = "demo-association-output";
const OUTPUT_PREFIX: &str = "runs";
/// The most of an output object printed.
const MAX_SHOWN_OUTPUT: usize = 4096;
/// How long both associations get to reach a final status.
const FINAL_TIMEOUT: Duration = Duration::from_secs(60);
/// The first poll within a second instead of 30 s, and no random wait before `PutInventory`.
const AGENT_ENV: &[(&str, &str)] = &[
    ("SSM_LITE_ASSOCIATION_JITTER_SECS", "1"),
    ("SSM_LITE_INVENTORY_MAX_WAIT_SECS", "0"),
];
/// The gatherers of AWS-GatherSoftwareInventory that a Linux device has.
const GATHERERS: [&str; 4] = [
    "applications",
    "awsComponents",
    "networkConfig",
    "instanceDetailedInformation",
];
const SHOWN_APPLICATIONS: usize = 5;

/// A schema 2.2 shell document with a `commands` StringList parameter.
fn shell_document() -> String {
    json!({
        "schemaVersion": "2.2",
        "description": "Runs the commands given as the association's parameter.",
        "parameters": {"commands": {"type": "StringList", "description": "Shell commands."}},
        "mainSteps": [{"action": "aws:runShellScript", "name": "runShellScript",
                       "inputs": {"runCommand": "{{ commands }}"}}]
    })
    .to_string()
}

/// AWS-GatherSoftwareInventory's shape (schema 2.0, one `aws:softwareInventory` step whose
/// inputs are the document's parameters), cut down to [`GATHERERS`].
fn inventory_document() -> String {
    let parameters: serde_json::Map<String, Value> = GATHERERS
        .iter()
        .map(|g| {
            let p = json!({"type": "String", "default": "Enabled",
                           "description": format!("(Optional) Collect {g} data."),
                           "allowedValues": ["Enabled", "Disabled"]});
            ((*g).to_owned(), p)
        })
        .collect();
    let inputs: serde_json::Map<String, Value> = GATHERERS
        .iter()
        .map(|g| ((*g).to_owned(), json!(format!("{{{{ {g} }}}}"))))
        .collect();
    json!({
        "schemaVersion": "2.0",
        "description": "Software Inventory Policy Document.",
        "parameters": parameters,
        "mainSteps": [{"action": "aws:softwareInventory",
                       "name": "collectSoftwareInventoryItems", "inputs": inputs}]
    })
    .to_string()
}

/// The shell association (its output to S3 in `region`), then the inventory one with every
/// gatherer enabled as Quick Setup passes them.
fn associations(region: &str) -> [Association; 2] {
    let shell = Association::new(SHELL_DOCUMENT)
        .schedule(SCHEDULE)
        .detailed_status("Associated")
        .parameter("commands", &SHELL_COMMANDS)
        .output_to_s3(region, OUTPUT_BUCKET, OUTPUT_PREFIX);
    let inventory = GATHERERS.iter().fold(
        Association::new(INVENTORY_DOCUMENT)
            .schedule(SCHEDULE)
            .detailed_status("Associated"),
        |a, g| a.parameter(g, &["Enabled"]),
    );
    [shell, inventory]
}

/// Runs the demo with the agent at `agent`.
pub fn run(agent: &Path) -> Result<bool, String> {
    let region = Options::default().region;
    let associations = associations(&region);
    let shown: Vec<(String, String)> = associations
        .iter()
        .map(|a| (a.name.clone(), a.association_id.clone()))
        .collect();
    let run = AgentRun::start_with(agent, TAG, AGENT_ENV, |emu| {
        emu.create_bucket(OUTPUT_BUCKET, &region);
        emu.put_document(SHELL_DOCUMENT, "JSON", &shell_document());
        emu.put_document(INVENTORY_DOCUMENT, "JSON", &inventory_document());
        associations
            .into_iter()
            .for_each(|a| emu.add_association(a));
    })?;
    let ids: Vec<&str> = shown.iter().map(|(_, id)| id.as_str()).collect();
    let waited = await_final(&run.emu, &ids, &run.exited);
    let (text, success) = report(&run.emu, &shown);
    run.stop(TAG);
    print!("{text}");
    waited.map(|()| success)
}

/// The association's last status when it is a final one.
fn final_status(statuses: &[Value]) -> Option<&str> {
    let last = statuses.last()?["Status"].as_str()?;
    matches!(last, "Success" | "Failed" | "TimedOut").then_some(last)
}

/// Waits until every association in `ids` has a final status, watching for the agent dying.
fn await_final(
    emu: &Emulator,
    ids: &[&str],
    exited: &mpsc::Receiver<String>,
) -> Result<(), String> {
    let done = |st: &crate::State| {
        ids.iter()
            .all(|id| final_status(st.association_statuses(id)).is_some())
    };
    let deadline = Instant::now() + FINAL_TIMEOUT;
    while Instant::now() < deadline {
        if emu.wait_until(Duration::from_millis(500), done) {
            return Ok(());
        }
        if let Ok(status) = exited.try_recv() {
            return Err(format!(
                "the agent exited ({status}) before both associations had a final status"
            ));
        }
    }
    Err(format!(
        "the associations had no final status within {FINAL_TIMEOUT:?}; is the agent's \
         association scheduler running? (statuses so far above)"
    ))
}

/// What the service received: each association's statuses, then the inventory; true when
/// every association in `shown` (document name, id) ended `Success`.
fn report(emu: &Emulator, shown: &[(String, String)]) -> (String, bool) {
    let mut out = String::new();
    let mut success = true;
    for (name, id) in shown {
        let statuses = emu.association_statuses(id);
        success &= final_status(&statuses) == Some("Success");
        let _ = writeln!(out, "association {id} ({name}):");
        if statuses.is_empty() {
            out.push_str("  no status received\n");
        }
        for s in &statuses {
            write_status(&mut out, s);
        }
        write_output(&mut out, emu, id);
    }
    write_inventory(&mut out, emu);
    (out, success)
}

/// `  Status [ErrorCode] summary`, the summary's further lines indented under it.
fn write_status(out: &mut String, s: &Value) {
    let text = |k: &str| s[k].as_str().unwrap_or_default();
    let code = match text("ErrorCode") {
        "" => String::new(),
        c => format!(" [{c}]"),
    };
    let summary = text("ExecutionSummary")
        .trim_end()
        .replace('\n', "\n      ");
    let _ = writeln!(out, "  {}{code}: {summary}", text("Status"));
}

/// The stdout and stderr objects the agent uploaded for association `id`.
fn write_output(out: &mut String, emu: &Emulator, id: &str) {
    let marker = format!("/{id}/");
    for call in emu.s3_calls() {
        let (bucket, key) = split_path(&call.path);
        let uploaded = call.method == "PUT" && call.query.is_empty() && call.status == 200;
        if !uploaded || bucket != OUTPUT_BUCKET || !key.contains(&marker) {
            continue;
        }
        let Some(body) = emu.s3_object(&bucket, &key) else {
            continue;
        };
        let shown = String::from_utf8_lossy(&body[..body.len().min(MAX_SHOWN_OUTPUT)]);
        let text = shown.trim_end().replace('\n', "\n    ");
        let _ = writeln!(out, "  s3://{bucket}/{key}:\n    {text}");
    }
}

fn write_inventory(out: &mut String, emu: &Emulator) {
    let puts = emu.inventory_puts();
    let _ = writeln!(out, "inventory: {} PutInventory call(s)", puts.len());
    let mut types: Vec<&str> = Vec::new();
    for t in puts
        .iter()
        .filter_map(|p| p["Items"].as_array())
        .flatten()
        .filter_map(|i| i["TypeName"].as_str())
    {
        if !types.contains(&t) {
            types.push(t);
        }
    }
    for t in &types {
        match content(emu, t) {
            Some(entries) => {
                let _ = writeln!(out, "  {t}: {} entries", entries.len());
            }
            None => {
                let _ = writeln!(
                    out,
                    "  {t}: no content stored (every put of it was refused)"
                );
            }
        }
    }
    let apps = content(emu, "AWS:Application").unwrap_or_default();
    if !apps.is_empty() {
        let _ = writeln!(out, "first {SHOWN_APPLICATIONS} AWS:Application entries:");
    }
    for app in apps.iter().take(SHOWN_APPLICATIONS) {
        let field = |k: &str| app[k].as_str().unwrap_or("-").to_owned();
        let (name, version, arch) = (field("Name"), field("Version"), field("Architecture"));
        let _ = writeln!(out, "  {name} {version} {arch}");
    }
    let details = content(emu, "AWS:InstanceDetailedInformation").unwrap_or_default();
    if let Some(Value::Object(entry)) = details.first() {
        out.push_str("AWS:InstanceDetailedInformation:\n");
        for (k, v) in entry {
            let _ = writeln!(out, "  {k}: {}", v.as_str().unwrap_or_default());
        }
    }
}

/// The entries last stored for inventory type `type_name`.
fn content(emu: &Emulator, type_name: &str) -> Option<Vec<Value>> {
    emu.inventory_of(type_name)?["Content"].as_array().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Request;
    use crate::sigv4::sign_for_tests;
    use crate::tests::{call, role_credentials, send};
    use crate::util::{sha256_hex, uuid_v4};
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use md5::{Digest, Md5};
    use std::time::SystemTime;

    const DONE: &str = "1 out of 1 plugin processed. ";

    const INSTANCE: &str = "i-0123456789abcdef0";

    fn status(emu: &Emulator, id: &str, status: &str, code: &str, summary: &str) {
        let body = json!({"AssociationId": id, "InstanceId": INSTANCE, "ExecutionResult":
            {"Status": status, "ErrorCode": code, "ExecutionDate": 1_700_000_000.0,
             "ExecutionSummary": summary}});
        let creds = role_credentials(emu);
        let resp = call(
            emu,
            &creds,
            "AmazonSSM.UpdateInstanceAssociationStatus",
            &body,
        );
        assert_eq!(resp.status, 200);
    }

    fn put_inventory(emu: &Emulator, items: Value) {
        let creds = role_credentials(emu);
        let body = json!({"InstanceId": INSTANCE, "Items": items});
        assert_eq!(
            call(emu, &creds, "AmazonSSM.PutInventory", &body).status,
            200
        );
    }

    /// A signed S3 PUT of `body` to `bucket`/`key`, as the agent uploads command output.
    fn upload(emu: &Emulator, bucket: &str, key: &str, body: &[u8]) {
        let creds = role_credentials(emu);
        let host = emu.url().trim_start_matches("http://").to_owned();
        let mut req = Request {
            method: "PUT".into(),
            path: format!("/{bucket}/{key}"),
            query: String::new(),
            headers: vec![
                ("Host".into(), host),
                ("X-Amz-Content-Sha256".into(), sha256_hex(body)),
                ("Content-MD5".into(), STANDARD.encode(Md5::digest(body))),
            ],
            body: body.to_vec(),
        };
        let token = creds.token.as_deref();
        let now = SystemTime::now();
        sign_for_tests(
            &mut req,
            &creds.key,
            &creds.secret,
            token,
            "us-east-1",
            "s3",
            now,
        );
        assert_eq!(send(emu, &req).expect("an answer").status, 200);
    }

    fn item(type_name: &str, content: Vec<Value>) -> Value {
        json!({"TypeName": type_name, "SchemaVersion": "1.0",
               "CaptureTime": "2026-12-03T12:00:00Z", "ContentHash": "h", "Content": content})
    }

    #[test]
    fn the_report_shows_statuses_and_inventory_and_needs_two_successes() {
        let emu = Emulator::start(Default::default());
        let [shell, inventory] = associations("us-east-1");
        let shown = vec![
            (shell.name.clone(), shell.association_id.clone()),
            (inventory.name.clone(), inventory.association_id.clone()),
        ];
        let (shell_id, inventory_id) = (shown[0].1.clone(), shown[1].1.clone());
        emu.add_association(shell);
        emu.add_association(inventory);
        status(&emu, &shell_id, "InProgress", "", "Executing association");
        status(&emu, &shell_id, "Success", "", DONE);
        emu.create_bucket(OUTPUT_BUCKET, "us-east-1");
        let stdout =
            format!("{OUTPUT_PREFIX}/{INSTANCE}/{shell_id}/run/awsrunShellScript/s/stdout");
        upload(&emu, OUTPUT_BUCKET, &stdout, b"host: h\nThu Dec 3\n");
        upload(
            &emu,
            OUTPUT_BUCKET,
            "elsewhere/stdout",
            b"not the association's",
        );
        assert_eq!(
            final_status(&emu.association_statuses(&shell_id)),
            Some("Success")
        );
        let (text, success) = report(&emu, &shown);
        assert!(!success, "the inventory association has no status: {text}");
        assert!(text.contains("  no status received\n"), "{text}");
        assert!(
            text.contains("inventory: 0 PutInventory call(s)\n"),
            "{text}"
        );

        let apps = (0..7)
            .map(|i| json!({"Name": format!("pkg{i}"), "Version": "1.0", "Architecture": "x86_64"}))
            .collect();
        let cpu = json!({"CPUModel": "Demo CPU", "CPUs": "2"});
        put_inventory(
            &emu,
            json!([
                item("AWS:Application", apps),
                item("AWS:InstanceDetailedInformation", vec![cpu])
            ]),
        );
        status(&emu, &inventory_id, "Success", "", DONE);
        let (text, success) = report(&emu, &shown);
        assert!(success, "{text}");
        let expected_shell = format!(
            "association {shell_id} ({SHELL_DOCUMENT}):\n  InProgress: Executing association\n  \
             Success: 1 out of 1 plugin processed.\n  s3://{OUTPUT_BUCKET}/{stdout}:\n    \
             host: h\n    Thu Dec 3\nassociation {inventory_id}"
        );
        assert!(text.starts_with(&expected_shell), "{text}");
        let expected_inventory = "inventory: 1 PutInventory call(s)\n  AWS:Application: 7 \
             entries\n  AWS:InstanceDetailedInformation: 1 entries\nfirst 5 AWS:Application \
             entries:\n  pkg0 1.0 x86_64\n  pkg1 1.0 x86_64\n  pkg2 1.0 x86_64\n  pkg3 1.0 \
             x86_64\n  pkg4 1.0 x86_64\nAWS:InstanceDetailedInformation:\n  CPUModel: Demo \
             CPU\n  CPUs: 2\n";
        assert!(text.ends_with(expected_inventory), "{text}");

        status(
            &emu,
            &inventory_id,
            "Failed",
            "ExecutionError",
            "failed.\nnot implemented",
        );
        let (text, success) = report(&emu, &shown);
        assert!(!success, "the last status counts");
        assert!(
            text.contains("  Failed [ExecutionError]: failed.\n      not implemented\n"),
            "{text}"
        );
    }

    #[test]
    fn documents_take_the_associations_parameters() {
        let shell: Value = serde_json::from_str(&shell_document()).unwrap();
        assert_eq!(shell["parameters"]["commands"]["type"], "StringList");
        let inventory: Value = serde_json::from_str(&inventory_document()).unwrap();
        let step = &inventory["mainSteps"][0];
        assert_eq!(step["action"], "aws:softwareInventory");
        assert_eq!(step["inputs"]["networkConfig"], "{{ networkConfig }}");
        let [_, a] = associations("us-east-1");
        for g in GATHERERS {
            assert_eq!(inventory["parameters"][g]["default"], "Enabled");
            assert_eq!(a.parameters[g], ["Enabled"]);
        }
    }

    #[test]
    fn an_agent_that_exits_early_ends_the_demo_with_an_error() {
        let dir = std::env::temp_dir().join(format!("emu-demo-association-{}", uuid_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let record = dir.join("env");
        let fake = dir.join("fake-agent");
        let script = format!(
            "#!/bin/sh\necho \"$SSM_LITE_ASSOCIATION_JITTER_SECS $SSM_LITE_INVENTORY_MAX_WAIT_SECS\" \
             > {}\nexit 4\n",
            record.display()
        );
        std::fs::write(&fake, script).unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let started = Instant::now();
        let err = run(&fake).unwrap_err();
        assert!(err.contains("the agent exited (exit status: 4)"), "{err}");
        assert!(
            started.elapsed() < FINAL_TIMEOUT,
            "noticed before the timeout"
        );
        assert_eq!(std::fs::read_to_string(&record).unwrap(), "1 0\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
