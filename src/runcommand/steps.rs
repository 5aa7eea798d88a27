//! Runs one document step and turns what happened into a `PluginResult`: the script file, the
//! process, exit-code semantics (§3.5, §3.6, §9.1) and the output fields (§2.8).

use super::reply::{
    Head, OUTPUT_CAPACITY, PluginResult, STREAM_CAPACITY, Status, truncate_output, truncate_stream,
};
use crate::document::{ShellScriptInput, Step, shell_script_input};
use crate::exec::{Outcome, ScriptSpec, StopReason, StopToken, run_script};
use crate::state::{ensure_private_dir, step_dir_name};
use crate::sys::Pid;
use crate::timefmt::iso8601_ms;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
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
    };
    let outcome = run_script(&spec, env.stop, on_start);
    let (status, code, note) = classify(&outcome);
    if let Some(note) = note {
        append_line(&stderr, &note);
    }
    match code {
        EXIT_SUCCESS_AND_STOP => append_line(
            &stdout,
            "Step exited with code 168. Therefore, marking step as succeeded. Further document steps will be skipped.",
        ),
        EXIT_FAILURE_AND_STOP => {
            let text = "Step exited with code 169. Therefore, marking step as Failed. Further document steps will be skipped.";
            append_line(&stdout, text);
            append_line(&stderr, text);
        }
        _ => {}
    }
    Run {
        status,
        code,
        stdout: read_head(&stdout),
        stderr: read_head(&stderr),
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

fn write_script(dir: &Path, script: &Path, lines: &[String]) -> std::io::Result<()> {
    ensure_private_dir(dir).map_err(|e| e.error)?;
    let mut text = lines.join("\n");
    text.push('\n');
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o700)
        .open(script)?;
    f.write_all(text.as_bytes())
}

/// Appends `line` to an output file, on a new line when the file has text already.
fn append_line(path: &Path, line: &str) {
    let non_empty = fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false);
    let text = if non_empty {
        format!("\n{line}")
    } else {
        line.to_owned()
    };
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

/// The first `STREAM_CAPACITY` bytes of an output file and its length (never the whole file).
fn read_head(path: &Path) -> Head {
    let Ok(f) = File::open(path) else {
        return Head::default();
    };
    let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
    let mut bytes = Vec::with_capacity(len.min(STREAM_CAPACITY));
    if let Err(e) = f.take(STREAM_CAPACITY as u64).read_to_end(&mut bytes) {
        log::warn!("cannot read {}: {e}", path.display());
    }
    Head {
        len: len.max(bytes.len()),
        bytes,
    }
}
