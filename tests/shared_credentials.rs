//! Credentials for scripts (docs/protocol.md §5.7), end to end: a registered (hybrid) agent
//! shares its role credentials in `$HOME/.aws/credentials`, and a Run Command script that signs
//! STS `GetCallerIdentity` with them, the way the AWS CLI reads that file, is the node's role.
//! There is no AWS CLI on the machine: the script's signer is a few lines of python3.

mod common;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::{Emulator, aws_run_shell_script_payload as shell_payload};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// `aws sts get-caller-identity` in python3: the credentials come from
/// `$AWS_SHARED_CREDENTIALS_FILE` (else `~/.aws/credentials`), profile `$AWS_PROFILE` (else
/// `default`), as the CLI finds them; the request is SigV4-signed for `sts` and sent to argv[1].
/// Prints the access key used, then the answer.
const CALLER_IDENTITY: &str = r#"
import configparser, datetime, hashlib, hmac, os, sys, urllib.error, urllib.request
path = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials")
profile = configparser.RawConfigParser()
profile.read(path)
keys = profile[os.environ.get("AWS_PROFILE") or "default"]
key, secret = keys["aws_access_key_id"], keys["aws_secret_access_key"]
url = sys.argv[1]
body = "Action=GetCallerIdentity&Version=2011-06-15"
amz = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8",
           "host": url.split("://", 1)[1], "x-amz-date": amz}
if keys.get("aws_session_token"):
    headers["x-amz-security-token"] = keys["aws_session_token"]
names = sorted(headers)
canonical = "\n".join(["POST", "/", ""] + [n + ":" + headers[n] for n in names]
                      + ["", ";".join(names), hashlib.sha256(body.encode()).hexdigest()])
scope = amz[:8] + "/us-east-1/sts/aws4_request"
to_sign = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canonical.encode()).hexdigest()])
k = ("AWS4" + secret).encode()
for part in scope.split("/"):
    k = hmac.new(k, part.encode(), hashlib.sha256).digest()
signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
headers["authorization"] = ("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s"
                            % (key, scope, ";".join(names), signature))
request = urllib.request.Request(url + "/", data=body.encode(), headers=headers, method="POST")
print("key", key)
try:
    print(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request).read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
    sys.exit(1)
"#;

/// A script that runs [`CALLER_IDENTITY`] against `emu`.
fn caller_identity_script(emu: &Emulator) -> String {
    format!("python3 - {} <<'PY'\n{CALLER_IDENTITY}\nPY", emu.url())
}

/// A hybrid agent (no IMDS to fall back on) with `profile` merged into its `Profile` section,
/// HOME in its temp dir; registered, not started.
fn registered_agent(emu: &Emulator, profile: Value) -> (Agent, String) {
    let agent = onprem_agent_with(emu, json!({ "Profile": profile }));
    let (mi, _) = register_agent(&agent, emu);
    (agent, mi)
}

fn run(emu: &Emulator, agent: &Agent, command_id: &str, script: &str) -> Value {
    let message = emu.send_command(&shell_payload(command_id, &[script], 600));
    let reply = emu
        .wait_final(&message, WAIT)
        .unwrap_or_else(|| panic!("no final reply for {command_id}; log:\n{}", agent.log()));
    plugin(&reply.payload).clone()
}

/// The `aws_access_key_id` of `[profile]` in the file at `path`, if there is one.
fn shared_key(path: &Path, profile: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let section = text.split(&format!("[{profile}]\n")).nth(1)?;
    let line = section
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find(|l| l.starts_with("aws_access_key_id = "))?;
    Some(line["aws_access_key_id = ".len()..].to_owned())
}

/// Access keys of the role tokens `mi` was given, in order.
fn role_keys(emu: &Emulator, mi: &str) -> Vec<String> {
    let requests = emu.role_token_requests();
    let mine = requests.iter().filter(|r| r.instance_id == mi);
    mine.filter_map(|r| Some(r.access_key_id()?.to_owned()))
        .collect()
}

