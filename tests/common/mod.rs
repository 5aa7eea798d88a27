//! Shared harness for the integration tests: the real `ssm-lite` binary as a child process,
//! pointed at an in-process emulator on 127.0.0.1, with its own state dir.
#![allow(dead_code)]

use serde_json::{Value, json};
use ssm_emulator::{Emulator, FILES_CA_PEM, Options};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The agent binary under test: this build's, unless `SSM_LITE_TEST_BIN` names another one (a
/// release binary of another architecture, run through `SSM_LITE_TEST_RUNNER` such as
/// `qemu-aarch64-static`: `make test` runs the Run Command tests so for every release binary).
pub fn agent_command() -> Command {
    let bin = std::env::var_os("SSM_LITE_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_ssm-lite").into());
    match std::env::var_os("SSM_LITE_TEST_RUNNER").filter(|r| !r.is_empty()) {
        Some(runner) => {
            let mut cmd = Command::new(runner);
            cmd.arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}

/// Where `make release` put its artifacts: `$SSM_LITE_DIST`, or dist/ of this checkout.
pub fn dist() -> PathBuf {
    std::env::var_os("SSM_LITE_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dist"))
}

/// The release artifact `name` in [`dist`]; panics with what to do when it is missing.
pub fn release_artifact(name: &str) -> PathBuf {
    let p = dist().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `make release` first (or point SSM_LITE_DIST at the release)",
        p.display()
    );
    p
}

