//! Runs one document step and turns what happened into a `PluginResult`: the script file, the
//! process, exit-code semantics (§3.5, §3.6, §9.1) and the output fields (§2.8).

use super::output::{Destination, OutputCleanup, OutputLocation, RunFiles, Upload};
use super::payload::AssociationRun;
use super::reply::{
    Head, OUTPUT_CAPACITY, PluginResult, STREAM_CAPACITY, Status, truncate_output, truncate_stream,
};
use super::rundocument;
use super::sources::Sources;
use crate::association::refresh;
use crate::document::{ShellScriptInput, Step, shell_script_input};
use crate::exec::capture::Limits;
use crate::exec::{
    Captured, Outcome, ScriptEnd, ScriptSpec, StopReason, StopToken, Supervised, run_script,
};
use crate::state::{StateError, ensure_private_dir, err as state_err, step_dir_name};
use crate::sys::Pid;
use crate::timefmt::iso8601_ms;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub const SHELL_PLUGIN: &str = "aws:runShellScript";
/// Exit codes with a meaning to the agent (§3.5, §3.6).
pub const EXIT_REBOOT: i32 = 194;
pub const EXIT_SUCCESS_AND_STOP: i32 = 168;
pub const EXIT_FAILURE_AND_STOP: i32 = 169;
pub const EXIT_KILLED: i32 = 137;

/// Everything a step needs from its command.
pub struct StepEnv<'a> {
    pub command_dir: &'a Path,
    /// Environment added to the agent's own for every script (SSM_COMMAND_ID, AWS_SSM_*).
    pub env: &'a [(String, String)],
    pub stop: &'a StopToken,
    /// Most bytes of each stream's output file (`Ssm.RunCommandLogsMaxStepOutputMiB`).
    pub max_output_bytes: u64,
    /// When the output files are removed once the result is made (`Ssm.PluginLocalOutputCleanup`).
    pub cleanup: OutputCleanup,
    /// Where each run's output goes besides its files (S3, CloudWatch Logs).
    pub outputs: &'a [Box<dyn Destination>],
    /// What plugins fetch while they run (SSM documents, S3 objects).
    pub sources: &'a Sources,
    /// The association when the command is a State Manager run (`aws:softwareInventory` runs
    /// only there).
    pub association: Option<&'a AssociationRun>,
}

/// One finished run of a plugin over one property set, before it is merged and rendered.
pub(super) struct Run {
    pub(super) status: Status,
    pub(super) code: i32,
    pub(super) stdout: Head,
    pub(super) stderr: Head,
    /// Where the run's output went in S3 (the reply names it).
    pub(super) s3: Option<OutputLocation>,
}

impl Run {
    fn succeeded(stdout: String) -> Run {
        Run {
            status: Status::Success,
            code: 0,
            stdout: Head::whole(stdout.as_bytes()),
            stderr: Head::default(),
            s3: None,
        }
    }

    pub(super) fn failed(message: String) -> Run {
        Run {
            status: Status::Failed,
            code: 1,
            stdout: Head::default(),
            stderr: Head::whole(message.as_bytes()),
            s3: None,
        }
    }
}

/// A result that needs no process: skipped, failed before start, cancelled before start.
pub fn without_running(step: &Step, status: Status, code: i32, output: &str) -> PluginResult {
    let now = iso8601_ms(SystemTime::now());
    let (out, err) = if status == Status::Failed {
        ("", output)
    } else {
        (output, "")
    };
    PluginResult {
        plugin_id: step.id.clone(),
        plugin_name: step.plugin.clone(),
        status,
        code,
        output: output.to_owned(),
        standard_output: out.to_owned(),
        standard_error: err.to_owned(),
        start: now.clone(),
        end: now,
        s3: None,
    }
}

/// A step that could not start because the command was cancelled or the agent is stopping
/// (upstream `MarkAsCancelled` / `MarkAsShutdown`: Cancelled, code 1).
pub fn stopped_before_start(step: &Step, reason: StopReason) -> PluginResult {
    let why = match reason {
        StopReason::Cancelled => "the command was cancelled before this step started",
        StopReason::Shutdown => "the agent stopped before this step started",
    };
    without_running(step, Status::Cancelled, 1, why)
}

