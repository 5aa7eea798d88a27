//! `aws:updateSsmAgent` (document AWS-UpdateSSMAgent) for ssm-lite: it never installs
//! amazon-ssm-agent, it updates ssm-lite itself from a release channel the operator controls
//! (`Update.Channel`, or the step's `source` when it names one), with upstream's inputs
//! (`agent/plugins/updatessmagent/updateagent.go`) and output texts
//! (`agent/update/processor/processor.go`, `progress.go`).
//!
//! The manifest's Ed25519 signature is checked against `Update.PublicKey` before anything is
//! downloaded, the binary's size and SHA-256 after; the new binary is swapped in beside the old
//! one (kept as `<binary>.previous`) and the agent `execve`s it, keeping its PID. The command's
//! record waits in `Phase::RestartPending`; the restarted agent runs the step again, which reports
//! Success once the new binary has reached the service (a successful health ping). A new binary
//! that does not within `Update.RollbackTimeoutSeconds`, or stops before (its second start), is
//! replaced by the old one, which runs the step again and reports Failed, saying why
//! (docs/protocol.md §3.14).

pub mod manifest;
mod swap;

use crate::aws::http::HttpRequest;
use crate::runcommand::reply::Status;
use crate::runcommand::sources::Sources;
use crate::shutdown::Shutdown;
use crate::sync::{lock, wait_until};
use manifest::{Manifest, compare};
use serde_json::Value;
use std::cmp::Ordering;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};
use swap::{Pending, Stage, Staged};

pub const PLUGIN: &str = "aws:updateSsmAgent";
/// The package name in the step's texts (upstream's `PackageName`).
const PACKAGE: &str = "ssm-lite";
/// Whole-download deadline of the manifest and of the binary.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Upstream's stock AWS-UpdateSSMAgent `source` ends so; it names amazon-ssm-agent builds, never
/// a ssm-lite channel.
const UPSTREAM_MANIFEST: &str = "/ssm-agent-manifest.json";

/// The version stamp: `SSMLITE-VERSION:<version>`, NUL-padded. Read from the binary's image at run
/// time, so a copy of the binary with its bytes rewritten (tests/update.rs) runs as that version.
const STAMP_LEN: usize = 48;
const STAMP_PREFIX: &str = "SSMLITE-VERSION:";
#[used]
static STAMP: [u8; STAMP_LEN] = stamp(concat!("SSMLITE-VERSION:", env!("CARGO_PKG_VERSION")));

const fn stamp(text: &str) -> [u8; STAMP_LEN] {
    let bytes = text.as_bytes();
    assert!(
        bytes.len() < STAMP_LEN,
        "the version does not fit the stamp"
    );
    let mut out = [0u8; STAMP_LEN];
    let mut i = 0;
    while i < bytes.len() {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// ssm-lite's own version (not the advertised `Agent.Version`): the stamp's.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let image = crate::sys::exec::read_image(&STAMP);
        let text = image.strip_prefix(STAMP_PREFIX.as_bytes()).unwrap_or(&[]);
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
        match std::str::from_utf8(&text[..end]) {
            Ok(v) if !v.is_empty() => v.to_owned(),
            _ => env!("CARGO_PKG_VERSION").to_owned(),
        }
    })
}

/// What the agent's configuration says about updates.
struct Updater {
    /// `Update.Channel`: an `https://` or `s3://` location holding `manifest.json`.
    channel: String,
    /// `Update.PublicKey`: standard base64 of the 32-byte Ed25519 key releases are signed with.
    public_key: String,
    rollback_after: Duration,
    state_root: PathBuf,
    shutdown: Shutdown,
}

static UPDATER: OnceLock<Updater> = OnceLock::new();
/// The binary's path at start, before any swap renames it (`/proc/self/exe` follows the file).
static BINARY: OnceLock<Option<PathBuf>> = OnceLock::new();

/// What happened in this process since it started.
#[derive(Default)]
struct Life {
    reached: bool,
    rolled_back: bool,
    restart: bool,
}

static LIFE: Mutex<Life> = Mutex::new(Life {
    reached: false,
    rolled_back: false,
    restart: false,
});
static CHANGED: Condvar = Condvar::new();

