//! Scripts that outlive the agent. Each script runs under a supervisor: the agent binary
//! started again as `ssm-lite __supervise <run dir>`, in a session of its own. It reads its job
//! from `job.json` in the script's directory, runs the script exactly as the agent would
//! ([`super::run_here`]: process group, capped output, deadline), takes SIGTERM as "cancel",
//! writes `status.json` there and exits. An agent that stops or crashes meanwhile leaves it
//! running; the next agent follows it to its end by pid and start time ([`reattach`]) and reads
//! the same status.

use super::capture::{Captured, Limits};
use super::{End, ExecError, Outcome, ScriptEnd, ScriptSpec, StopReason, StopToken};
use crate::state::write_atomic;
use crate::sys::{self, Pid, process};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, SystemTime};

/// The hidden first argument that makes the binary a supervisor.
pub const SUBCOMMAND: &str = "__supervise";
const JOB: &str = "job.json";
const STATUS: &str = "status.json";
/// The supervisor's own stderr.
const LOG: &str = "supervisor.log";
/// Most bytes read of `job.json` or `status.json`: a few hundred, or twice the reply's share of
/// a stream in base64 when the disk refused the output.
const MAX_RUN_FILE: u64 = 256 * 1024;

static EXE: OnceLock<PathBuf> = OnceLock::new();

/// Runs every later script under a supervisor, this executable. Called once at agent start:
/// a self-update may rename the file later. Without it scripts run inside the calling process.
pub fn enable() -> std::io::Result<()> {
    let exe = std::env::current_exe()?;
    let _ = EXE.set(exe);
    Ok(())
}

pub(super) fn exe() -> Option<&'static Path> {
    EXE.get().map(PathBuf::as_path)
}

/// A running supervisor as a command record keeps it, to follow it after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supervised {
    pub pid: i32,
    /// Its start time in `/proc/<pid>/stat`: a pid recycled by another process does not match.
    pub start_time: u64,
    /// The script's directory: `job.json`, `status.json` and `supervisor.log` are there.
    pub run_dir: PathBuf,
}

/// What the agent hands its supervisor. `job.json` and `status.json` go through
/// `serde_json::Value` by hand: derived impls would cost the binary several KB each.
#[derive(Debug)]
struct Job {
    script: PathBuf,
    working_dir: Option<PathBuf>,
    stdout: PathBuf,
    stderr: PathBuf,
    /// The timeout as an absolute time (unix ms), enforced by the supervisor alone.
    deadline_ms: u64,
    file_bytes: u64,
    /// The reply's share of each stream, sent back in the status where the file lacks it.
    head_bytes: usize,
}

/// How the script ended, as the supervisor reports it.
#[derive(Debug, PartialEq)]
enum Ended {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    Cancelled,
    FailedToStart(String),
}

#[derive(Debug, PartialEq)]
struct StreamStatus {
    total: u64,
    truncated: bool,
    write_error: Option<String>,
    /// The reply's share in base64, when a write error kept it from the file.
    head: Option<String>,
}

#[derive(Debug, PartialEq)]
struct Status {
    ended: Ended,
    stdout: StreamStatus,
    stderr: StreamStatus,
}

/// A run file's JSON form.
trait RunFile: Sized {
    fn to_value(&self) -> Option<Value>;
    fn from_value(v: &Value) -> Option<Self>;
}

impl RunFile for Job {
    fn to_value(&self) -> Option<Value> {
        let path = |p: &Path| p.to_str().map(Value::from);
        Some(json!({
            "script": path(&self.script)?,
            "working_dir": match &self.working_dir {
                Some(dir) => path(dir)?,
                None => Value::Null,
            },
            "stdout": path(&self.stdout)?,
            "stderr": path(&self.stderr)?,
            "deadline_ms": self.deadline_ms,
            "file_bytes": self.file_bytes,
            "head_bytes": self.head_bytes,
        }))
    }

    fn from_value(v: &Value) -> Option<Job> {
        let path = |key: &str| v[key].as_str().map(PathBuf::from);
        Some(Job {
            script: path("script")?,
            working_dir: path("working_dir"),
            stdout: path("stdout")?,
            stderr: path("stderr")?,
            deadline_ms: v["deadline_ms"].as_u64()?,
            file_bytes: v["file_bytes"].as_u64()?,
            head_bytes: usize::try_from(v["head_bytes"].as_u64()?).ok()?,
        })
    }
}