#[test]
fn a_script_calls_sts_as_the_nodes_role_with_the_shared_credentials() {
    let emu = emulator();
    let (mut agent, mi) = registered_agent(&emu, json!({ "ShareProfile": "ssm-node" }));
    let credentials = agent.dir.path().join(".aws/credentials");
    std::fs::create_dir_all(credentials.parent().unwrap()).unwrap();
    let mine = "# the admin's own keys\n[default]\naws_access_key_id = AKIAADMIN\naws_secret_access_key = x\n";
    std::fs::write(&credentials, mine).unwrap();
    agent.start_again();

    let out = run(
        &emu,
        &agent,
        "5c0e0000-0000-4000-8000-000000000001",
        &caller_identity_script(&emu),
    );
    assert_eq!(out["status"], "Success", "{out}");
    let stdout = out["standardOutput"].as_str().unwrap();
    let arn = format!("arn:aws:sts::123456789012:assumed-role/SSMServiceRole/{mi}");
    assert!(stdout.contains(&format!("<Arn>{arn}</Arn>")), "{stdout}");
    let calls = emu.caller_identity_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].arn.as_deref(), Some(arn.as_str()));
    assert!(
        role_keys(&emu, &mi).contains(&calls[0].access_key_id),
        "signed with a role token of {mi}: {:?}",
        calls[0]
    );

    // Upstream's layout: [ShareProfile] with the three keys, the admin's profile and comment
    // kept, mode 0600; scripts are pointed at it.
    let text = std::fs::read_to_string(&credentials).unwrap();
    assert!(text.starts_with(mine), "{text}");
    assert!(
        text.contains("\n[ssm-node]\naws_access_key_id = ASIA"),
        "{text}"
    );
    assert!(text.contains("\naws_secret_access_key = ") && text.contains("\naws_session_token = "));
    let mode = std::fs::metadata(&credentials)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let env = run(
        &emu,
        &agent,
        "5c0e0000-0000-4000-8000-000000000002",
        "echo \"$AWS_SHARED_CREDENTIALS_FILE $AWS_PROFILE\"",
    );
    assert_eq!(
        env["standardOutput"],
        format!("{} ssm-node\n", credentials.display())
    );
}

#[test]
fn rotated_credentials_are_written_again_and_keep_working() {
    let emu = emulator();
    // Refreshed at half their lifetime: every few seconds.
    emu.set_role_token_lifetime(Duration::from_secs(8));
    let (mut agent, mi) = registered_agent(&emu, json!({}));
    let credentials = agent.dir.path().join(".aws/credentials");
    agent.start_again();
    wait_file_exists_within(WAIT, &credentials);
    let first = shared_key(&credentials, "default").unwrap();
    let rotated = wait_for(WAIT, || {
        shared_key(&credentials, "default").filter(|k| *k != first)
    })
    .unwrap_or_else(|| panic!("the file was not rewritten; log:\n{}", agent.log()));
    let keys = role_keys(&emu, &mi);
    assert!(keys.contains(&first) && keys.contains(&rotated), "{keys:?}");

    let out = run(
        &emu,
        &agent,
        "5c0e0000-0000-4000-8000-000000000003",
        &caller_identity_script(&emu),
    );
    assert_eq!(out["status"], "Success", "{out}");
    let call = emu.caller_identity_calls().pop().unwrap();
    assert_ne!(call.access_key_id, first, "a later key signed");
    assert!(
        call.arn
            .unwrap()
            .ends_with(&format!("/SSMServiceRole/{mi}"))
    );
}

#[test]
fn without_share_creds_nothing_is_written_and_scripts_are_told_nothing() {
    let emu = emulator();
    let (mut agent, _) = registered_agent(&emu, json!({ "ShareCreds": false }));
    agent.start_again();
    let out = run(
        &emu,
        &agent,
        "5c0e0000-0000-4000-8000-000000000004",
        "echo \"${AWS_SHARED_CREDENTIALS_FILE-unset} ${AWS_PROFILE-unset}\"",
    );
    assert_eq!(out["standardOutput"], "unset unset\n");
    assert!(!agent.dir.path().join(".aws").exists());
}

/// Default Host Management (an EC2 instance without an instance profile): upstream shares the
/// role tokens in its own file and points scripts at it, without AWS_PROFILE.
#[test]
fn under_default_host_management_scripts_get_the_agents_own_file() {
    let emu = Emulator::start(ssm_emulator::Options {
        role_name: None,
        poll_hold: Duration::from_secs(2),
        ..Default::default()
    });
    let agent = Agent::start(&emu, json!({}));
    let script = format!(
        "echo \"$AWS_SHARED_CREDENTIALS_FILE ${{AWS_PROFILE-unset}}\"\n{}",
        caller_identity_script(&emu)
    );
    let out = run(
        &emu,
        &agent,
        "5c0e0000-0000-4000-8000-000000000005",
        &script,
    );
    assert_eq!(out["status"], "Success", "{out}; log:\n{}", agent.log());
    let shared = agent.state_dir().join("credentials");
    let stdout = out["standardOutput"].as_str().unwrap();
    assert!(
        stdout.starts_with(&format!("{} unset\n", shared.display())),
        "{stdout}"
    );
    let arn = "arn:aws:sts::123456789012:assumed-role/AWSSystemsManagerDefaultEC2InstanceManagementRole/i-0123456789abcdef0";
    assert!(stdout.contains(arn), "{stdout}");
    let mode = std::fs::metadata(&shared).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// Polls `probe` every 50 ms until it gives something or `limit` passes.
fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