/// Called when the service took a health ping: the agent is online.
pub fn reached_service() {
    let mut life = lock(&LIFE);
    if !life.reached {
        life.reached = true;
        CHANGED.notify_all();
    }
}

/// Takes the update settings of `config`; `shutdown` is how a restart stops the agent first.
/// `SSM_LITE_UPDATE_ROLLBACK_SECS` shortens the rollback timeout for tests.
pub fn configure(config: &crate::config::Config, state_root: &Path, shutdown: &Shutdown) {
    let secs = std::env::var("SSM_LITE_UPDATE_ROLLBACK_SECS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(config.update.rollback_timeout_seconds);
    let _ = UPDATER.set(Updater {
        channel: config.update.channel.clone(),
        public_key: config.update.public_key.clone(),
        rollback_after: Duration::from_secs(secs),
        state_root: state_root.to_owned(),
        shutdown: shutdown.clone(),
    });
}

/// First thing of `ssm-lite run`: notes the binary's path, and when an update is waiting for
/// this binary to prove itself, counts the start. A second start of a new binary that has not
/// reached the service means it stopped (crashed) on the first: the old one is put back and run
/// at once. Otherwise a watchdog gives it until the deadline.
pub fn at_start(state_root: &Path) {
    let binary = BINARY.get_or_init(|| std::env::current_exe().ok());
    let Some(mut pending) = Pending::load(state_root) else {
        return;
    };
    if pending.stage != Stage::Swapped || pending.to != version() {
        return;
    }
    if binary.as_deref() != Some(pending.binary.as_path()) {
        log::warn!(
            "update: this binary is not {}, which the pending update swapped; leaving it",
            pending.binary.display()
        );
        return;
    }
    pending.attempts += 1;
    if let Err(e) = pending.save(state_root) {
        log::error!("update: {e}");
    }
    if pending.attempts > 1 {
        let why = format!(
            "{PACKAGE} {} stopped before it reached the service",
            pending.to
        );
        roll_back(state_root, pending, why);
        exec_if_requested();
        return;
    }
    let root = state_root.to_owned();
    let watchdog = std::thread::Builder::new()
        .name("update-watchdog".into())
        .spawn(move || watch(&root, pending));
    if let Err(e) = watchdog {
        log::error!("update: cannot start the rollback watchdog: {e}");
    }
}

/// Waits until the new binary reaches the service (the update stays) or the deadline passes
/// (the old binary comes back).
fn watch(state_root: &Path, mut pending: Pending) {
    let deadline = Instant::now() + secs_until(pending.deadline);
    let mut life = lock(&LIFE);
    while !life.reached {
        let timed_out;
        (life, timed_out) = wait_until(&CHANGED, life, deadline);
        if timed_out && !life.reached {
            drop(life);
            let why = format!(
                "{PACKAGE} {} did not reach the service within {} s",
                pending.to, pending.rollback_secs
            );
            roll_back(state_root, pending, why);
            return;
        }
    }
    drop(life);
    log::info!(
        "update: {PACKAGE} {} reached the service; it stays",
        pending.to
    );
    pending.stage = Stage::Confirmed;
    if let Err(e) = pending.save(state_root) {
        log::error!("update: {e}");
    }
}

fn secs_until(deadline: u64) -> Duration {
    Duration::from_secs(deadline.saturating_sub(now_secs()))
}

fn now_secs() -> u64 {
    crate::timefmt::unix_now()
}

/// Puts the old binary back, records why, and restarts into it.
fn roll_back(state_root: &Path, mut pending: Pending, why: String) {
    log::error!("update: {why}; rolling back to {PACKAGE} {}", pending.from);
    if let Err(e) = swap::restore_previous(&pending.binary) {
        log::error!(
            "update: cannot roll back: {e}; {PACKAGE} {} stays",
            pending.to
        );
        return;
    }
    pending.stage = Stage::RolledBack;
    pending.reason = why;
    if let Err(e) = pending.save(state_root) {
        log::error!("update: {e}");
    }
    lock(&LIFE).rolled_back = true;
    CHANGED.notify_all();
    restart("the update was rolled back");
}

/// Asks for the agent to stop and `execve` its binary (the new one after a swap, the old one
/// after a rollback); before `configure` there is nothing to stop, so the exec happens now.
pub fn restart(why: &str) {
    lock(&LIFE).restart = true;
    log::warn!("update: restarting the agent ({why})");
    match UPDATER.get() {
        Some(u) => u.shutdown.trigger(),
        None => exec_if_requested(),
    }
}

/// The end of `ssm-lite run`: when a restart was asked for, replaces this process with the
/// binary at the path it started from (same PID, same arguments). Returns when none was, or
/// the exec failed (logged; the process then exits and its supervisor starts it again).
pub fn exec_if_requested() {
    if !lock(&LIFE).restart {
        return;
    }
    let Some(Some(binary)) = BINARY.get() else {
        log::error!("update: the binary's path is unknown; exiting instead of restarting");
        return;
    };
    log::info!("update: executing {}", binary.display());
    let err = crate::sys::exec::exec_self(binary);
    log::error!("update: {err}; exiting so that the service manager starts the agent again");
}

/// What the step reports.
pub struct Report {
    /// `InProgress`: the binary was swapped; the engine keeps the command for the restart.
    pub status: Status,
    pub stdout: String,
    pub stderr: String,
}

/// Lines as upstream's `UpdateDetail.AppendInfo` and `AppendError` join them.
#[derive(Default)]
struct Out {
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Out {
    fn info(&mut self, line: impl Into<String>) {
        self.stdout.push(line.into());
    }

    fn error(&mut self, line: impl Into<String>) {
        let line = line.into();
        log::error!("update: {line}");
        self.stderr.push(line.clone());
        self.stdout.push(line);
    }

    fn report(self, status: Status) -> Report {
        Report {
            status,
            stdout: self.stdout.join("\n"),
            stderr: self.stderr.join("\n"),
        }
    }

    /// Upstream `failed` with no rollback needed: the reason, then its two lines.
    fn failed(mut self, why: String, target: &str) -> Report {
        self.error(why);
        self.info(format!("Failed to update {PACKAGE} to {target}"));
        self.info("No rollback needed");
        self.report(Status::Failed)
    }
}

/// The inputs upstream's `UpdatePluginInput` reads (its keys matched as Go does).
struct Input {
    allow_downgrade: bool,
    target_version: String,
    source: String,
}

fn parse_input(inputs: &Value) -> Result<Input, String> {
    let Some(map) = inputs.as_object() else {
        return Err(format!("invalid format in plugin properties {inputs}"));
    };
    let text = |key: &str| match crate::document::field(map, key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.trim().to_owned()),
        Some(v) => Err(format!(
            "invalid format in plugin properties {inputs};\nerror json: cannot unmarshal {} into Go struct field UpdatePluginInput.{key} of type string",
            crate::document::go_kind(v)
        )),
    };
    Ok(Input {
        allow_downgrade: text("allowDowngrade")?.eq_ignore_ascii_case("true"),
        target_version: text("targetVersion")?,
        source: text("source")?,
    })
}

/// Runs one property set of an `aws:updateSsmAgent` step of command `command_id`.
pub fn run(inputs: &Value, command_id: &str, sources: &Sources) -> Report {
    let out = Out::default();
    let input = match parse_input(inputs) {
        Ok(i) => i,
        Err(e) => return out.failed(e, "latest"),
    };
    let Some(updater) = UPDATER.get() else {
        return out.failed(
            "this run cannot update the agent (only `ssm-lite run` can)".into(),
            &input.target_version,
        );
    };
    let root = &updater.state_root;
    match Pending::load(root) {
        Some(p) if p.command_id == command_id => return resume(root, p),
        Some(p) if now_secs() < p.deadline => {
            return out.failed(
                "Another update in progress, try again later".into(),
                &input.target_version,
            );
        }
        Some(_) => Pending::remove(root), // an earlier update's, left when its command gave up
        None => {}
    }
    let binary = match BINARY.get() {
        Some(Some(b)) => b.clone(),
        _ => {
            return out.failed(
                "the path of the running binary is unknown".into(),
                &input.target_version,
            );
        }
    };
    Attempt {
        updater,
        sources,
        input,
        out,
        binary,
    }
    .run(command_id)
}

/// One update from the channel, up to the swap.
struct Attempt<'a> {
    updater: &'a Updater,
    sources: &'a Sources,
    input: Input,
    out: Out,
    binary: PathBuf,
}