/// Runs every property set of a runnable step; `on_start` sees each process group.
pub fn run_step(step: &Step, env: &StepEnv<'_>, on_start: &mut dyn FnMut(Pid)) -> PluginResult {
    run_nested(step, env, on_start, 0)
}

/// [`run_step`] for a step of a document `depth` levels of `aws:runDocument` down (0: the
/// command's own document).
pub(super) fn run_nested(
    step: &Step,
    env: &StepEnv<'_>,
    on_start: &mut dyn FnMut(Pid),
    depth: usize,
) -> PluginResult {
    let start = iso8601_ms(SystemTime::now());
    let mut merged: Option<Run> = None;
    for (i, inputs) in step.inputs.iter().enumerate() {
        if let Some(reason) = env.stop.reason() {
            let r = stopped_before_start(step, reason);
            merged = Some(merge(
                merged,
                Run {
                    status: r.status,
                    code: r.code,
                    stdout: Head::default(),
                    stderr: Head::default(),
                    s3: None,
                },
            ));
            break;
        }
        let run = match step.plugin.as_str() {
            SHELL_PLUGIN => match shell_script_input(inputs) {
                Ok(input) => run_shell(step, i, &input, env, on_start),
                Err(message) => Run::failed(message),
            },
            super::download::PLUGIN => in_agent(step, i, env, || {
                match super::download::run(inputs, env.command_dir, env.sources) {
                    Ok(stdout) => Run::succeeded(stdout),
                    Err(message) => Run::failed(message),
                }
            }),
            rundocument::PLUGIN => rundocument::run(step, i, inputs, env, on_start, depth),
            super::package::PLUGIN => in_agent(step, i, env, || {
                super::package::run(step, i, inputs, env, on_start)
            }),
            crate::inventory::PLUGIN => in_agent(step, i, env, || {
                let Some(inventory) = env.sources.inventory.as_deref() else {
                    return Run::failed(
                        "this agent has no usable ssm endpoint to report inventory to".into(),
                    );
                };
                match inventory.run(inputs, env.association, env.stop) {
                    Ok(stdout) => Run::succeeded(stdout),
                    Err(message) => Run::failed(message),
                }
            }),
            crate::update::PLUGIN => in_agent(step, i, env, || {
                let command_id = env.env.iter().find(|(k, _)| k == "SSM_COMMAND_ID");
                let r = crate::update::run(inputs, command_id.map_or("", |(_, v)| v), env.sources);
                Run {
                    code: i32::from(r.status == Status::Failed),
                    status: r.status,
                    stdout: Head::whole(r.stdout.as_bytes()),
                    stderr: Head::whole(r.stderr.as_bytes()),
                    s3: None,
                }
            }),
            refresh::PLUGIN => in_agent(step, i, env, || {
                match refresh::run(inputs, env.sources.associations.as_deref()) {
                    Ok(stdout) => Run::succeeded(stdout),
                    Err(message) => Run::failed(message),
                }
            }),
            _ => Run::failed(format!(
                "Plugin with name {} not found. Step name: {}",
                step.plugin, step.id
            )),
        };
        merged = Some(merge(merged, run));
    }
    let run = merged.unwrap_or(Run {
        status: Status::Success,
        code: 0,
        stdout: Head::default(),
        stderr: Head::default(),
        s3: None,
    });
    render(step, run, start)
}

/// Upstream `DefaultIOHandler.Merge`: each stream joined to the next by `\n` once it has output;
/// the first non-zero exit code stays.
fn merge(acc: Option<Run>, next: Run) -> Run {
    let Some(mut acc) = acc else { return next };
    acc.status = acc.status.merge(next.status);
    if acc.code == 0 {
        acc.code = next.code;
    }
    // Upstream's `res.StepName` is the last property set's.
    acc.s3 = next.s3.or(acc.s3);
    for (a, b) in [
        (&mut acc.stdout, next.stdout),
        (&mut acc.stderr, next.stderr),
    ] {
        if a.len > 0 {
            a.push(b"\n");
        }
        a.append(&b);
    }
    acc
}