impl StreamStatus {
    fn to_value(&self) -> Value {
        json!({
            "total": self.total,
            "truncated": self.truncated,
            "write_error": self.write_error,
            "head": self.head,
        })
    }

    fn from_value(v: &Value) -> Option<StreamStatus> {
        let text = |key: &str| v[key].as_str().map(str::to_owned);
        Some(StreamStatus {
            total: v["total"].as_u64()?,
            truncated: v["truncated"].as_bool()?,
            write_error: text("write_error"),
            head: text("head"),
        })
    }
}

impl RunFile for Status {
    fn to_value(&self) -> Option<Value> {
        let (ended, code, error) = match &self.ended {
            Ended::Exited(c) => ("exited", Some(*c), None),
            Ended::Signaled(s) => ("signaled", Some(*s), None),
            Ended::TimedOut => ("timed_out", None, None),
            Ended::Cancelled => ("cancelled", None, None),
            Ended::FailedToStart(e) => ("failed_to_start", None, Some(e)),
        };
        Some(json!({
            "ended": ended,
            "code": code,
            "error": error,
            "stdout": self.stdout.to_value(),
            "stderr": self.stderr.to_value(),
        }))
    }

    fn from_value(v: &Value) -> Option<Status> {
        let code = || v["code"].as_i64().and_then(|c| i32::try_from(c).ok());
        let ended = match v["ended"].as_str()? {
            "exited" => Ended::Exited(code()?),
            "signaled" => Ended::Signaled(code()?),
            "timed_out" => Ended::TimedOut,
            "cancelled" => Ended::Cancelled,
            "failed_to_start" => Ended::FailedToStart(v["error"].as_str()?.to_owned()),
            _ => return None,
        };
        Some(Status {
            ended,
            stdout: StreamStatus::from_value(&v["stdout"])?,
            stderr: StreamStatus::from_value(&v["stderr"])?,
        })
    }
}

impl Status {
    fn of(end: &ScriptEnd) -> Status {
        let ended = match &end.outcome {
            Outcome::Exited(c) => Ended::Exited(*c),
            Outcome::Signaled(s) => Ended::Signaled(*s),
            Outcome::TimedOut => Ended::TimedOut,
            Outcome::Stopped(_) => Ended::Cancelled,
            Outcome::FailedToStart(e) => Ended::FailedToStart(e.to_string()),
        };
        let stream = |c: &Captured| StreamStatus {
            total: c.total,
            truncated: c.truncated,
            write_error: c.write_error.clone(),
            head: c
                .write_error
                .as_ref()
                .map(|_| crate::base64::encode(&c.head)),
        };
        Status {
            ended,
            stdout: stream(&end.stdout),
            stderr: stream(&end.stderr),
        }
    }
}

/// The supervisor process: runs the job in `run_dir` and reports how it ended in `status.json`
/// and on stdout (a pipe to the agent that started it, which gets it even when the disk is
/// full). Exit code 0 once the status went out one way or the other.
pub fn main(run_dir: &Path) -> u8 {
    match supervise(run_dir) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ssm-lite supervisor: {e}");
            1
        }
    }
}

fn supervise(run_dir: &Path) -> Result<(), ExecError> {
    let job: Job = read_json(&run_dir.join(JOB))?;
    let stop = StopToken::new();
    cancel_on_sigterm(&stop)?;
    wait_for_go(&job)?;
    let left = job.deadline_ms.saturating_sub(now_ms());
    let spec = ScriptSpec {
        script: &job.script,
        working_dir: job.working_dir.as_deref(),
        env: &[],
        stdout: &job.stdout,
        stderr: &job.stderr,
        timeout: Duration::from_millis(left),
        limits: Limits {
            file_bytes: job.file_bytes,
            head_bytes: job.head_bytes,
        },
    };
    let end = super::run_here(&spec, &stop, &mut |_| {});
    let path = run_dir.join(STATUS);
    let bytes = encode(&Status::of(&end), &path)?;
    let saved = write_atomic(&path, &bytes, true).map_err(|e| run_file("write", &path, e));
    let mut out = std::io::stdout().lock();
    let piped = out.write_all(&bytes).and_then(|()| out.flush());
    match (saved, piped) {
        (Err(e), Ok(())) => eprintln!("ssm-lite supervisor: {e} (the agent got it on stdout)"),
        (Err(e), Err(_)) => return Err(e),
        (Ok(()), _) => {}
    }
    Ok(())
}

