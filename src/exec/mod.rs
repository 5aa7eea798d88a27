//! Runs one script step: `sh <script>` in its own process group, stdout/stderr through pipes into
//! capped files ([`capture`]), ended by exit, timeout, cancel or shutdown (the whole group gets
//! SIGKILL). In the agent, the script runs so under a [`supervisor`] process that outlives the
//! agent; a shutdown then leaves it running.
//!
//! A helper thread blocks until the shell exits (leaving it unreaped, so its group id stays
//! reserved) and reports through the step's `StopToken`, whose condvar also wakes on `stop()`; the
//! runner sleeps on that condvar until the deadline. No polling.

pub mod capture;
pub mod supervisor;

pub use capture::Captured;
pub use supervisor::Supervised;

use crate::sync::{lock, wait, wait_until};
use crate::sys::{self, Pid, Signal};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Why a running step was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    Shutdown,
}

/// Shared between the engine (which may stop a step) and the step's runner. Works with no process
/// attached (a queued job is stopped before it starts) and across the steps of one job.
#[derive(Clone, Default)]
pub struct StopToken {
    inner: Arc<(Mutex<Option<StopReason>>, Condvar)>,
    /// The supervisor of the script started last, for the runner's `on_start` to record.
    supervised: Arc<Mutex<Option<Supervised>>>,
}

impl StopToken {
    pub fn new() -> StopToken {
        StopToken::default()
    }

    /// Requests a stop; the first reason given wins. Wakes a runner that is waiting.
    pub fn stop(&self, reason: StopReason) {
        lock(&self.inner.0).get_or_insert(reason);
        self.inner.1.notify_all();
    }

    pub fn reason(&self) -> Option<StopReason> {
        *lock(&self.inner.0)
    }

    /// Waits up to `limit` for a stop; its reason, or `None` when the time passed first.
    pub fn wait_for_stop(&self, limit: Duration) -> Option<StopReason> {
        let deadline = Instant::now() + limit;
        let mut reason = lock(&self.inner.0);
        while reason.is_none() {
            let (guard, timed_out) = crate::sync::wait_until(&self.inner.1, reason, deadline);
            reason = guard;
            if timed_out {
                break;
            }
        }
        *reason
    }

    /// The supervisor of the script this token's job started last, if it had one.
    pub fn supervised(&self) -> Option<Supervised> {
        lock(&self.supervised).clone()
    }

    fn set_supervised(&self, supervised: Supervised) {
        *lock(&self.supervised) = Some(supervised);
    }

    /// Sleeps until `exited` is set, whatever stop is requested.
    fn wait_exited(&self, exited: &AtomicBool) {
        let mut guard = lock(&self.inner.0);
        while !exited.load(Ordering::SeqCst) {
            guard = wait(&self.inner.1, guard);
        }
    }

    /// Sets `exited` under the token's lock, so a runner between its check and its wait cannot
    /// miss the wake-up.
    fn mark_exited(&self, exited: &AtomicBool) {
        let _guard = lock(&self.inner.0);
        exited.store(true, Ordering::SeqCst);
        self.inner.1.notify_all();
    }

    /// Sleeps until `exited` is set, a stop is requested or `deadline` passes (None: no deadline).
    /// An exit wins over a stop requested at the same moment: the script did finish.
    fn wait_end(&self, exited: &AtomicBool, deadline: Option<Instant>) -> End {
        let mut reason = lock(&self.inner.0);
        loop {
            if exited.load(Ordering::SeqCst) {
                return End::Exited;
            }
            if let Some(r) = *reason {
                return End::Stopped(r);
            }
            reason = match deadline {
                None => wait(&self.inner.1, reason),
                // Checked before the wait, not after it: an exit or stop at the deadline wins.
                Some(d) if Instant::now() >= d => return End::TimedOut,
                Some(d) => wait_until(&self.inner.1, reason, d).0,
            };
        }
    }
}

/// One script to run. Its directory holds the supervisor's files (`job.json`, `status.json`,
/// `supervisor.log`): one script per directory.
pub struct ScriptSpec<'a> {
    pub script: &'a Path,
    pub working_dir: Option<&'a Path>,
    /// Added to (and overriding) the agent's own environment.
    pub env: &'a [(String, String)],
    /// Must differ from `stderr`: each is created (mode 0600) or truncated on its own.
    pub stdout: &'a Path,
    pub stderr: &'a Path,
    pub timeout: Duration,
    /// How much of each stream is kept on disk and in memory.
    pub limits: capture::Limits,
}