/// `output` is made from the streams as the plugin left them; only then do the control-flow
/// lines of upstream `runpluginutil.go` join `standardOutput`/`standardError` (§3.6), in the
/// reply only: upstream never writes them to the output files.
fn render(step: &Step, run: Run, start: String) -> PluginResult {
    let mut stdout = run.stdout;
    let mut stderr = if run.code == EXIT_SUCCESS_AND_STOP {
        Head::default()
    } else {
        run.stderr
    };
    let output = truncate_output(&stdout, &stderr, OUTPUT_CAPACITY);
    if let Some(line) = control_flow_line(step, run.status, run.code) {
        stdout.push(line.as_bytes());
        if run.code != EXIT_SUCCESS_AND_STOP {
            stderr.push(line.as_bytes());
        }
    }
    PluginResult {
        plugin_id: step.id.clone(),
        plugin_name: step.plugin.clone(),
        status: run.status,
        code: run.code,
        output,
        standard_output: truncate_stream(&stdout),
        standard_error: truncate_stream(&stderr),
        start,
        end: iso8601_ms(SystemTime::now()),
        s3: run.s3,
    }
}

/// Upstream's words, with their leading `\n` whatever precedes them, for an exit code or an
/// `onFailure` that stops the document (168 clears stderr, so it gains nothing there).
fn control_flow_line(step: &Step, status: Status, code: i32) -> Option<&'static str> {
    match code {
        EXIT_SUCCESS_AND_STOP => Some(
            "\nStep exited with code 168. Therefore, marking step as succeeded. Further document steps will be skipped.",
        ),
        EXIT_FAILURE_AND_STOP => Some(
            "\nStep exited with code 169. Therefore, marking step as Failed. Further document steps will be skipped.",
        ),
        _ if status == Status::Failed && step.on_failure.is_some() => Some(
            "\nStep was found to have onFailure property. Further document steps will be skipped.",
        ),
        _ => None,
    }
}

/// `<plugin>/<run name>`, the run's directory under the command's: the run name is the input
/// `id` or the step id, plus the property-set index when a 1.x plugin has several.
pub(super) fn run_path(step: &Step, index: usize, id: &str) -> String {
    let name = match (id.is_empty(), step.inputs.len() > 1) {
        (false, _) => id.to_owned(),
        (true, false) => step.id.clone(),
        (true, true) => format!("{index}.{}", step.id),
    };
    format!("{}/{}", step_dir_name(&step.plugin), step_dir_name(&name))
}

/// Runs a plugin the agent carries out itself (no script) with a script's output files and
/// destinations, as upstream's IOHandler gives every plugin: `<plugin>/<run name>/stdout` and
/// `stderr` under the command directory, uploaded like a script's.
fn in_agent(step: &Step, index: usize, env: &StepEnv<'_>, body: impl FnOnce() -> Run) -> Run {
    let run_path = run_path(step, index, "");
    let dir = env.command_dir.join(&run_path);
    let (stdout, stderr) = (dir.join("stdout"), dir.join("stderr"));
    if let Err(e) = ensure_private_dir(&dir) {
        log::warn!("step {}: {e}", step.id);
    }
    let files = RunFiles::of(step, &run_path, &stdout, &stderr);
    let uploads = Uploads::start(env, &files);
    let mut run = body();
    append(&stdout, &String::from_utf8_lossy(&run.stdout.bytes));
    append(&stderr, &String::from_utf8_lossy(&run.stderr.bytes));
    run.s3 = uploads.s3.clone();
    let uploaded = uploads.finish(step, |line| {
        let starts_line = run.stderr.bytes.is_empty() || run.stderr.bytes.ends_with(b"\n");
        let line = if starts_line {
            format!("{line}\n")
        } else {
            format!("\n{line}\n")
        };
        append(&stderr, &line);
        run.stderr.push(line.as_bytes());
    });
    clean_up(env, uploaded, &[&stdout, &stderr]);
    run
}

/// A run's uploads to its destinations, from before its work starts until its files are whole.
pub(super) struct Uploads<'e> {
    uploads: Vec<Box<dyn Upload + 'e>>,
    /// Where the output goes in S3, which the reply names.
    pub(super) s3: Option<OutputLocation>,
}