/// Waits for the agent's go-ahead, one byte on stdin, which it sends once its command record
/// names this supervisor. A script started before that would be lost to an agent killed in
/// between: the next start would find no supervisor to follow and report the step interrupted
/// while the script ran on unseen. End of input first means that agent is gone: nothing runs.
fn wait_for_go(job: &Job) -> Result<(), ExecError> {
    let mut go = [0u8; 1];
    std::io::stdin().read_exact(&mut go).map_err(|e| {
        let why = format!("the agent went away before it recorded this supervisor ({e}); not run");
        run_file("run", &job.script, why)
    })
}

/// SIGTERM (from the agent) cancels the script. Before it is installed, SIGTERM ends the
/// supervisor before any script has started, which the agent reads as cancelled too.
fn cancel_on_sigterm(stop: &StopToken) -> Result<(), ExecError> {
    let mut signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM]).map_err(|e| {
            run_file(
                "install a SIGTERM handler for",
                Path::new("the supervisor"),
                e,
            )
        })?;
    let stop = stop.clone();
    thread::Builder::new()
        .name("sigterm".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                stop.stop(StopReason::Cancelled);
            }
        })
        .map_err(|e| {
            run_file(
                "start the SIGTERM thread of",
                Path::new("the supervisor"),
                e,
            )
        })?;
    Ok(())
}

/// The agent's side of a supervised script: writes the job, starts the supervisor, follows it.
/// A `Shutdown` stop leaves it running and returns `Stopped(Shutdown)` at once; a `Cancelled`
/// one sends it SIGTERM and waits for the status.
pub(super) fn run(
    exe: &Path,
    spec: &ScriptSpec<'_>,
    stop: &StopToken,
    on_start: &mut dyn FnMut(Pid),
) -> ScriptEnd {
    let run_dir = spec.script.parent().unwrap_or(Path::new("."));
    let (mut child, job, supervised) = match start(exe, spec, run_dir) {
        Ok(started) => started,
        Err(e @ ExecError::Supervisor { .. }) => return run_unsupervised(&e, spec, stop, on_start),
        Err(e) => return ScriptEnd::without_output(Outcome::FailedToStart(e)),
    };
    let pid = Pid::from_raw(supervised.pid);
    let piped = child.stdout.take().and_then(read_status_pipe);
    stop.set_supervised(supervised);
    on_start(pid);
    // Recorded: the script may start. A supervisor already gone fails the write (EPIPE) and is
    // followed to its end like any other.
    if let Some(mut go) = child.stdin.take() {
        let _ = go.write_all(b"1");
    }
    let cancelled = match follow(Watch::Child(pid), stop) {
        Followed::LeftRunning => {
            return ScriptEnd::without_output(Outcome::Stopped(StopReason::Shutdown));
        }
        Followed::Ended { cancelled } => cancelled,
    };
    if let Err(e) = child.wait() {
        log::warn!(
            "cannot reap the supervisor of {}: {e}",
            spec.script.display()
        );
    }
    let piped = piped
        .and_then(|reader| reader.join().ok())
        .filter(|b| !b.is_empty());
    read_end(run_dir, &job, piped, cancelled)
}

/// A supervisor that cannot be started (under qemu-user the binary is a foreign one that the
/// kernel cannot run without binfmt; or the file is gone) must not fail the command: the script
/// runs inside the agent as before supervisors, only it ends with the agent. Said once as a
/// warning, then at debug level.
fn run_unsupervised(
    why: &ExecError,
    spec: &ScriptSpec<'_>,
    stop: &StopToken,
    on_start: &mut dyn FnMut(Pid),
) -> ScriptEnd {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let text = "the script runs inside the agent instead and ends if the agent stops";
    if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        log::debug!("{why}; {text}");
    } else {
        log::warn!("{why}; {text} (said once)");
    }
    super::run_here(spec, stop, on_start)
}

/// Reads what the supervisor writes on stdout (its status, at its end) in a thread of its own:
/// while the agent waits for the supervisor's exit, a status larger than the pipe's buffer
/// must not block it. Bounded; the rest is drained unread. `None` when no thread could be
/// started: the status is then read from its file.
fn read_status_pipe(pipe: std::process::ChildStdout) -> Option<thread::JoinHandle<Vec<u8>>> {
    let reader = thread::Builder::new()
        .name("supervisor-status".into())
        .spawn(move || {
            let mut pipe = pipe;
            let mut bytes = Vec::new();
            let _ = (&mut pipe).take(MAX_RUN_FILE).read_to_end(&mut bytes);
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            bytes
        });
    reader
        .map_err(|e| log::warn!("cannot start a thread to read a supervisor's status: {e}"))
        .ok()
}