/// The static release binary for `arch` (x86_64, aarch64, armhf, i686).
pub fn release_binary(arch: &str) -> PathBuf {
    release_artifact(&format!("ssm-lite-{}-{arch}", env!("CARGO_PKG_VERSION")))
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p =
            std::env::temp_dir().join(format!("ssm-lite-it-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn emulator() -> Emulator {
    Emulator::start(Options {
        poll_hold: Duration::from_secs(2),
        ..Options::default()
    })
}

/// Merges `extra` into `base`, section by section.
fn merge(base: &mut Value, extra: &Value) {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            match b.get_mut(k) {
                Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                _ => {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// The agent under test.
pub struct Agent {
    child: Option<Child>,
    pub dir: TempDir,
    config: PathBuf,
    url: String,
    env: Vec<(String, String)>,
    /// Shell commands run before the agent is exec'ed from `sh` (see [`Agent::start_from_shell`]).
    prelude: Option<String>,
    starts: usize,
}

impl Agent {
    /// Starts the agent against `emu` with `extra` merged into its amazon-ssm-agent.json.
    pub fn start(emu: &Emulator, extra: Value) -> Agent {
        Agent::start_with_env(emu, extra, &[])
    }

    pub fn start_with_env(emu: &Emulator, extra: Value, env: &[(&str, &str)]) -> Agent {
        let mut agent = Agent::prepare(emu, extra, env);
        agent.spawn();
        agent
    }

    /// Starts the agent the way an init script would: `sh -c '<prelude>; exec ssm-lite …'`, so
    /// the agent inherits what the prelude leaves (`trap '' INT` ignores SIGINT, `exec 7<file`
    /// leaves fd 7 open, `ulimit -Sn 512` lowers the soft descriptor limit).
    pub fn start_from_shell(emu: &Emulator, extra: Value, prelude: &str) -> Agent {
        let mut agent = Agent::prepare(emu, extra, &[]);
        agent.prelude = Some(prelude.to_owned());
        agent.spawn();
        agent
    }

    /// Writes the agent's config and state dir but does not start it (see `start_again`).
    pub fn prepare(emu: &Emulator, extra: Value, env: &[(&str, &str)]) -> Agent {
        let dir = TempDir::new("agent");
        let mut config = json!({
            "Mds": { "Endpoint": emu.url() },
            "Ssm": { "Endpoint": emu.url() },
            "Mgs": { "Endpoint": emu.url() },
            "Kms": { "Endpoint": emu.url() },
            "Identity": { "ConsumptionOrder": ["EC2"] }
        });
        merge(&mut config, &extra);
        let path = dir.path().join("amazon-ssm-agent.json");
        fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        Agent {
            child: None,
            dir,
            config: path,
            url: emu.url().to_owned(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            prelude: None,
            starts: 0,
        }
    }

    /// Runs `ssm-lite <args> --config <its config> --state-dir <its state dir>` to the end.
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let config = self.config.to_str().unwrap().to_owned();
        let state = self.state_dir().to_str().unwrap().to_owned();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", &config, "--state-dir", &state]);
        run_cli(&all)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Where a test's scripts may leave marks.
    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.path().join("scratch");
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("agent-{n}.log"))
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = fs::File::create(self.log_path(self.starts)).unwrap();
        let mut agent = agent_command();
        agent
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(self.state_dir());
        let mut cmd = match &self.prelude {
            None => agent,
            Some(prelude) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("{prelude}\nexec \"$@\""))
                    .arg("sh")
                    .arg(agent.get_program())
                    .args(agent.get_args());
                sh
            }
        };
        // A hybrid agent shares its credentials in $HOME/.aws/credentials: never the tester's.
        cmd.env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &self.url)
            .env("HOME", self.dir.path())
            .env("RUST_LOG", "debug,ureq=warn,rustls=warn,ureq_proto=warn")
            .env("SSM_LITE_REBOOT_COMMAND", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("starting ssm-lite"));
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    /// All log output of every start so far.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// Waits until the log (of every start so far) contains `text`.
    pub fn wait_log(&self, text: &str, limit: Duration) -> bool {
        poll_until(limit, || self.log().contains(text))
    }

    /// Waits until the log of the latest start contains `text`; that log.
    pub fn wait_latest_log(&self, text: &str, limit: Duration) -> Option<String> {
        let latest = || fs::read_to_string(self.log_path(self.starts)).unwrap_or_default();
        poll_until(limit, || latest().contains(text)).then(latest)
    }

    /// SIGKILL: the crash case.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts again after a clean stop or a crash.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "agent still running");
        self.spawn();
    }

    /// SIGTERM and wait (up to `limit`) for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("agent running");
        let pid = child.id();
        signal(pid, "TERM");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(limit) {
            Ok(status) => status.unwrap(),
            Err(_) => {
                signal(pid, "KILL");
                panic!(
                    "agent did not exit within {limit:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{}", self.log());
        }
        self.kill9();
    }
}

/// Polls `ready` every 50 ms until it holds (true) or `limit` passes (false): for what has
/// nothing to wait on, such as a log file another process writes.
fn poll_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !ready() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// True while any process of group `pgid` exists.
pub fn group_alive(pgid: &str) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Waits for a file a script writes, returning its trimmed content.
pub fn wait_file(path: &Path, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(s) = fs::read_to_string(path)
            && !s.is_empty()
        {
            return Some(s.trim().to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// How long tests wait for a file a script creates.
pub const WAIT_FOR_FILE: Duration = Duration::from_secs(30);

/// Waits until `p` exists (a script's mark); panics after `limit`.
pub fn wait_file_exists_within(limit: Duration, p: &Path) {
    let deadline = Instant::now() + limit;
    while !p.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ssm-lite run-document` with arguments; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = agent_command()
        .args(args)
        .output()
        .expect("running ssm-lite");
    let mut stderr = String::new();
    out.stderr.as_slice().read_to_string(&mut stderr).unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// A final reply for a command whose step was running when the agent was killed.
pub fn assert_interrupted(reply: &Value) {
    assert_eq!(reply["documentStatus"], "Failed", "{reply}");
    let output = plugin(reply)["output"].as_str().unwrap_or_default();
    assert!(output.contains("agent stopped"), "{reply}");
}

/// The one plugin entry of a single-plugin final reply.
pub fn plugin(reply: &Value) -> &Value {
    let rs = reply["runtimeStatus"]
        .as_object()
        .expect("runtimeStatus object");
    assert_eq!(rs.len(), 1, "one plugin expected: {reply}");
    rs.values().next().unwrap()
}

/// Waits until group `pgid` is gone. Killed orphans become zombies of PID 1, which reaps them on
/// its own schedule (seconds on some hosts), so "gone" is a condition to wait for, not a sample.
pub fn group_gone_within(pgid: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while group_alive(pgid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// An emulator whose services' clock is `offset_secs` from the real one (+3600: an hour ahead
/// of the agent, whose clock is then wrong).
pub fn skewed_emulator(offset_secs: i64) -> Emulator {
    Emulator::start(Options {
        poll_hold: Duration::from_secs(2),
        clock_offset_secs: offset_secs,
        ..Options::default()
    })
}

/// An endpoint where nothing listens: the service it stands for never answers, so that a test
/// sees only the others.
pub fn nowhere() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

/// The agent's clock was corrected once, and said so once (`way`: "behind" or "ahead of"):
/// requests were refused for their time (`refusal`: the start of the emulator's message) only
/// to `targets`, each at most once (calls signed at the same moment are each refused once, then
/// resent with the corrected time), and nothing else was refused.
pub fn assert_clock_corrected_once(
    emu: &Emulator,
    agent: &Agent,
    targets: &[&str],
    refusal: &str,
    way: &str,
) {
    let failures = emu.signature_failures();
    let shown: Vec<(&str, Option<&str>)> = failures
        .iter()
        .map(|r| (r.target.as_str(), r.signature.failure()))
        .collect();
    assert!(!shown.is_empty(), "no request was refused for its time");
    for target in targets {
        let refused = shown.iter().filter(|(t, _)| t.starts_with(target)).count();
        assert!(refused <= 1, "{target} refused {refused} times: {shown:?}");
    }
    for (target, why) in &shown {
        assert!(targets.iter().any(|t| target.starts_with(t)), "{shown:?}");
        assert!(why.is_some_and(|m| m.starts_with(refusal)), "{shown:?}");
    }
    let log = agent.log();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("clock: the system clock is"))
        .collect();
    assert_eq!(said.len(), 1, "logged once: {said:?}");
    assert!(
        said[0].contains(&format!(" s {way} the AWS service's")),
        "{said:?}"
    );
}

/// An agent whose identity is on-prem only (no IMDS to fall back on), with `extra` sections
/// added to its config; prepared, not started.
pub fn onprem_agent_with(emu: &Emulator, extra: Value) -> Agent {
    let mut config = json!({ "Identity": { "ConsumptionOrder": ["OnPrem"] } });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    Agent::prepare(emu, config, &[("AWS_EC2_METADATA_DISABLED", "true")])
}

/// Registers `agent` with a new activation of `emu`: its managed-instance id and what
/// `register` said on stderr.
pub fn register_agent(agent: &Agent, emu: &Emulator) -> (String, String) {
    let (id, code) = emu.create_activation();
    let (status, out, err) = agent.cli(&[
        "register",
        "--code",
        &code,
        "--id",
        &id,
        "--region",
        "us-east-1",
    ]);
    assert_eq!(status, 0, "register failed: {err}");
    let mi = out.trim().to_owned();
    assert!(mi.starts_with("mi-"), "{out:?}");
    (mi, err)
}

/// AWS-RunRemoteScript as the service publishes it (schema 2.2): downloadContent into the
/// working directory, then the command line run there with the directory on PATH.
pub fn remote_script_document(source_types: &[&str]) -> Value {
    json!({
        "schemaVersion": "2.2",
        "description": "Execute scripts stored in a remote location. The following remote locations are currently supported: GitHub (public and private) and Amazon S3 (S3).",
        "parameters": {
            "sourceType": {"description": "(Required) Specify the source type.", "type": "String",
                           "allowedValues": source_types},
            "sourceInfo": {"description": "(Required) Specify the information required to access the resource from the source.",
                           "type": "StringMap", "displayType": "textarea", "default": {}},
            "commandLine": {"description": "(Required) Specify the command line to be executed.", "type": "String"},
            "workingDirectory": {"type": "String", "default": "",
                                 "description": "(Optional) The path where the content will be downloaded and executed from on your instance.",
                                 "maxChars": 4096},
            "executionTimeout": {"description": "(Optional) The time in seconds for a command to complete before it is considered to have failed. Default is 3600 (1 hour). Maximum is 172800 (48 hours).",
                                 "type": "String", "default": "3600",
                                 "allowedPattern": "([1-9][0-9]{0,4})|(1[0-6][0-9]{4})|(17[0-1][0-9]{3})|(172[0-7][0-9]{2})|(172800)"}
        },
        "mainSteps": [
            {"action": "aws:downloadContent", "name": "downloadContent",
             "inputs": {"sourceType": "{{ sourceType }}", "sourceInfo": "{{ sourceInfo }}",
                        "destinationPath": "{{ workingDirectory }}"}},
            {"precondition": {"StringEquals": ["platformType", "Windows"]},
             "action": "aws:runPowerShellScript", "name": "runPowerShellScript",
             "inputs": {"runCommand": ["", "$directory = Convert-Path .", "$env:PATH += \";$directory\"",
                                       " {{ commandLine }}", "if ($?) {", "    exit $LASTEXITCODE", "} else {", "    exit 255", "}", ""],
                        "workingDirectory": "{{ workingDirectory }}", "timeoutSeconds": "{{ executionTimeout }}"}},
            {"precondition": {"StringEquals": ["platformType", "Linux"]},
             "action": "aws:runShellScript", "name": "runShellScript",
             "inputs": {"runCommand": ["", "directory=$(pwd)", "export PATH=$PATH:$directory",
                                       " {{ commandLine }} ", ""],
                        "workingDirectory": "{{ workingDirectory }}", "timeoutSeconds": "{{ executionTimeout }}"}}
        ]
    })
}

/// The final reply (within 30 s), and each step's last reported result by step name.
pub fn outcome(emu: &Emulator, msg: &str) -> (Value, BTreeMap<String, Value>) {
    let last = emu
        .wait_final(msg, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no final reply for {msg}: {:?}", emu.replies(msg)));
    let mut steps = BTreeMap::new();
    for reply in emu.replies(msg) {
        if let Some(map) = reply.payload["runtimeStatus"].as_object() {
            steps.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    (last.payload, steps)
}

/// The agent with `extra` configuration, trusting the file server's CA (in the returned
/// directory) and sent to its GitHub double.
pub fn agent_for(emu: &Emulator, extra: Value) -> (Agent, TempDir) {
    let dir = TempDir::new("download-ca");
    let ca = dir.path().join("ca.pem");
    fs::write(&ca, FILES_CA_PEM).unwrap();
    let agent = Agent::start_with_env(
        emu,
        extra,
        &[
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
            ("SSM_LITE_GITHUB_API_URL", &emu.files().url()),
        ],
    );
    (agent, dir)
}

pub fn send(emu: &Emulator, id: &str, name: &str, document: Value, parameters: Value) -> String {
    emu.send_command(&json!({
        "CommandId": id,
        "DocumentName": name,
        "Parameters": parameters,
        "DocumentContent": document,
        "OutputS3KeyPrefix": "",
        "OutputS3BucketName": "",
        "CloudWatchLogGroupName": "",
        "CloudWatchOutputEnabled": "false"
    }))
}

pub fn downloads(agent: &Agent, command_id: &str) -> std::path::PathBuf {
    agent
        .state_dir()
        .join("i-0123456789abcdef0/document/orchestration")
        .join(command_id)
        .join("downloads")
}

pub fn download_step(source_type: &str, source_info: Value, destination: &str) -> Value {
    json!({
        "schemaVersion": "2.2",
        "description": "one download",
        "mainSteps": [{"action": "aws:downloadContent", "name": "download",
                       "inputs": {"sourceType": source_type, "sourceInfo": source_info,
                                  "destinationPath": destination}}]
    })
}

/// Starts a standard-stream session with `inputs` set in its document's inputs and waits for its
/// `agent_task_complete`: the end of a session the agent must refuse. Its id and the completion.
pub fn refused_session(emu: &Emulator, inputs: Value) -> (String, ssm_emulator::TaskComplete) {
    let mut spec = ssm_emulator::SessionSpec::standard_stream();
    for (key, value) in inputs.as_object().into_iter().flatten() {
        spec.inputs[key] = value.clone();
    }
    let id = spec.session_id.clone();
    let _ = emu.start_session(spec);
    let done = emu
        .wait_task_complete(&id, Duration::from_secs(30))
        .expect("agent_task_complete");
    (id, done)
}

/// AWS-RefreshAssociation (schema 1.2) for `ids` sent over ec2messages: its final reply.
pub fn refresh_associations(emu: &Emulator, command_id: &str, ids: &[&str]) -> Value {
    let document = json!({
        "schemaVersion": "1.2",
        "description": "Refresh associations",
        "parameters": {"associationIds": {"type": "StringList", "default": [],
                                          "description": "ids"}},
        "runtimeConfig": {"aws:refreshAssociation": {"properties": [
            {"associationIds": "{{ associationIds }}"}]}}
    });
    let msg = send(
        emu,
        command_id,
        "AWS-RefreshAssociation",
        document,
        json!({ "associationIds": ids }),
    );
    outcome(emu, &msg).0
}

/// The agent binary at `binary` (of this crate's version) with its version stamp
/// (`SSMLITE-VERSION:`, src/update/mod.rs) rewritten to `version`, of the same length.
pub fn restamped(binary: &Path, version: &str) -> Vec<u8> {
    const STAMP: &str = "SSMLITE-VERSION:";
    let bytes = fs::read(binary).unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    let from = format!("{STAMP}{}\0", env!("CARGO_PKG_VERSION")).into_bytes();
    let to = format!("{STAMP}{version}\0").into_bytes();
    assert_eq!(from.len(), to.len(), "the versions have the same length");
    // The first byte's positions, then a memcmp each: quick even in a debug build.
    let at: Vec<usize> = (bytes.iter().enumerate())
        .filter(|&(i, &b)| b == from[0] && bytes[i..].starts_with(&from))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        at.len(),
        1,
        "exactly one version stamp in {}",
        binary.display()
    );
    let mut out = bytes;
    out[at[0]..at[0] + to.len()].copy_from_slice(&to);
    out
}