impl<'e> Uploads<'e> {
    pub(super) fn start(env: &'e StepEnv<'_>, files: &RunFiles<'_>) -> Uploads<'e> {
        Uploads {
            uploads: env.outputs.iter().map(|d| d.start(files)).collect(),
            s3: env.outputs.iter().find_map(|d| d.location(files)),
        }
    }

    /// Finishes every upload; a failure is logged and its line handed to `report` (for the
    /// step's stderr: never silent). True when one went through.
    pub(super) fn finish(self, step: &Step, mut report: impl FnMut(&str)) -> bool {
        let mut uploaded = false;
        for upload in self.uploads {
            match upload.finish() {
                Ok(()) => uploaded = true,
                Err(line) => {
                    log::warn!("step {}: {line}", step.id);
                    report(&line);
                }
            }
        }
        uploaded
    }
}

/// Removes a run's output files where `Ssm.PluginLocalOutputCleanup` asks.
pub(super) fn clean_up(env: &StepEnv<'_>, uploaded: bool, files: &[&Path]) {
    if !env.cleanup.removes(uploaded) {
        return;
    }
    for path in files {
        if let Err(e) = crate::state::remove_file(path) {
            log::warn!("{e}");
        }
    }
}

/// What ending a script adds to its stderr: upstream's `MarkAsFailed` text, or a line of the
/// agent's own where upstream has no counterpart.
#[derive(Debug, PartialEq)]
enum Note {
    /// Appended exactly as upstream's `AppendError` does while the streams are open: with no
    /// separator, so `err\n` + exit 2 reads `err\nfailed to run commands: exit status 2`
    /// (`iohandler.go`: its `stderr` string is filled only when the writers close).
    Upstream(String),
    /// A line of its own.
    Own(String),
}

/// Adds to a step's stderr what the agent knows and the script could not say: output it could
/// not keep, then why the step ended.
fn annotate(out: &Output<'_>, err: &mut Output<'_>, note: Option<Note>) {
    let write_errors: Vec<String> = [&out.captured, &err.captured]
        .iter()
        .filter_map(|c| c.write_error.clone())
        .collect();
    for error in write_errors {
        err.own_line(&format!(
            "ssm-lite could not keep this step's output on disk: {error}"
        ));
    }
    match note {
        Some(Note::Upstream(text)) => err.append(&text),
        Some(Note::Own(line)) => err.own_line(&line),
        None => {}
    }
}

/// The files of one run of a shell step, under `<command dir>/<plugin>/<run name>/`.
struct ShellFiles {
    run_path: String,
    script: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl ShellFiles {
    fn of(step: &Step, index: usize, input: &ShellScriptInput, command_dir: &Path) -> ShellFiles {
        let run_path = run_path(step, index, &input.id);
        let dir = command_dir.join(&run_path);
        ShellFiles {
            run_path,
            script: dir.join("_script.sh"),
            stdout: dir.join("stdout"),
            stderr: dir.join("stderr"),
        }
    }

    fn uploads<'e>(&self, step: &Step, env: &'e StepEnv<'_>) -> Uploads<'e> {
        Uploads::start(
            env,
            &RunFiles::of(step, &self.run_path, &self.stdout, &self.stderr),
        )
    }
}

fn run_shell(
    step: &Step,
    index: usize,
    input: &ShellScriptInput,
    env: &StepEnv<'_>,
    on_start: &mut dyn FnMut(Pid),
) -> Run {
    let files = ShellFiles::of(step, index, input, env.command_dir);
    let dir = files.script.parent().unwrap_or(env.command_dir);
    if let Err(e) = write_script(dir, &files.script, &input.run_command) {
        return Run::failed(format!("cannot write the script for step {}: {e}", step.id));
    }
    let working_dir = working_dir(&input.working_directory, env.command_dir);
    let mut vars: Vec<(String, String)> = input.environment.clone();
    vars.extend(env.env.iter().cloned());
    let spec = ScriptSpec {
        script: &files.script,
        working_dir: working_dir.as_deref(),
        env: &vars,
        stdout: &files.stdout,
        stderr: &files.stderr,
        timeout: Duration::from_secs(input.timeout_seconds),
        limits: Limits {
            file_bytes: env.max_output_bytes,
            head_bytes: STREAM_CAPACITY,
        },
    };
    let uploads = files.uploads(step, env);
    let end = run_script(&spec, env.stop, on_start);
    finish_shell(step, env, &files, uploads, end)
}

/// Turns a script's end into the run's result, live or re-attached after a restart: exit-code
/// semantics, notes on stderr, uploads, cleanup.
fn finish_shell(
    step: &Step,
    env: &StepEnv<'_>,
    files: &ShellFiles,
    uploads: Uploads<'_>,
    end: ScriptEnd,
) -> Run {
    let s3 = uploads.s3.clone();
    let (status, code, note) = classify(&end.outcome);
    let out = Output::new(&files.stdout, end.stdout);
    let mut err = Output::new(&files.stderr, end.stderr);
    annotate(&out, &mut err, note);
    let uploaded = uploads.finish(step, |line| err.own_line(line));
    if code != EXIT_REBOOT {
        clean_up(env, uploaded, &[&files.stdout, &files.stderr]);
    }
    Run {
        status,
        code,
        stdout: out.head,
        stderr: err.head,
        s3,
    }
}

/// A shell step whose script an earlier agent left running under `supervised`: that run ends as
/// a live one would, then the step's later property sets run (the reply has no room for the
/// results of earlier ones: they are not kept). `started` is the step's start. `None` when the
/// supervisor is gone without a status (the machine restarted) or runs no script of this step.
pub fn reattach(
    step: &Step,
    supervised: &Supervised,
    started: String,
    env: &StepEnv<'_>,
    on_start: &mut dyn FnMut(Pid),
) -> Option<PluginResult> {
    let inputs: Vec<ShellScriptInput> = step
        .inputs
        .iter()
        .map(shell_script_input)
        .collect::<Result<_, _>>()
        .ok()?;
    let index = (0..inputs.len()).find(|&i| {
        let files = ShellFiles::of(step, i, &inputs[i], env.command_dir);
        files.script.parent() == Some(supervised.run_dir.as_path())
    })?;
    let end = crate::exec::supervisor::reattach(supervised, env.stop)?;
    let files = ShellFiles::of(step, index, &inputs[index], env.command_dir);
    let uploads = files.uploads(step, env);
    let mut run = finish_shell(step, env, &files, uploads, end);
    for (i, input) in inputs.iter().enumerate().skip(index + 1) {
        run = merge(Some(run), run_shell(step, i, input, env, on_start));
    }
    Some(render(step, run, started))
}

/// One stream of a finished script: its file, and the reply's share of it.
pub(super) struct Output<'a> {
    path: &'a Path,
    captured: Captured,
    pub(super) head: Head,
}

impl Output<'_> {
    pub(super) fn new(path: &Path, captured: Captured) -> Output<'_> {
        let head = Head {
            len: usize::try_from(captured.total).unwrap_or(usize::MAX),
            bytes: captured.head.clone(),
        };
        Output {
            path,
            captured,
            head,
        }
    }

    /// Adds `text` right after the output, in the file and in the reply's share.
    fn append(&mut self, text: &str) {
        self.head.push(text.as_bytes());
        if self.captured.write_error.is_none() {
            append(self.path, text);
        }
    }

    /// Adds `line` as a whole line: after a `\n` unless the output is empty or known to end in
    /// one (past the reply's share the end is not known, and a `\n` is added).
    pub(super) fn own_line(&mut self, line: &str) {
        let complete = self.head.len == self.head.bytes.len();
        let at_line_start = self.head.len == 0 || (complete && self.head.bytes.ends_with(b"\n"));
        let lead = if at_line_start { "" } else { "\n" };
        self.append(&format!("{lead}{line}\n"));
    }
}