impl Attempt<'_> {
    fn run(mut self, command_id: &str) -> Report {
        let target = match self.input.target_version.as_str() {
            "" | "None" => "latest".to_owned(),
            v => v.to_owned(),
        };
        let key = match self.public_key() {
            Ok(k) => k,
            Err(e) => return self.out.failed(e, &target),
        };
        let Some(channel) = self.channel() else {
            return self.out.failed(
                "no release channel: set Update.Channel in amazon-ssm-agent.json (or the step's source) to the https:// or s3:// location of a ssm-lite release channel".into(),
                &target,
            );
        };
        let (base, manifest_url) = match channel.strip_suffix(".json") {
            Some(_) => (parent_of(&channel), channel.clone()),
            None => {
                let base = channel.trim_end_matches('/').to_owned();
                let url = format!("{base}/manifest.json");
                (base, url)
            }
        };
        let mut bytes = Vec::new();
        let fetched = fetch(
            &manifest_url,
            &mut bytes,
            manifest::MAX_MANIFEST_BYTES,
            self.sources,
        );
        if let Err(e) = fetched {
            return self
                .out
                .failed(format!("failed to download {manifest_url}: {e}"), &target);
        }
        self.out
            .info(format!("Successfully downloaded {manifest_url}"));
        let manifest = match Manifest::parse(&bytes) {
            Ok(m) => m,
            Err(e) => {
                return self.out.failed(
                    format!("the manifest at {manifest_url} is not valid: {e}"),
                    &target,
                );
            }
        };
        let Some(release) = manifest.release(self.input.target_version.as_str()) else {
            let why =
                format!("{PACKAGE} target version {target} is unsupported on current platform");
            return self.out.failed(why, &target);
        };
        let (from, to) = (version(), release.version.clone());
        self.out
            .info(format!("Updating {PACKAGE} from {from} to {to}"));
        match compare(from, &to) {
            Ordering::Equal => {
                self.out
                    .info(format!("{PACKAGE} {from} has already been installed"));
                self.out.info("update skipped");
                return self.out.report(Status::Success);
            }
            Ordering::Greater if !self.input.allow_downgrade => {
                let why = format!(
                    "Updating {from} to an older version {to}, please enable allow downgrade to proceed"
                );
                return self.out.failed(why, &to);
            }
            _ => {}
        }
        let arch = manifest::arch();
        let Some(artifact) = release.files.get(arch) else {
            let why = format!("{PACKAGE} target version {to} is unsupported on current platform");
            return self.out.failed(why, &to);
        };
        if let Err(e) = artifact.verify(&key, &to, arch) {
            return self
                .out
                .failed(format!("{PACKAGE} {to} for {arch} is refused: {e}"), &to);
        }
        let url = format!("{base}/{}", artifact.name);
        let staged = match self.download(&url, artifact) {
            Ok(s) => s,
            Err(e) => {
                return self
                    .out
                    .failed(format!("{PACKAGE} {to} for {arch} is refused: {e}"), &to);
            }
        };
        self.out.info(format!("Successfully downloaded {url}"));
        self.out
            .info(format!("Initiating {PACKAGE} update to {to}"));
        self.swap(staged, command_id, &to)
    }

    /// The document's `source` when it names a channel, else `Update.Channel`.
    fn channel(&self) -> Option<String> {
        let source = &self.input.source;
        let named = (source.starts_with("https://") || source.starts_with("s3://"))
            && !source.ends_with(UPSTREAM_MANIFEST);
        match (named, self.updater.channel.as_str()) {
            (true, _) => Some(source.clone()),
            (false, "") => None,
            (false, channel) => Some(channel.to_owned()),
        }
    }

    fn public_key(&self) -> Result<Vec<u8>, String> {
        let text = self.updater.public_key.trim();
        if text.is_empty() {
            return Err("refusing to update without a key to check releases with: set Update.PublicKey in amazon-ssm-agent.json to the base64 Ed25519 public key of the channel (`ssm-lite-release genkey` prints it)".into());
        }
        match crate::base64::decode(text) {
            Ok(k) if k.len() == 32 => Ok(k),
            Ok(k) => Err(format!(
                "Update.PublicKey is {} bytes, not the 32 of an Ed25519 public key",
                k.len()
            )),
            Err(e) => Err(format!("Update.PublicKey is not base64: {e}")),
        }
    }

    /// Downloads the binary beside the running one and checks its size and SHA-256.
    fn download(&self, url: &str, artifact: &manifest::Artifact) -> Result<Staged, String> {
        let staged = Staged::create(&self.binary).map_err(|e| e.to_string())?;
        let mut hashing = Hashing {
            out: staged,
            digest: ring::digest::Context::new(&ring::digest::SHA256),
        };
        let got = fetch(url, &mut hashing, artifact.size, self.sources).map_err(|e| {
            format!(
                "failed to download {url} (size check: at most {} bytes): {e}",
                artifact.size
            )
        })?;
        if got != artifact.size {
            return Err(format!(
                "size check failed: the manifest says {} bytes, {url} has {got}",
                artifact.size
            ));
        }
        let digest = crate::aws::sigv4::hex(hashing.digest.finish().as_ref());
        if !digest.eq_ignore_ascii_case(&artifact.sha256) {
            return Err(format!(
                "SHA-256 check failed: the manifest says {}, {url} has {digest}",
                artifact.sha256
            ));
        }
        Ok(hashing.out)
    }

    /// Swaps the binary in, records the update and hands the restart to the engine.
    fn swap(mut self, staged: Staged, command_id: &str, to: &str) -> Report {
        let rollback_secs = self.updater.rollback_after.as_secs();
        let pending = Pending {
            command_id: command_id.to_owned(),
            from: version().to_owned(),
            to: to.to_owned(),
            binary: self.binary.clone(),
            deadline: now_secs() + rollback_secs,
            rollback_secs,
            attempts: 0,
            stage: Stage::Swapped,
            output: self.out.stdout.join("\n"),
            reason: String::new(),
        };
        // Recorded first: a crash right after the swap still finds what to roll back to.
        let saved = pending.save(&self.updater.state_root);
        if let Err(e) = saved.and_then(|()| staged.swap_into(&self.binary)) {
            Pending::remove(&self.updater.state_root);
            return self
                .out
                .failed(format!("failed to install {PACKAGE} {to}: {e}"), to);
        }
        log::warn!(
            "update: {} is now {PACKAGE} {to}; restarting into it",
            self.binary.display()
        );
        // The output so far is in the record; the step's final result starts with it.
        self.out.stdout.clear();
        self.out.report(Status::InProgress)
    }
}

