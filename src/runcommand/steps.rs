//! Runs one document step and turns what happened into a `PluginResult`: the script file, the
//! process, exit-code semantics (§3.5, §3.6, §9.1) and the output fields (§2.8).

use super::reply::{
    Head, OUTPUT_CAPACITY, PluginResult, STREAM_CAPACITY, Status, truncate_output, truncate_stream,
};
use crate::document::{ShellScriptInput, Step, shell_script_input};
use crate::exec::capture::Limits;
use crate::exec::{Captured, Outcome, ScriptSpec, StopReason, StopToken, run_script};
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
    /// Remove the output files once the result is made (`Ssm.PluginLocalOutputCleanup`).
    pub delete_output: bool,
}

/// One finished run of a plugin over one property set, before it is merged and rendered.
struct Run {
    status: Status,
    code: i32,
    stdout: Head,
    stderr: Head,
}

impl Run {
    fn failed(message: String) -> Run {
        Run {
            status: Status::Failed,
            code: 1,
            stdout: Head::default(),
            stderr: Head::whole(message.as_bytes()),
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
                },
            ));
            break;
        }
        let run = if step.plugin == SHELL_PLUGIN {
            match shell_script_input(inputs) {
                Ok(input) => run_shell(step, i, &input, env, on_start),
                Err(message) => Run::failed(message),
            }
        } else {
            Run::failed(format!(
                "Plugin with name {} not found. Step name: {}",
                step.plugin, step.id
            ))
        };
        merged = Some(merge(merged, run));
    }
    let run = merged.unwrap_or(Run {
        status: Status::Success,
        code: 0,
        stdout: Head::default(),
        stderr: Head::default(),
    });
    render(step, run, start)
}

fn merge(acc: Option<Run>, next: Run) -> Run {
    let Some(mut acc) = acc else { return next };
    acc.status = acc.status.merge(next.status);
    if next.code != 0 {
        acc.code = next.code;
    }
    for (a, b) in [
        (&mut acc.stdout, next.stdout),
        (&mut acc.stderr, next.stderr),
    ] {
        a.bytes.extend_from_slice(&b.bytes);
        a.bytes.truncate(STREAM_CAPACITY);
        a.len += b.len;
    }
    acc
}

fn render(step: &Step, run: Run, start: String) -> PluginResult {
    let stderr = if run.code == EXIT_SUCCESS_AND_STOP {
        Head::default()
    } else {
        run.stderr
    };
    PluginResult {
        plugin_id: step.id.clone(),
        plugin_name: step.plugin.clone(),
        status: run.status,
        code: run.code,
        output: truncate_output(&run.stdout, &stderr, OUTPUT_CAPACITY),
        standard_output: truncate_stream(&run.stdout),
        standard_error: truncate_stream(&stderr),
        start,
        end: iso8601_ms(SystemTime::now()),
    }
}

/// `<command dir>/<plugin>/<run name>/`: the run name is the input `id` or the step id, plus the
/// property-set index when a 1.x plugin has several.
fn run_dir(step: &Step, index: usize, input: &ShellScriptInput, command_dir: &Path) -> PathBuf {
    let name = match (input.id.is_empty(), step.inputs.len() > 1) {
        (false, _) => input.id.clone(),
        (true, false) => step.id.clone(),
        (true, true) => format!("{index}.{}", step.id),
    };
    command_dir
        .join(step_dir_name(&step.plugin))
        .join(step_dir_name(&name))
}

/// Adds the agent's own lines to a step's output: output it could not keep, why the step ended
/// (`note`), and upstream's words for the exit codes that stop the document.
fn annotate(out: &mut Output<'_>, err: &mut Output<'_>, code: i32, note: Option<String>) {
    let write_errors: Vec<String> = [&out.captured, &err.captured]
        .iter()
        .filter_map(|c| c.write_error.clone())
        .collect();
    for error in write_errors {
        err.line(&format!(
            "ssm-lite could not keep this step's output on disk: {error}"
        ));
    }
    if let Some(note) = note {
        err.line(&note);
    }
    match code {
        EXIT_SUCCESS_AND_STOP => out.line(
            "Step exited with code 168. Therefore, marking step as succeeded. Further document steps will be skipped.",
        ),
        EXIT_FAILURE_AND_STOP => {
            let text = "Step exited with code 169. Therefore, marking step as Failed. Further document steps will be skipped.";
            out.line(text);
            err.line(text);
        }
        _ => {}
    }
}