/// How a script ended and what it wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptEnd {
    pub outcome: Outcome,
    pub stdout: Captured,
    pub stderr: Captured,
}

impl ScriptEnd {
    fn without_output(outcome: Outcome) -> ScriptEnd {
        ScriptEnd {
            outcome,
            stdout: Captured::default(),
            stderr: Captured::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The shell's exit code. A missing script is reported by sh itself (2 from dash, 127 from
    /// bash).
    Exited(i32),
    /// Killed by a signal nobody here sent.
    Signaled(i32),
    TimedOut,
    Stopped(StopReason),
    FailedToStart(ExecError),
}

/// Why a script did not run or could not be followed to its end; shown in the step's output.
/// I/O causes are kept as their text: an `Outcome` is compared and cloned, an `io::Error` is not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("cannot create output file {} for script {}: {error}", path.display(), script.display())]
    CreateOutput {
        path: PathBuf,
        script: PathBuf,
        error: String,
    },
    #[error("cannot run script {}: {error}", script.display())]
    Pump { script: PathBuf, error: String },
    #[error("cannot start script {} with sh in working directory {dir}: {error}", script.display())]
    Spawn {
        script: PathBuf,
        dir: String,
        error: String,
    },
    #[error("script {}: std gave no output pipes", script.display())]
    NoPipes { script: PathBuf },
    #[error("cannot start a thread to watch script {} (it was killed): {error}", script.display())]
    Unwatched { script: PathBuf, error: String },
    #[error("script {} ended with an unexpected status {status}", script.display())]
    OddStatus { script: PathBuf, status: String },
    #[error("cannot collect the exit status of script {}: {error}", script.display())]
    NoStatus { script: PathBuf, error: String },
    #[error("cannot {action} {}: {error}", path.display())]
    RunFile {
        action: &'static str,
        path: PathBuf,
        error: String,
    },
    #[error("cannot start the supervisor {} for script {}: {error}", exe.display(), script.display())]
    Supervisor {
        exe: PathBuf,
        script: PathBuf,
        error: String,
    },
    #[error(
        "the supervisor of script {} ended without saying how the script ended ({error}); see {}",
        script.display(),
        log.display()
    )]
    Unreported {
        script: PathBuf,
        log: PathBuf,
        error: String,
    },
    /// The supervisor's own text of why the script did not start.
    #[error("{0}")]
    Relayed(String),
}

/// How the wait ended, before the child is reaped.
enum End {
    Exited,
    TimedOut,
    Stopped(StopReason),
    /// No helper thread could be started; the group has been killed.
    Unwatched(std::io::Error),
}

/// Runs the script to its end: under a supervisor once [`supervisor::enable`] was called
/// (`on_start` gets the supervisor's pid; a `Shutdown` stop leaves it running and returns at
/// once), else in this process ([`run_here`]).
pub fn run_script(
    spec: &ScriptSpec<'_>,
    stop: &StopToken,
    on_start: &mut dyn FnMut(Pid),
) -> ScriptEnd {
    if let Some(reason) = stop.reason() {
        return ScriptEnd::without_output(Outcome::Stopped(reason));
    }
    match supervisor::exe() {
        Some(exe) => supervisor::run(exe, spec, stop, on_start),
        None => run_here(spec, stop, on_start),
    }
}

/// Runs the script in this process. `on_start` gets the process-group id right after the spawn.
///
/// On timeout or stop the whole group gets SIGKILL (also when the shell itself has just exited
/// and only background children remain); the shell is always reaped before returning. Background
/// children still running after a normal exit are left alone (their output is still drained).
fn run_here(spec: &ScriptSpec<'_>, stop: &StopToken, on_start: &mut dyn FnMut(Pid)) -> ScriptEnd {
    let (mut child, capture) = match start(spec) {
        Ok(started) => started,
        Err(message) => return ScriptEnd::without_output(Outcome::FailedToStart(message)),
    };
    // pid_t values always fit in i32; std hands them out as u32.
    let pid = Pid::from_raw(child.id() as i32);
    on_start(pid);
    let end = supervise(pid, stop, spec.timeout);
    let outcome = collect(&mut child, end, spec.script);
    let [stdout, stderr] = capture.settle();
    ScriptEnd {
        outcome,
        stdout,
        stderr,
    }
}