/// Follows a supervisor an earlier agent started to its end, and reads how its script ended.
/// `None`: it is gone and left no status (the machine restarted), so the outcome is unknown.
/// A `Shutdown` stop leaves it running again (`Stopped(Shutdown)`); `Cancelled` cancels it.
pub fn reattach(sup: &Supervised, stop: &StopToken) -> Option<ScriptEnd> {
    let job: Job = match read_json(&sup.run_dir.join(JOB)) {
        Ok(job) => job,
        Err(e) => {
            log::warn!("{e}");
            return None;
        }
    };
    let pid = Pid::from_raw(sup.pid);
    let mut cancelled = false;
    if process::is_running(pid, sup.start_time) {
        match follow(Watch::Orphan(pid, sup.start_time), stop) {
            Followed::LeftRunning => {
                return Some(ScriptEnd::without_output(Outcome::Stopped(
                    StopReason::Shutdown,
                )));
            }
            Followed::Ended { cancelled: c } => cancelled = c,
        }
    } else if !sup.run_dir.join(STATUS).exists() {
        return None;
    }
    Some(read_end(&sup.run_dir, &job, None, cancelled))
}

/// Cancels a supervisor an earlier agent started, if it still runs.
pub fn cancel(sup: &Supervised) {
    Watch::Orphan(Pid::from_raw(sup.pid), sup.start_time).terminate();
}

fn start(
    exe: &Path,
    spec: &ScriptSpec<'_>,
    run_dir: &Path,
) -> Result<(Child, Job, Supervised), ExecError> {
    let status = run_dir.join(STATUS);
    // A status left by an earlier run of this step (before a reboot) is not this run's.
    if let Err(e) = crate::state::remove_file(&status) {
        log::warn!("{e}");
    }
    let timeout_ms = u64::try_from(spec.timeout.as_millis()).unwrap_or(u64::MAX);
    let job = Job {
        script: spec.script.to_owned(),
        working_dir: spec.working_dir.map(Path::to_owned),
        stdout: spec.stdout.to_owned(),
        stderr: spec.stderr.to_owned(),
        deadline_ms: now_ms().saturating_add(timeout_ms),
        file_bytes: spec.limits.file_bytes,
        head_bytes: spec.limits.head_bytes,
    };
    let path = run_dir.join(JOB);
    let bytes = encode(&job, &path)?;
    write_atomic(&path, &bytes, false).map_err(|e| run_file("write", &path, e))?;
    let log_path = run_dir.join(LOG);
    let log = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| run_file("create", &log_path, e))?;
    let mut cmd = sys::child::command(exe);
    cmd.arg(SUBCOMMAND)
        .arg(run_dir)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log);
    process::new_session(&mut cmd);
    let child = cmd.spawn().map_err(|e| ExecError::Supervisor {
        exe: exe.to_owned(),
        script: spec.script.to_owned(),
        error: e.to_string(),
    })?;
    // pid_t values always fit in i32; std hands them out as u32.
    let pid = Pid::from_raw(child.id() as i32);
    let supervised = Supervised {
        pid: pid.as_raw(),
        // Our unreaped child has a stat line whatever it does meanwhile.
        start_time: process::start_time(pid).unwrap_or(0),
        run_dir: run_dir.to_owned(),
    };
    Ok((child, job, supervised))
}

/// A supervisor being followed: the agent's own child, or one an earlier agent started.
#[derive(Clone, Copy)]
enum Watch {
    Child(Pid),
    Orphan(Pid, u64),
}

impl Watch {
    fn wait(self) -> std::io::Result<()> {
        match self {
            // Left unreaped: its pid cannot be reused before `run` reaps it.
            Watch::Child(pid) => sys::wait_for_exit(pid),
            Watch::Orphan(pid, started) => process::wait_gone(pid, started),
        }
    }

    fn terminate(self) {
        let pid = match self {
            Watch::Child(pid) => pid,
            Watch::Orphan(pid, started) if process::is_running(pid, started) => pid,
            Watch::Orphan(..) => return,
        };
        if let Err(e) = process::terminate(pid) {
            log::error!("{e}; its script may go on running");
        }
    }
}

enum Followed {
    Ended { cancelled: bool },
    LeftRunning,
}