/// The step again, in the agent that started after the swap (or after the rollback).
fn resume(root: &Path, pending: Pending) -> Report {
    let mut out = Out::default();
    if !pending.output.is_empty() {
        out.info(pending.output.clone());
    }
    let here = version();
    if pending.stage == Stage::RolledBack && here == pending.from {
        Pending::remove(root);
        out.error(format!(
            "failed to update {PACKAGE} to {}, failed to start the agent, ErrorMessage={}",
            pending.to, pending.reason
        ));
        out.info(format!("Initiating rollback {PACKAGE} to {}", pending.from));
        out.info(format!("rolledback {PACKAGE} to {}", pending.from));
        out.info(format!("Failed to update {PACKAGE} to {}", pending.to));
        return out.report(Status::Failed);
    }
    if here != pending.to || pending.stage == Stage::RolledBack {
        Pending::remove(root);
        let why = format!(
            "{PACKAGE} is at {here} after the update from {} to {}; the binary at {} was replaced meanwhile",
            pending.from,
            pending.to,
            pending.binary.display()
        );
        return out.failed(why, &pending.to);
    }
    if pending.stage == Stage::Swapped && !wait_settled(&pending) {
        // Rolled back meanwhile: the old binary runs the step again and reports.
        return Report {
            status: Status::InProgress,
            stdout: String::new(),
            stderr: String::new(),
        };
    }
    let _ = std::fs::remove_file(swap::previous_of(&pending.binary));
    Pending::remove(root);
    out.info(format!("{PACKAGE} updated successfully to {}", pending.to));
    out.report(Status::Success)
}