/// Exit code → status, code, and what upstream appends to stderr (§3.5, §9.1): upstream
/// `pluginutil_unix.go` `GetStatus`, and `runscript.go`, which appends `failed to run commands:
/// <error>` unless the status is `Cancelled`, `TimedOut` or `SuccessAndReboot`. A script's own
/// `exit 137` is therefore `TimedOut` with nothing added, as upstream reports it; 168 gets the
/// text in its file, and the reply drops its stderr (§3.6).
fn classify(outcome: &Outcome) -> (Status, i32, Option<Note>) {
    match outcome {
        Outcome::Exited(0) => (Status::Success, 0, None),
        Outcome::Exited(EXIT_REBOOT) => (Status::SuccessAndReboot, EXIT_REBOOT, None),
        Outcome::Exited(EXIT_KILLED) | Outcome::TimedOut => (Status::TimedOut, EXIT_KILLED, None),
        Outcome::Exited(c) => {
            let status = if *c == EXIT_SUCCESS_AND_STOP {
                Status::Success
            } else {
                Status::Failed
            };
            (status, *c, failed_to_run(format!("exit status {c}")))
        }
        // Go reports a signalled child as exit code -1 and `signal: <name>`.
        Outcome::Signaled(sig) => (
            Status::Failed,
            -1,
            failed_to_run(format!("signal: {}", go_signal_name(*sig))),
        ),
        Outcome::Stopped(StopReason::Cancelled) => (Status::Cancelled, EXIT_KILLED, None),
        Outcome::Stopped(StopReason::Shutdown) => (
            Status::Failed,
            EXIT_KILLED,
            Some(Note::Own("the agent stopped while this step ran".into())),
        ),
        Outcome::FailedToStart(m) => (Status::Failed, 1, failed_to_run(m.to_string())),
    }
}