/// Creates the output files, spawns the shell and hands its pipes to the output pump.
fn start(spec: &ScriptSpec<'_>) -> Result<(Child, Arc<capture::Capture>), ExecError> {
    let stdout = create_output(spec.stdout, spec.script)?;
    let stderr = create_output(spec.stderr, spec.script)?;
    let pump = capture::pump().map_err(|e| ExecError::Pump {
        script: spec.script.to_owned(),
        error: e.to_string(),
    })?;
    let mut child = spawn(spec)?;
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ExecError::NoPipes {
            script: spec.script.to_owned(),
        });
    };
    let pipes = [
        (out.into(), stdout, spec.stdout.to_owned()),
        (err.into(), stderr, spec.stderr.to_owned()),
    ];
    Ok((child, pump.watch(pipes, spec.limits)))
}

fn spawn(spec: &ScriptSpec<'_>) -> Result<Child, ExecError> {
    // `sh <script>` reads the file. Upstream's `sh -c <script>` makes sh exec the file (and, as
    // it has no #! line, start a second sh), which fails with ETXTBSY when another worker's
    // fork briefly holds a write fd to a script being created: a real race under load.
    let mut cmd = sys::child::command("sh");
    cmd.arg(spec.script)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = spec.working_dir {
        cmd.current_dir(dir);
    }
    cmd.spawn().map_err(|e| ExecError::Spawn {
        script: spec.script.to_owned(),
        dir: spec
            .working_dir
            .map_or_else(|| ".".into(), |d| d.display().to_string()),
        error: e.to_string(),
    })
}

fn create_output(path: &Path, script: &Path) -> Result<File, ExecError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ExecError::CreateOutput {
            path: path.to_owned(),
            script: script.to_owned(),
            error: e.to_string(),
        })
}

/// Waits for the end of the step and kills the group unless the shell exited by itself. Returns
/// once the helper thread has seen the shell die (the shell is then a zombie, not yet reaped).
fn supervise(pid: Pid, stop: &StopToken, timeout: Duration) -> End {
    let exited = AtomicBool::new(false);
    let deadline = Instant::now().checked_add(timeout);
    thread::scope(|scope| {
        let waiter = thread::Builder::new()
            .name(format!("wait-{}", pid.as_raw()))
            .spawn_scoped(scope, || {
                if let Err(e) = sys::wait_for_exit(pid) {
                    log::error!("{e}; treating the script as ended");
                }
                stop.mark_exited(&exited);
            });
        let end = match waiter {
            Ok(_) => stop.wait_end(&exited, deadline),
            Err(e) => End::Unwatched(e),
        };
        if !matches!(end, End::Exited) {
            kill(pid);
        }
        end
    })
}

fn kill(group: Pid) {
    match sys::kill_group(group, Signal::Kill) {
        Ok(()) => {}
        Err(e) if sys::is_gone(&e) => {}
        Err(e) => log::error!("{e}; processes of the script may be left running"),
    }
}

/// Reaps the shell and turns the way the wait ended into the step's outcome.
fn collect(child: &mut Child, end: End, script: &Path) -> Outcome {
    let status = child.wait();
    let outcome = match end {
        End::Exited => return exit_outcome(status, script),
        End::TimedOut => Outcome::TimedOut,
        End::Stopped(reason) => Outcome::Stopped(reason),
        End::Unwatched(e) => Outcome::FailedToStart(ExecError::Unwatched {
            script: script.to_owned(),
            error: e.to_string(),
        }),
    };
    if let Err(e) = status {
        log::warn!(
            "cannot reap the killed shell of script {}: {e}",
            script.display()
        );
    }
    outcome
}