/// Waits for the supervisor's end, turning a stop into SIGTERM (cancel) or into leaving it.
fn follow(watch: Watch, stop: &StopToken) -> Followed {
    let exited = Arc::new(AtomicBool::new(false));
    let (flag, token) = (Arc::clone(&exited), stop.clone());
    // Not scoped: when the agent leaves the supervisor running, this thread stays blocked.
    let waiter = thread::Builder::new()
        .name("supervisor".into())
        .spawn(move || {
            if let Err(e) = watch.wait() {
                log::error!("{e}; treating the supervisor as ended");
            }
            token.mark_exited(&flag);
        });
    if let Err(e) = waiter {
        log::error!("cannot start a thread to follow a supervisor ({e}); waiting for it here");
        if let Err(e) = watch.wait() {
            log::error!("{e}; treating the supervisor as ended");
        }
        return Followed::Ended { cancelled: false };
    }
    match stop.wait_end(&exited, None) {
        End::Stopped(StopReason::Shutdown) => Followed::LeftRunning,
        End::Stopped(StopReason::Cancelled) => {
            watch.terminate();
            stop.wait_exited(&exited);
            Followed::Ended { cancelled: true }
        }
        End::Exited | End::TimedOut | End::Unwatched(_) => Followed::Ended { cancelled: false },
    }
}

/// The script's end from its status (`piped` from the supervisor, else `status.json`) and the
/// heads of its output files. No status after a cancel: SIGTERM came before the supervisor
/// could take it, so no script ran.
fn read_end(run_dir: &Path, job: &Job, piped: Option<Vec<u8>>, cancelled: bool) -> ScriptEnd {
    let path = run_dir.join(STATUS);
    let status = match piped {
        Some(bytes) => decode(&bytes, &path),
        None => read_json::<Status>(&path),
    };
    let status = match status {
        Ok(status) => status,
        Err(_) if cancelled => {
            return ScriptEnd::without_output(Outcome::Stopped(StopReason::Cancelled));
        }
        Err(e) => {
            return ScriptEnd::without_output(Outcome::FailedToStart(ExecError::Unreported {
                script: job.script.clone(),
                log: run_dir.join(LOG),
                error: e.to_string(),
            }));
        }
    };
    let outcome = match status.ended {
        Ended::Exited(c) => Outcome::Exited(c),
        Ended::Signaled(s) => Outcome::Signaled(s),
        Ended::TimedOut => Outcome::TimedOut,
        Ended::Cancelled => Outcome::Stopped(StopReason::Cancelled),
        Ended::FailedToStart(text) => Outcome::FailedToStart(ExecError::Relayed(text)),
    };
    let captured = |s: StreamStatus, path: &Path| Captured {
        head: match s.head.as_deref().map(crate::base64::decode) {
            Some(Ok(head)) => head,
            _ => read_head(
                path,
                job.head_bytes
                    .min(usize::try_from(s.total).unwrap_or(usize::MAX)),
            ),
        },
        total: s.total,
        truncated: s.truncated,
        write_error: s.write_error,
    };
    ScriptEnd {
        outcome,
        stdout: captured(status.stdout, &job.stdout),
        stderr: captured(status.stderr, &job.stderr),
    }
}

/// The first `limit` bytes of an output file (fewer where the disk refused the rest).
fn read_head(path: &Path, limit: usize) -> Vec<u8> {
    let mut head = Vec::new();
    let read = File::open(path).and_then(|f| f.take(limit as u64).read_to_end(&mut head));
    if let Err(e) = read {
        log::warn!("cannot read script output {}: {e}", path.display());
    }
    head
}

fn read_json<T: RunFile>(path: &Path) -> Result<T, ExecError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_RUN_FILE).read_to_end(&mut bytes))
        .map_err(|e| run_file("read", path, e))?;
    decode(&bytes, path)
}

/// `bytes` (the content of `path`, or the same sent on a pipe) as a `T`.
fn decode<T: RunFile>(bytes: &[u8], path: &Path) -> Result<T, ExecError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| run_file("parse", path, e))?;
    T::from_value(&value).ok_or_else(|| run_file("read", path, "missing or mistyped fields"))
}

fn encode<T: RunFile>(file: &T, path: &Path) -> Result<Vec<u8>, ExecError> {
    let value = file
        .to_value()
        .ok_or_else(|| run_file("write", path, "a path in it is not UTF-8"))?;
    serde_json::to_vec(&value).map_err(|e| run_file("encode", path, e))
}

fn run_file(action: &'static str, path: &Path, error: impl std::fmt::Display) -> ExecError {
    ExecError::RunFile {
        action,
        path: path.to_owned(),
        error: error.to_string(),
    }
}