fn failed_to_run(error: String) -> Option<Note> {
    Some(Note::Upstream(format!("failed to run commands: {error}")))
}

/// Go's `syscall.Signal.String()` on Linux (the same numbers on every architecture ssm-lite is
/// built for), which upstream's error text carries.
fn go_signal_name(sig: i32) -> String {
    const NAMES: [&str; 31] = [
        "hangup",
        "interrupt",
        "quit",
        "illegal instruction",
        "trace/breakpoint trap",
        "aborted",
        "bus error",
        "floating point exception",
        "killed",
        "user defined signal 1",
        "segmentation fault",
        "user defined signal 2",
        "broken pipe",
        "alarm clock",
        "terminated",
        "stack fault",
        "child exited",
        "continued",
        "stopped (signal)",
        "stopped",
        "stopped (tty input)",
        "stopped (tty output)",
        "urgent I/O condition",
        "CPU time limit exceeded",
        "file size limit exceeded",
        "virtual timer expired",
        "profiling timer expired",
        "window changed",
        "I/O possible",
        "power failure",
        "bad system call",
    ];
    usize::try_from(sig)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("signal {sig}"), |name| (*name).to_owned())
}

/// Absolute → as given; relative → `<command dir>/downloads/<dir>` when it exists (upstream);
/// otherwise the agent's working directory. Empty is relative too: after an
/// `aws:downloadContent` into the downloads directory (AWS-RunRemoteScript), scripts run there.
fn working_dir(requested: &str, command_dir: &Path) -> Option<PathBuf> {
    let p = Path::new(requested);
    if p.is_absolute() {
        return Some(p.to_owned());
    }
    let under = command_dir.join("downloads").join(p);
    under.is_dir().then_some(under)
}

fn write_script(dir: &Path, script: &Path, lines: &[String]) -> Result<(), StateError> {
    ensure_private_dir(dir)?;
    let mut text = lines.join("\n");
    text.push('\n');
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o700)
        .open(script)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(state_err("write", script))
}