/// Waits for the watchdog's verdict on the swapped binary: true when it reached the service,
/// false when it was rolled back (or the watchdog is long overdue).
fn wait_settled(pending: &Pending) -> bool {
    let deadline = Instant::now() + secs_until(pending.deadline) + Duration::from_secs(60);
    let mut life = lock(&LIFE);
    while !life.reached && !life.rolled_back {
        let timed_out;
        (life, timed_out) = wait_until(&CHANGED, life, deadline);
        if timed_out {
            break;
        }
    }
    life.reached
}

/// GETs `url` (`https://` through the agent's client, `s3://bucket/key` through its S3 client)
/// into `out`, at most `limit` bytes; the bytes written.
fn fetch(url: &str, out: &mut dyn Write, limit: u64, sources: &Sources) -> Result<u64, String> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let Some((bucket, key)) = rest
            .split_once('/')
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        else {
            return Err(format!("{url} names no bucket and key"));
        };
        return sources.objects.get_object(bucket, key, out, limit);
    }
    if !url.starts_with("https://") {
        return Err(format!("{url} is neither an https:// nor an s3:// URL"));
    }
    let Some(http) = sources.http.as_deref() else {
        return Err("this run has no HTTPS client".into());
    };
    let request = HttpRequest {
        method: "GET",
        url,
        headers: Vec::new(),
        body: &[],
        timeout: DOWNLOAD_TIMEOUT,
    };
    match http.download(request, out, limit) {
        Ok((r, n)) if r.status == 200 => Ok(n),
        Ok((r, _)) => Err(format!("the server answered status {}", r.status)),
        Err(e) => Err(e.to_string()),
    }
}

