//! `ssm-emulator demo`: runs one real command through the agent binary end to end.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{random_string, uuid_v4};
use crate::{Emulator, Options, Reply, aws_run_shell_script_payload};

pub const DEFAULT_COMMAND: &str = "uname -a; id; echo hello from ssm-lite";
const FINAL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the agent gets to exit after SIGTERM before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(30);
const COMMAND_TIMEOUT_SECONDS: u64 = 600;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let name = format!(
            "ssm-emulator-demo-{}-{}",
            std::process::id(),
            random_string(8, b"abcdefgh")
        );
        let path = std::env::temp_dir().join(name);
        fs::create_dir_all(path.join("state"))
            .map_err(|e| format!("creating demo directory {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Agent configuration pointing every endpoint at the emulator, so nothing leaves 127.0.0.1.
fn write_config(dir: &Path, emu: &Emulator, region: &str) -> Result<PathBuf, String> {
    let url = emu.url();
    let config = serde_json::json!({
        "Agent": {"Region": region},
        "Mds": {"Endpoint": url},
        "Ssm": {"Endpoint": url},
        // A scheme-less MGS endpoint means https/wss to an agent; the emulator speaks plain http/ws.
        "Mgs": {"Endpoint": url, "Region": region},
        "Kms": {"Endpoint": url},
        "S3": {"Endpoint": url},
        "Identity": {"ConsumptionOrder": ["EC2"]},
    });
    let path = dir.join("amazon-ssm-agent.json");
    let text = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
    fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

fn spawn_agent(
    agent: &Path,
    config: &Path,
    state: &Path,
    emu: &Emulator,
    env: &[(&str, &str)],
) -> Result<Child, String> {
    let mut cmd = Command::new(agent);
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(state);
    cmd.env("AWS_EC2_METADATA_SERVICE_ENDPOINT", emu.url());
    cmd.envs(env.iter().copied());
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    cmd.spawn()
        .map_err(|e| format!("starting agent {}: {e}", agent.display()))
}

/// Waits for the final reply while watching for the agent dying early.
fn await_final(emu: &Emulator, id: &str, exited: &mpsc::Receiver<String>) -> Result<Reply, String> {
    let deadline = Instant::now() + FINAL_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(reply) = emu.wait_final(id, Duration::from_millis(500)) {
            return Ok(reply);
        }
        if let Ok(status) = exited.try_recv() {
            return Err(format!(
                "the agent exited ({status}) before a final reply for {id}"
            ));
        }
    }
    let seen: Vec<String> = emu
        .replies(id)
        .iter()
        .map(|r| r.document_status().to_string())
        .collect();
    Err(format!(
        "no final reply for {id} within {FINAL_TIMEOUT:?}; replies so far: {seen:?}"
    ))
}

/// SIGTERM, then SIGKILL if the agent outlives the grace period.
fn stop_agent(pid: u32, exited: &mpsc::Receiver<String>) {
    if matches!(
        exited.try_recv(),
        Ok(_) | Err(mpsc::TryRecvError::Disconnected)
    ) {
        return; // already reaped: its pid may belong to someone else now
    }
    let signal = |sig: &str| {
        let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
    };
    signal("-TERM");
    match exited.recv_timeout(EXIT_GRACE) {
        Ok(status) => eprintln!("demo: agent exited: {status}"),
        Err(_) => {
            eprintln!("demo: agent still running {EXIT_GRACE:?} after SIGTERM; killing it");
            signal("-KILL");
            let _ = exited.recv_timeout(Duration::from_secs(5));
        }
    }
}

fn print_reply(reply: &Reply) {
    let pretty = serde_json::to_string_pretty(&reply.payload).unwrap_or_default();
    println!("final reply ({}):\n{pretty}", reply.document_status());
    println!("standardOutput:\n{}", reply.standard_output());
}

/// The emulator with a real agent process attached to it, in a temporary directory.
pub(crate) struct AgentRun {
    pub emu: Emulator,
    _dir: TempDir,
    pid: u32,
    pub exited: mpsc::Receiver<String>,
}

impl AgentRun {
    /// Starts the emulator and the agent at `agent`, configured to use only the emulator.
    pub fn start(agent: &Path, tag: &str) -> Result<AgentRun, String> {
        AgentRun::start_with(agent, tag, &[], |_| ())
    }

    /// [`AgentRun::start`] with `env` added to the agent's environment and `prepare` run on the
    /// emulator before the agent starts (what must be there at the agent's first call).
    pub fn start_with(
        agent: &Path,
        tag: &str,
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Emulator),
    ) -> Result<AgentRun, String> {
        // A short hold so the agent's poll ends soon after SIGTERM.
        let options = Options {
            poll_hold: Duration::from_secs(5),
            ..Options::default()
        };
        let region = options.region.clone();
        let emu =
            Emulator::try_start(options).map_err(|e| format!("starting the emulator: {e}"))?;
        let dir = TempDir::new()?;
        let config = write_config(&dir.0, &emu, &region)?;
        prepare(&emu);
        let mut child = spawn_agent(agent, &config, &dir.0.join("state"), &emu, env)?;
        let pid = child.id();
        let (tx, exited) = mpsc::channel();
        thread::spawn(move || {
            let status = child
                .wait()
                .map_or_else(|e| format!("wait failed: {e}"), |s| s.to_string());
            let _ = tx.send(status);
        });
        eprintln!("{tag}: emulator at {}, agent pid {pid}", emu.url());
        Ok(AgentRun {
            emu,
            _dir: dir,
            pid,
            exited,
        })
    }

    /// Stops the agent (SIGTERM, then SIGKILL) and the emulator; warns about bad signatures.
    pub fn stop(self, tag: &str) {
        stop_agent(self.pid, &self.exited);
        let failures = self.emu.signature_failures().len();
        if failures > 0 {
            eprintln!("{tag}: warning: {failures} request(s) failed signature verification");
        }
        self.emu.stop();
    }
}

/// Runs `command` through the agent at `agent`; Ok(true) when the final reply is `Success`.
pub fn run(agent: &Path, command: &str) -> Result<bool, String> {
    let run = AgentRun::start(agent, "demo")?;
    let payload = aws_run_shell_script_payload(&uuid_v4(), &[command], COMMAND_TIMEOUT_SECONDS);
    let id = run.emu.send_command(&payload);
    let outcome = await_final(&run.emu, &id, &run.exited);
    run.stop("demo");
    let reply = outcome?;
    print_reply(&reply);
    Ok(reply.document_status() == "Success")
}