/// Appends `text` to an output file.
fn append(path: &Path, text: &str) {
    let res = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = res {
        log::warn!("cannot append to {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{ExitAction, Verdict};
    use crate::state::testdir::TestDir;
    use serde_json::json;
    use std::fs;

    fn shell_step(property_sets: &[&[&str]], on_failure: Option<ExitAction>) -> Step {
        Step {
            id: "s".into(),
            plugin: SHELL_PLUGIN.into(),
            inputs: property_sets
                .iter()
                .map(|lines| json!({ "runCommand": lines }))
                .collect(),
            verdict: Verdict::Run,
            on_failure,
            on_success: None,
            finally_step: false,
        }
    }

    /// Runs `step` as a real script under a fresh command directory.
    fn run(step: &Step) -> PluginResult {
        run_in(&TestDir::new("steps"), step)
    }

    /// Runs `step` as a real script under `t`, whose files the caller then reads.
    fn run_in(t: &TestDir, step: &Step) -> PluginResult {
        let stop = StopToken::new();
        let env = StepEnv {
            command_dir: t.path(),
            env: &[],
            stop: &stop,
            max_output_bytes: 1 << 20,
            cleanup: OutputCleanup::Keep,
            outputs: &[],
            sources: &Sources::unavailable("tests"),
            association: None,
        };
        run_step(step, &env, &mut |_| {})
    }

    fn run_lines(lines: &[&str]) -> PluginResult {
        run(&shell_step(&[lines], None))
    }

    const STOP_168: &str = "\nStep exited with code 168. Therefore, marking step as succeeded. Further document steps will be skipped.";
    const STOP_169: &str = "\nStep exited with code 169. Therefore, marking step as Failed. Further document steps will be skipped.";
    const ON_FAILURE: &str =
        "\nStep was found to have onFailure property. Further document steps will be skipped.";

    /// Upstream's `AppendError` adds no separator while the streams are open (docs/protocol.md
    /// §3.5): the text follows the script's last byte, newline or not.
    #[test]
    fn the_failure_text_follows_stderr_with_no_separator() {
        let cases: [(&[&str], &str); 3] = [
            (
                &["echo out", "echo err >&2", "exit 2"],
                "err\nfailed to run commands: exit status 2",
            ),
            (&["exit 3"], "failed to run commands: exit status 3"),
            (
                &["printf err >&2", "exit 2"],
                "errfailed to run commands: exit status 2",
            ),
        ];
        for (lines, stderr) in cases {
            let r = run_lines(lines);
            assert_eq!(
                (r.status, r.standard_error.as_str()),
                (Status::Failed, stderr)
            );
        }
        let r = run_lines(&["echo out", "echo err >&2", "exit 2"]);
        assert_eq!(r.code, 2);
        assert_eq!(
            r.output,
            "out\n\n----------ERROR-------\nerr\nfailed to run commands: exit status 2"
        );
    }

    /// `GetStatus` maps 137 to `TimedOut` whoever exited with it, and then nothing is added.
    #[test]
    fn a_scripts_own_exit_137_is_timed_out_with_its_stderr_only() {
        let r = run_lines(&["echo err >&2", "exit 137"]);
        assert_eq!(
            (r.status, r.code, r.standard_error.as_str()),
            (Status::TimedOut, 137, "err\n")
        );
    }

    /// Go reports a signalled child as code -1 and `signal: <name>`.
    #[test]
    fn a_signalled_script_is_code_minus_1_with_gos_signal_name() {
        let r = run_lines(&["kill -TERM $$"]);
        assert_eq!(
            (r.status, r.code, r.standard_error.as_str()),
            (
                Status::Failed,
                -1,
                "failed to run commands: signal: terminated"
            )
        );
        assert_eq!(go_signal_name(9), "killed");
        assert_eq!(go_signal_name(31), "bad system call");
        assert_eq!(go_signal_name(34), "signal 34");
    }

    /// `runpluginutil.go`: the control-flow lines always start with `\n`, join the streams in
    /// the reply only, and `output` is made before them.
    #[test]
    fn control_flow_lines_join_the_reply_streams_but_not_output_or_files() {
        let t = TestDir::new("steps");
        let step = shell_step(&[&["echo o", "echo e >&2", "exit 168"]], None);
        let r = run_in(&t, &step);
        assert_eq!(
            (r.status, r.code, r.standard_error.as_str()),
            (Status::Success, 168, "")
        );
        assert_eq!(r.standard_output, format!("o\n{STOP_168}"));
        assert_eq!(r.output, "o\n");
        let dir = t.path().join("awsrunShellScript").join("s");
        assert_eq!(fs::read_to_string(dir.join("stdout")).unwrap(), "o\n");
        assert_eq!(
            fs::read_to_string(dir.join("stderr")).unwrap(),
            "e\nfailed to run commands: exit status 168"
        );

        let r = run_lines(&["echo e >&2", "exit 169"]);
        assert_eq!((r.status, r.code), (Status::Failed, 169));
        assert_eq!(r.standard_output, STOP_169);
        assert_eq!(
            r.standard_error,
            format!("e\nfailed to run commands: exit status 169{STOP_169}")
        );
        assert_eq!(
            r.output,
            "\n----------ERROR-------\ne\nfailed to run commands: exit status 169"
        );

        let r = run(&shell_step(&[&["exit 4"]], Some(ExitAction::Exit)));
        assert_eq!(r.standard_output, ON_FAILURE);
        assert_eq!(
            r.standard_error,
            format!("failed to run commands: exit status 4{ON_FAILURE}")
        );
        assert_eq!(
            r.output,
            "\n----------ERROR-------\nfailed to run commands: exit status 4"
        );
        let ok = run(&shell_step(&[&["echo fine"]], Some(ExitAction::Exit)));
        assert_eq!(ok.standard_output, "fine\n");
    }

    /// Upstream `Merge`: `\n` between property sets once a stream has output; the first
    /// non-zero code stays.
    #[test]
    fn property_sets_merge_as_upstream() {
        let step = shell_step(&[&["echo a", "exit 5"], &["echo b >&2", "exit 3"]], None);
        let r = run(&step);
        assert_eq!((r.status, r.code), (Status::Failed, 5));
        assert_eq!(r.standard_output, "a\n\n");
        assert_eq!(
            r.standard_error,
            "failed to run commands: exit status 5\nb\nfailed to run commands: exit status 3"
        );
    }

    /// The agent's own notes are whole lines, whatever the script left.
    #[test]
    fn own_lines_start_and_end_a_line() {
        let t = TestDir::new("steps");
        for (before, after) in [("", "n\n"), ("x\n", "x\nn\n"), ("x", "x\nn\n")] {
            let path = t.path().join("stderr");
            fs::write(&path, before).unwrap();
            let captured = Captured {
                head: before.as_bytes().to_vec(),
                total: before.len() as u64,
                ..Captured::default()
            };
            let mut err = Output::new(&path, captured);
            err.own_line("n");
            assert_eq!(err.head.bytes, after.as_bytes());
            assert_eq!(fs::read_to_string(&path).unwrap(), after);
        }
    }

    /// Upstream `runscript.go`: relative and empty directories are under `downloads/` when that
    /// exists (AWS-RunRemoteScript runs its script where downloadContent put it).
    #[test]
    fn relative_and_empty_working_directories_are_under_downloads_when_it_exists() {
        let t = TestDir::new("workdir");
        assert_eq!(working_dir("", t.path()), None);
        assert_eq!(working_dir("tools", t.path()), None);
        fs::create_dir_all(t.path().join("downloads/tools")).unwrap();
        assert!(working_dir("", t.path()).unwrap().ends_with("downloads"));
        assert_eq!(
            working_dir("tools", t.path()),
            Some(t.path().join("downloads/tools"))
        );
        assert_eq!(working_dir("/srv", t.path()), Some(PathBuf::from("/srv")));
    }

    /// Uploads that see a run's files, and fail.
    struct Refusing(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl Destination for Refusing {
        fn start(&self, run: &RunFiles<'_>) -> Box<dyn Upload + '_> {
            self.0.lock().unwrap().push(run.run_path.to_owned());
            Box::new(RefusedUpload(run.stderr.to_owned()))
        }
    }

    struct RefusedUpload(PathBuf);

    impl Upload for RefusedUpload {
        fn finish(self: Box<Self>) -> Result<(), String> {
            Err(format!(
                "upload refused after {:?}",
                fs::read_to_string(&self.0).unwrap()
            ))
        }
    }

    #[test]
    fn an_in_agent_plugin_has_a_scripts_files_and_destinations() {
        let t = TestDir::new("in-agent");
        let started = std::sync::Arc::default();
        let outputs: Vec<Box<dyn Destination>> =
            vec![Box::new(Refusing(std::sync::Arc::clone(&started)))];
        let stop = StopToken::new();
        let env = StepEnv {
            command_dir: t.path(),
            env: &[],
            stop: &stop,
            max_output_bytes: 1 << 20,
            cleanup: OutputCleanup::Keep,
            outputs: &outputs,
            sources: &Sources::unavailable("tests"),
            association: None,
        };
        let step = Step {
            id: "fetch".into(),
            plugin: crate::runcommand::download::PLUGIN.into(),
            inputs: vec![json!({"sourceInfo": "{}"})],
            ..shell_step(&[], None)
        };
        let r = run_step(&step, &env, &mut |_| {});
        let why = "invalid input: SourceType must be specified";
        assert_eq!(r.status, Status::Failed);
        assert_eq!(
            r.standard_error,
            format!("{why}\nupload refused after {why:?}\n")
        );
        assert_eq!(*started.lock().unwrap(), ["awsdownloadContent/fetch"]);
        let dir = t.path().join("awsdownloadContent/fetch");
        assert_eq!(fs::read_to_string(dir.join("stdout")).unwrap(), "");
        assert_eq!(
            fs::read_to_string(dir.join("stderr")).unwrap(),
            r.standard_error
        );
    }
}