fn now_ms() -> u64 {
    crate::timefmt::unix_millis(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_keeps_what_the_agent_reports_and_heads_come_from_the_files_or_the_status() {
        let dir = crate::state::testdir::TestDir::new("supervisor-status");
        let run_dir = dir.path();
        let (stdout, stderr) = (run_dir.join("stdout"), run_dir.join("stderr"));
        std::fs::write(&stdout, "before\nafter\n").unwrap();
        std::fs::write(&stderr, "oo").unwrap();
        let end = ScriptEnd {
            outcome: Outcome::Exited(3),
            stdout: Captured {
                head: b"ignored: the file has it".to_vec(),
                total: 13,
                truncated: false,
                write_error: None,
            },
            // The disk took only "oo": the reply's share travels in the status.
            stderr: Captured {
                head: b"oops\n".to_vec(),
                total: 5,
                truncated: true,
                write_error: Some("cannot write stderr: full".into()),
            },
        };
        let bytes = encode(&Status::of(&end), run_dir).unwrap();
        let job = Job {
            script: run_dir.join("_script.sh"),
            working_dir: None,
            stdout,
            stderr,
            deadline_ms: 0,
            file_bytes: 1 << 20,
            head_bytes: 8,
        };
        std::fs::write(run_dir.join(STATUS), &bytes).unwrap();
        let from_file = read_end(run_dir, &job, None, false);
        std::fs::remove_file(run_dir.join(STATUS)).unwrap();
        let from_pipe = read_end(run_dir, &job, Some(bytes), false);
        for read in [from_file, from_pipe] {
            assert_eq!(read.outcome, Outcome::Exited(3));
            assert_eq!(read.stdout.head, b"before\na");
            assert_eq!(read.stderr.head, b"oops\n");
            assert_eq!((read.stdout.total, read.stderr.truncated), (13, true));
            assert_eq!(read.stderr.write_error, end.stderr.write_error);
        }
    }

    #[test]
    fn no_status_is_unreported_and_names_the_log_unless_the_agent_cancelled() {
        let dir = crate::state::testdir::TestDir::new("supervisor-nostatus");
        let job = Job {
            script: dir.path().join("_script.sh"),
            working_dir: None,
            stdout: dir.path().join("stdout"),
            stderr: dir.path().join("stderr"),
            deadline_ms: 0,
            file_bytes: 1 << 20,
            head_bytes: 8,
        };
        let cancelled = read_end(dir.path(), &job, None, true);
        assert_eq!(cancelled.outcome, Outcome::Stopped(StopReason::Cancelled));
        match read_end(dir.path(), &job, None, false).outcome {
            Outcome::FailedToStart(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("supervisor.log") && text.contains("_script.sh"),
                    "{text}"
                );
            }
            other => panic!("expected FailedToStart, got {other:?}"),
        }
    }

    #[test]
    fn a_supervisor_gone_without_a_status_is_unknown() {
        let dir = crate::state::testdir::TestDir::new("supervisor-gone");
        let job = Job {
            script: dir.path().join("_script.sh"),
            working_dir: None,
            stdout: dir.path().join("stdout"),
            stderr: dir.path().join("stderr"),
            deadline_ms: 0,
            file_bytes: 1 << 20,
            head_bytes: 8,
        };
        std::fs::write(dir.path().join(JOB), encode(&job, dir.path()).unwrap()).unwrap();
        // Our own pid with another start time: a recycled pid, not the supervisor.
        let me = Pid::from_raw(std::process::id() as i32);
        let sup = Supervised {
            pid: me.as_raw(),
            start_time: process::start_time(me).unwrap() + 1,
            run_dir: dir.path().to_owned(),
        };
        assert_eq!(reattach(&sup, &StopToken::new()), None);
        std::fs::write(dir.path().join("stdout"), "done\n").unwrap();
        let status = Status {
            ended: Ended::TimedOut,
            stdout: StreamStatus {
                total: 5,
                truncated: false,
                write_error: None,
                head: None,
            },
            stderr: StreamStatus {
                total: 0,
                truncated: false,
                write_error: None,
                head: None,
            },
        };
        std::fs::write(
            dir.path().join(STATUS),
            encode(&status, dir.path()).unwrap(),
        )
        .unwrap();
        let end = reattach(&sup, &StopToken::new()).expect("the status says how it ended");
        assert_eq!(
            (end.outcome, end.stdout.head),
            (Outcome::TimedOut, b"done\n".to_vec())
        );
    }
}