/// `https://host/a/manifest.json` → `https://host/a`.
fn parent_of(url: &str) -> String {
    url.rsplit_once('/').map_or(url, |(dir, _)| dir).to_owned()
}

/// A writer that hashes what passes through.
struct Hashing<W> {
    out: W,
    digest: ring::digest::Context,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runcommand::sources::ObjectSource;
    use crate::state::testdir::TestDir;
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::Arc;

    /// S3 objects by `bucket/key`.
    struct Objects(HashMap<String, Vec<u8>>);

    impl ObjectSource for Objects {
        fn get_object(
            &self,
            bucket: &str,
            key: &str,
            out: &mut dyn Write,
            limit: u64,
        ) -> Result<u64, String> {
            let bytes = self.0.get(&format!("{bucket}/{key}")).ok_or("NoSuchKey")?;
            let n = (bytes.len() as u64).min(limit + 1) as usize;
            out.write_all(&bytes[..n]).map_err(|e| e.to_string())?;
            Ok(n as u64)
        }
    }

    fn updater(root: &Path, public_key: &str) -> Updater {
        Updater {
            channel: "s3://releases/stable".into(),
            public_key: public_key.into(),
            rollback_after: Duration::from_secs(60),
            state_root: root.to_owned(),
            shutdown: Shutdown::new(),
        }
    }

    /// A channel in S3 with release `version` of `binary`, signed by `key`.
    fn channel(key: &Ed25519KeyPair, version: &str, binary: &[u8]) -> Sources {
        let arch = manifest::arch();
        let sha =
            crate::aws::sigv4::hex(ring::digest::digest(&ring::digest::SHA256, binary).as_ref());
        let line = manifest::signed_line(version, arch, binary.len() as u64, &sha);
        let name = format!("ssm-lite-{version}-{arch}");
        let manifest = json!({"releases": [{"version": version, "files": {arch: {"name": name,
            "size": binary.len(), "sha256": sha,
            "signature": crate::base64::encode(key.sign(line.as_bytes()).as_ref())}}}]});
        let objects = HashMap::from([
            (
                "releases/stable/manifest.json".to_owned(),
                manifest.to_string().into_bytes(),
            ),
            (format!("releases/stable/{name}"), binary.to_vec()),
        ]);
        let mut sources = Sources::unavailable("tests");
        sources.objects = Arc::new(Objects(objects));
        sources
    }