fn run_shell(
    step: &Step,
    index: usize,
    input: &ShellScriptInput,
    env: &StepEnv<'_>,
    on_start: &mut dyn FnMut(Pid),
) -> Run {
    let dir = run_dir(step, index, input, env.command_dir);
    let (script, stdout, stderr) = (
        dir.join("_script.sh"),
        dir.join("stdout"),
        dir.join("stderr"),
    );
    if let Err(e) = write_script(&dir, &script, &input.run_command) {
        return Run::failed(format!("cannot write the script for step {}: {e}", step.id));
    }
    let working_dir = working_dir(&input.working_directory, env.command_dir);
    let mut vars: Vec<(String, String)> = input.environment.clone();
    vars.extend(env.env.iter().cloned());
    let spec = ScriptSpec {
        script: &script,
        working_dir: working_dir.as_deref(),
        env: &vars,
        stdout: &stdout,
        stderr: &stderr,
        timeout: Duration::from_secs(input.timeout_seconds),
        limits: Limits {
            file_bytes: env.max_output_bytes,
            head_bytes: STREAM_CAPACITY,
        },
    };
    let end = run_script(&spec, env.stop, on_start);
    let (status, code, note) = classify(&end.outcome);
    let mut out = Output::new(&stdout, end.stdout);
    let mut err = Output::new(&stderr, end.stderr);
    annotate(&mut out, &mut err, code, note);
    if env.delete_output && code != EXIT_REBOOT {
        for path in [&stdout, &stderr] {
            if let Err(e) = crate::state::remove_file(path) {
                log::warn!("{e}");
            }
        }
    }
    Run {
        status,
        code,
        stdout: out.head,
        stderr: err.head,
    }
}

/// One stream of a finished script: its file, and the reply's share of it.
struct Output<'a> {
    path: &'a Path,
    captured: Captured,
    head: Head,
}

impl Output<'_> {
    fn new(path: &Path, captured: Captured) -> Output<'_> {
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

    /// Adds `line` after the output (on a new line when there is output), in the file and in
    /// the reply's share.
    fn line(&mut self, line: &str) {
        let text = if self.head.len > 0 {
            format!("\n{line}")
        } else {
            line.to_owned()
        };
        let room = STREAM_CAPACITY.saturating_sub(self.head.bytes.len());
        if self.head.len == self.head.bytes.len() {
            self.head
                .bytes
                .extend_from_slice(&text.as_bytes()[..room.min(text.len())]);
        }
        self.head.len += text.len();
        if self.captured.write_error.is_none() {
            append(self.path, &text);
        }
    }
}

/// Exit code → status, code, and the line upstream appends to stderr (§3.5, §9.1).
fn classify(outcome: &Outcome) -> (Status, i32, Option<String>) {
    match outcome {
        Outcome::Exited(0) | Outcome::Exited(EXIT_SUCCESS_AND_STOP) => {
            (Status::Success, outcome_code(outcome), None)
        }
        Outcome::Exited(EXIT_REBOOT) => (Status::SuccessAndReboot, EXIT_REBOOT, None),
        Outcome::Exited(c) => (
            Status::Failed,
            *c,
            Some(format!("failed to run commands: exit status {c}")),
        ),
        Outcome::Signaled(sig) => (
            Status::Failed,
            128 + sig,
            Some(format!("failed to run commands: killed by signal {sig}")),
        ),
        Outcome::TimedOut => (Status::TimedOut, EXIT_KILLED, None),
        Outcome::Stopped(StopReason::Cancelled) => (Status::Cancelled, EXIT_KILLED, None),
        Outcome::Stopped(StopReason::Shutdown) => (
            Status::Failed,
            EXIT_KILLED,
            Some("the agent stopped while this step ran".into()),
        ),
        Outcome::FailedToStart(m) => (
            Status::Failed,
            1,
            Some(format!("failed to run commands: {m}")),
        ),
    }
}

fn outcome_code(o: &Outcome) -> i32 {
    if let Outcome::Exited(c) = o { *c } else { 1 }
}

/// Absolute → as given; relative → `<command dir>/downloads/<dir>` when it exists (upstream);
/// otherwise the agent's working directory.
fn working_dir(requested: &str, command_dir: &Path) -> Option<PathBuf> {
    if requested.is_empty() {
        return None;
    }
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