fn exit_outcome(status: std::io::Result<ExitStatus>, script: &Path) -> Outcome {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => Outcome::Exited(code),
            (None, Some(sig)) => Outcome::Signaled(sig),
            (None, None) => Outcome::FailedToStart(ExecError::OddStatus {
                script: script.to_owned(),
                status: s.to_string(),
            }),
        },
        Err(e) => Outcome::FailedToStart(ExecError::NoStatus {
            script: script.to_owned(),
            error: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    /// A scratch directory under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir()
                .join(format!("ssm-lite-exec-{tag}-{}", crate::random::uuid_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        /// Writes `_script.sh` (0700, no shebang, as the engine writes it).
        fn script(&self, body: &str) -> PathBuf {
            let path = self.0.join("_script.sh");
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o700)
                .open(&path);
            std::io::Write::write_all(file.as_mut().unwrap(), body.as_bytes()).unwrap();
            path
        }

        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.0.join(name)).unwrap()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    struct Run<'a> {
        scratch: &'a Scratch,
        script: PathBuf,
        working_dir: Option<PathBuf>,
        env: Vec<(String, String)>,
        timeout: Duration,
        limits: capture::Limits,
    }

    impl<'a> Run<'a> {
        fn new(scratch: &'a Scratch, body: &str) -> Run<'a> {
            let script = scratch.script(body);
            Run {
                scratch,
                script,
                working_dir: None,
                env: Vec::new(),
                timeout: Duration::from_secs(30),
                limits: capture::Limits {
                    file_bytes: 1 << 20,
                    head_bytes: 1000,
                },
            }
        }

        /// Runs to the end; returns the outcome.
        fn go(&self, stop: &StopToken, on_start: &mut dyn FnMut(Pid)) -> Outcome {
            self.end(stop, on_start).outcome
        }

        /// Runs to the end; returns the outcome and what was captured.
        fn end(&self, stop: &StopToken, on_start: &mut dyn FnMut(Pid)) -> ScriptEnd {
            self.end_under(None, stop, on_start)
        }

        /// [`Run::end`] under the supervisor `supervisor` (`None`: in this process).
        fn end_under(
            &self,
            supervisor: Option<&Path>,
            stop: &StopToken,
            on_start: &mut dyn FnMut(Pid),
        ) -> ScriptEnd {
            let (stdout, stderr) = (self.scratch.0.join("stdout"), self.scratch.0.join("stderr"));
            let spec = ScriptSpec {
                script: &self.script,
                working_dir: self.working_dir.as_deref(),
                env: &self.env,
                stdout: &stdout,
                stderr: &stderr,
                timeout: self.timeout,
                limits: self.limits,
            };
            match supervisor {
                Some(exe) => supervisor::run(exe, &spec, stop, on_start),
                None => run_script(&spec, stop, on_start),
            }
        }

        fn outcome(&self) -> (Outcome, Pid) {
            let mut group = None;
            let outcome = self.go(&StopToken::new(), &mut |pid| group = Some(pid));
            (outcome, group.expect("on_start was not called"))
        }
    }

    #[test]
    fn a_supervisor_that_cannot_start_leaves_the_script_to_run_here() {
        let scratch = Scratch::new("nosupervisor");
        let run = Run::new(&scratch, "echo ran; exit 3");
        let missing = scratch.0.join("no-such-ssm-lite");
        let mut started = None;
        let end = run.end_under(Some(&missing), &StopToken::new(), &mut |pid| {
            started = Some(pid)
        });
        assert_eq!(end.outcome, Outcome::Exited(3), "{:?}", end.outcome);
        assert_eq!(end.stdout.head, b"ran\n");
        assert!(
            started.is_some(),
            "on_start was called for the script's group"
        );
    }

    /// Polls `cond` (every 20 ms, for up to 10 s). Only for facts the kernel signals to nobody but
    /// the parent: killed orphans stay zombies until init reaps them, which can take seconds.
    fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "still not true after 10 s: {what}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when `pid` no longer runs: gone, a zombie, or reused by a process that is not `sleep`.
    fn sleep_is_dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => !stat.contains("(sleep) ") || stat.contains(") Z "),
        }
    }

    #[test]
    fn stdout_and_stderr_land_in_their_own_files_and_the_exit_code_is_kept() {
        let s = Scratch::new("out");
        std::fs::write(s.0.join("stdout"), "old content that must be truncated\n").unwrap();
        let run = Run::new(&s, "echo to-out\necho to-err >&2\nexit 2\n");
        let (outcome, group) = run.outcome();
        assert_eq!(outcome, Outcome::Exited(2));
        assert_eq!(s.read("stdout"), "to-out\n");
        assert_eq!(s.read("stderr"), "to-err\n");
        let mode = std::fs::metadata(s.0.join("stderr")).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert!(
            !sys::group_exists(group),
            "the reaped shell was the group's only process"
        );
    }

    #[test]
    fn output_far_over_the_cap_is_drained_but_only_the_cap_is_kept() {
        let s = Scratch::new("cap");
        let mut run = Run::new(
            &s,
            "yes 0123456789 | head -c 20000000\necho done >&2\nexit 3\n",
        );
        run.limits.file_bytes = 1 << 20;
        let end = run.end(&StopToken::new(), &mut |_| {});
        assert_eq!(end.outcome, Outcome::Exited(3), "{:?}", end.stderr);
        let kept = std::fs::read(s.0.join("stdout")).unwrap();
        assert!(kept.len() as u64 <= 1 << 20, "{} bytes kept", kept.len());
        assert!(kept.starts_with(b"0123456789\n0123456789\n"));
        let tail = String::from_utf8_lossy(&kept[kept.len() - 300..]).into_owned();
        assert!(tail.contains("output truncated"), "{tail}");
        assert_eq!(end.stdout.total, 20_000_000);
        assert!(end.stdout.truncated && end.stdout.write_error.is_none());
        assert_eq!(
            end.stdout.head,
            b"0123456789\n".repeat(100)[..1000].to_vec()
        );
        assert_eq!(
            (end.stderr.head.as_slice(), end.stderr.total),
            (&b"done\n"[..], 5)
        );
        assert_eq!(s.read("stderr"), "done\n");
    }

    #[test]
    fn a_full_disk_stops_the_file_not_the_script() {
        let s = Scratch::new("enospc");
        let run = Run::new(
            &s,
            "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done\n",
        );
        let (full, stderr) = (Path::new("/dev/full"), s.0.join("stderr"));
        let spec = ScriptSpec {
            script: &run.script,
            working_dir: None,
            env: &[],
            stdout: full,
            stderr: &stderr,
            timeout: Duration::from_secs(30),
            limits: run.limits,
        };
        let end = run_script(&spec, &StopToken::new(), &mut |_| {});
        assert_eq!(end.outcome, Outcome::Exited(0));
        let error = end.stdout.write_error.expect("the write error is reported");
        assert!(
            error.contains("/dev/full") && error.contains("No space left on device"),
            "{error}"
        );
        assert!(end.stdout.head.starts_with(b"line 0\nline 1\n"));
        assert_eq!(
            end.stdout.head.len(),
            1000,
            "the reply's share is kept in memory"
        );
        assert!(end.stdout.total > 10_000);
    }

    #[test]
    fn a_background_child_holding_the_output_does_not_hold_the_step() {
        let s = Scratch::new("linger");
        let run = Run::new(&s, "sleep 60 &\necho $! >&2\necho quick\n");
        let started = Instant::now();
        let end = run.end(&StopToken::new(), &mut |_| {});
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(end.outcome, Outcome::Exited(0));
        assert_eq!(end.stdout.head, b"quick\n");
        let background: i32 = String::from_utf8_lossy(&end.stderr.head)
            .trim()
            .parse()
            .unwrap();
        // `$!` can name the forked shell before it has exec'd `sleep`: wait for the exec. A
        // child the step had killed would never get there.
        eventually("the background child is left alone and runs sleep", || {
            !sleep_is_dead(background)
        });
        let _ = Command::new("kill")
            .arg("-9")
            .arg(background.to_string())
            .status();
        eventually("background sleep gone", || sleep_is_dead(background));
    }

    #[test]
    fn spec_env_is_added_to_and_overrides_the_agents_env() {
        let s = Scratch::new("env");
        let path = format!("{}:/spec-marker", std::env::var("PATH").unwrap_or_default());
        let mut run = Run::new(&s, "echo \"$SSM_LITE_TEST|$PATH|$HOME\"\n");
        run.env = vec![
            ("SSM_LITE_TEST".into(), "from spec".into()),
            ("PATH".into(), path.clone()),
        ];
        assert_eq!(run.outcome().0, Outcome::Exited(0));
        let home = std::env::var("HOME").unwrap_or_default();
        assert_eq!(s.read("stdout"), format!("from spec|{path}|{home}\n"));
    }

    #[test]
    fn working_dir_is_honoured_and_defaults_to_the_agents_cwd() {
        let s = Scratch::new("cwd");
        let wd = s.0.join("wd");
        std::fs::create_dir(&wd).unwrap();
        let mut run = Run::new(&s, "pwd -P\n");
        assert_eq!(run.outcome().0, Outcome::Exited(0));
        let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
        assert_eq!(s.read("stdout"), format!("{}\n", cwd.display()));

        run.working_dir = Some(wd.clone());
        assert_eq!(run.outcome().0, Outcome::Exited(0));
        assert_eq!(
            s.read("stdout"),
            format!("{}\n", wd.canonicalize().unwrap().display())
        );
    }

    #[test]
    fn timeout_kills_the_whole_group_and_reaps_the_shell() {
        let s = Scratch::new("timeout");
        let mut run = Run::new(&s, "sleep 60 &\necho $!\nsleep 60\nwait\n");
        run.timeout = Duration::from_secs(1);
        let started = Instant::now();
        let (outcome, group) = run.outcome();
        let took = started.elapsed();
        assert_eq!(outcome, Outcome::TimedOut);
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(3),
            "{took:?}"
        );
        let background: i32 = s.read("stdout").trim().parse().unwrap();
        eventually("background sleep killed", || sleep_is_dead(background));
        eventually("process group gone", || !sys::group_exists(group));
    }

    #[test]
    fn stop_from_another_thread_ends_a_running_script_promptly() {
        let s = Scratch::new("cancel");
        let fifo = s.0.join("ready");
        assert!(
            Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let mut run = Run::new(&s, "sleep 60 &\necho $! > \"$READY\"\nwait\n");
        run.env = vec![("READY".into(), fifo.display().to_string())];
        run.timeout = Duration::from_secs(60);
        let token = StopToken::new();
        let stopper = {
            let token = token.clone();
            // Opening the fifo blocks until the script writes to it, i.e. until it really runs.
            thread::spawn(move || {
                let background = std::fs::read_to_string(fifo).unwrap();
                token.stop(StopReason::Cancelled);
                background.trim().parse::<i32>().unwrap()
            })
        };
        let started = Instant::now();
        let mut group = None;
        let outcome = run.go(&token, &mut |pid| group = Some(pid));
        assert_eq!(outcome, Outcome::Stopped(StopReason::Cancelled));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let background = stopper.join().unwrap();
        eventually("background sleep killed", || sleep_is_dead(background));
        eventually("process group gone", || !sys::group_exists(group.unwrap()));
    }

    #[test]
    fn a_stop_before_the_start_spawns_nothing() {
        let s = Scratch::new("prestop");
        let run = Run::new(&s, "echo ran\n");
        let token = StopToken::new();
        token.stop(StopReason::Shutdown);
        let outcome = run.go(&token, &mut |_| panic!("nothing may be spawned"));
        assert_eq!(outcome, Outcome::Stopped(StopReason::Shutdown));
        assert!(!s.0.join("stdout").exists());
    }

    #[test]
    fn the_first_stop_reason_wins_and_clones_share_it() {
        let token = StopToken::new();
        assert_eq!(token.reason(), None);
        let clone = token.clone();
        clone.stop(StopReason::Cancelled);
        token.stop(StopReason::Shutdown);
        assert_eq!(token.reason(), Some(StopReason::Cancelled));
        assert_eq!(clone.reason(), Some(StopReason::Cancelled));
    }

    #[test]
    fn a_signal_from_elsewhere_is_reported_as_signaled() {
        let s = Scratch::new("signal");
        // dash runs the script in a forked child, so `kill -9 $$` would only make sh exit 137;
        // the group leader (pid = field 5 of /proc/self/stat, the pgrp) is the process we watch.
        let (outcome, _) = Run::new(&s, "set -- $(cat /proc/$$/stat)\nkill -9 \"$5\"\n").outcome();
        assert_eq!(outcome, Outcome::Signaled(9));
    }

    #[test]
    fn a_missing_script_is_reported_by_sh() {
        let s = Scratch::new("noscript");
        let mut run = Run::new(&s, "");
        run.script = s.0.join("missing.sh");
        assert!(matches!(run.outcome().0, Outcome::Exited(c) if c != 0));
        assert!(
            s.read("stderr").contains("missing.sh"),
            "{}",
            s.read("stderr")
        );
    }

    #[test]
    fn a_missing_working_dir_or_output_dir_fails_to_start() {
        let s = Scratch::new("nodir");
        let mut run = Run::new(&s, "echo ran\n");
        run.working_dir = Some(s.0.join("absent"));
        let script = run.script.display().to_string();
        match run.go(&StopToken::new(), &mut |_| panic!("nothing may be spawned")) {
            Outcome::FailedToStart(e) => {
                let m = e.to_string();
                assert!(m.contains(&script) && m.contains("absent"), "{m}")
            }
            other => panic!("expected FailedToStart, got {other:?}"),
        }

        let (stdout, stderr) = (s.0.join("absent/stdout"), s.0.join("stderr"));
        let spec = ScriptSpec {
            script: &run.script,
            working_dir: None,
            env: &[],
            stdout: &stdout,
            stderr: &stderr,
            timeout: Duration::from_secs(5),
            limits: run.limits,
        };
        match run_script(&spec, &StopToken::new(), &mut |_| {
            panic!("nothing may be spawned")
        })
        .outcome
        {
            Outcome::FailedToStart(e) => {
                let m = e.to_string();
                assert!(m.contains(&script) && m.contains("absent/stdout"), "{m}")
            }
            other => panic!("expected FailedToStart, got {other:?}"),
        }
    }
}