    fn attempt<'a>(
        u: &'a Updater,
        sources: &'a Sources,
        binary: &Path,
        inputs: Value,
    ) -> Attempt<'a> {
        Attempt {
            updater: u,
            sources,
            input: parse_input(&inputs).unwrap(),
            out: Out::default(),
            binary: binary.to_owned(),
        }
    }

    fn key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    #[test]
    fn the_stamp_is_the_package_version() {
        assert!(STAMP.starts_with(STAMP_PREFIX.as_bytes()));
        assert_eq!(version(), env!("CARGO_PKG_VERSION"));
        assert_eq!(STAMP[STAMP_PREFIX.len() + version().len()], 0);
    }

    #[test]
    fn a_signed_release_from_s3_is_swapped_in_and_recorded() {
        let t = TestDir::new("update");
        let binary = t.path().join("ssm-lite");
        std::fs::write(&binary, b"old binary").unwrap();
        let k = key();
        let u = updater(t.path(), &crate::base64::encode(k.public_key().as_ref()));
        let sources = channel(&k, "9.0.0", b"new binary");
        let report = attempt(
            &u,
            &sources,
            &binary,
            json!({"agentName": "amazon-ssm-agent"}),
        )
        .run("c1");
        assert_eq!(report.status, Status::InProgress, "{}", report.stderr);
        assert_eq!(report.stdout, "", "the output waits in pending.json");
        assert_eq!(std::fs::read(&binary).unwrap(), b"new binary");
        assert_eq!(
            std::fs::read(swap::previous_of(&binary)).unwrap(),
            b"old binary"
        );
        let pending = Pending::load(t.path()).unwrap();
        assert_eq!(
            (pending.command_id.as_str(), pending.to.as_str()),
            ("c1", "9.0.0")
        );
        assert_eq!(pending.stage, Stage::Swapped);
        let arch = manifest::arch();
        assert_eq!(
            pending.output,
            format!(
                "Successfully downloaded s3://releases/stable/manifest.json\n\
                     Updating ssm-lite from {} to 9.0.0\n\
                     Successfully downloaded s3://releases/stable/ssm-lite-9.0.0-{arch}\n\
                     Initiating ssm-lite update to 9.0.0",
                version()
            )
        );
    }

    #[test]
    fn a_downgrade_needs_allow_downgrade_and_a_key_is_required() {
        let t = TestDir::new("update");
        let binary = t.path().join("ssm-lite");
        std::fs::write(&binary, b"old").unwrap();
        let k = key();
        let sources = channel(&k, "0.0.1", b"older");
        let u = updater(t.path(), &crate::base64::encode(k.public_key().as_ref()));
        let report = attempt(&u, &sources, &binary, json!({"AllowDowngrade": "false"})).run("c2");
        assert_eq!(report.status, Status::Failed);
        assert!(
            report.stdout.ends_with(&format!(
                "Updating {} to an older version 0.0.1, please enable allow downgrade to proceed\n\
             Failed to update ssm-lite to 0.0.1\nNo rollback needed",
                version()
            )),
            "{}",
            report.stdout
        );
        for (key, why) in [
            ("", "set Update.PublicKey"),
            ("AAAA", "3 bytes, not the 32"),
        ] {
            let u = updater(t.path(), key);
            let report = attempt(&u, &sources, &binary, json!({})).run("c3");
            assert_eq!(report.status, Status::Failed);
            assert!(report.stderr.contains(why), "{}", report.stderr);
        }
        assert_eq!(std::fs::read(&binary).unwrap(), b"old");
        assert!(Pending::load(t.path()).is_none());
    }

    #[test]
    fn the_stock_source_means_the_configured_channel() {
        let t = TestDir::new("update");
        let sources = Sources::unavailable("tests");
        let u = updater(t.path(), "");
        let stock =
            "https://s3.us-east-1.amazonaws.com/amazon-ssm-us-east-1/ssm-agent-manifest.json";
        for (source, channel) in [
            (stock, "s3://releases/stable"),
            ("", "s3://releases/stable"),
            ("https://example.com/edge", "https://example.com/edge"),
        ] {
            let a = attempt(&u, &sources, t.path(), json!({"source": source}));
            assert_eq!(a.channel().as_deref(), Some(channel), "{source}");
        }
        let e = parse_input(&json!({"targetVersion": 3})).err().unwrap();
        assert!(
            e.contains("UpdatePluginInput.targetVersion of type string"),
            "{e}"
        );
    }
}
