//! Runs one script step: `sh -c <script>` in its own process group, stdout/stderr straight into
//! files, ended by exit, timeout, cancel or shutdown (the whole group gets SIGKILL).
//! STUB: interface fixed; implementation in progress.

use crate::sys::Pid;
use std::path::Path;
use std::time::Duration;

/// Why a running step was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    Shutdown,
}

/// Shared between the engine (which may stop a step) and the step's runner.
#[derive(Clone, Default)]
pub struct StopToken {}

impl StopToken {
    pub fn new() -> StopToken {
        StopToken::default()
    }
    /// Requests a stop; the first reason given wins. Wakes a runner that is waiting.
    pub fn stop(&self, reason: StopReason) {
        let _ = reason;
        todo!()
    }
    pub fn reason(&self) -> Option<StopReason> {
        todo!()
    }
}

pub struct ScriptSpec<'a> {
    pub script: &'a Path,
    pub working_dir: Option<&'a Path>,
    /// Added to (and overriding) the agent's own environment.
    pub env: &'a [(String, String)],
    pub stdout: &'a Path,
    pub stderr: &'a Path,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    /// Killed by a signal nobody here sent.
    Signaled(i32),
    TimedOut,
    Stopped(StopReason),
    FailedToStart(String),
}

/// Runs the script to its end. `on_start` gets the process-group id right after the spawn.
pub fn run_script(spec: &ScriptSpec<'_>, stop: &StopToken, on_start: &mut dyn FnMut(Pid)) -> Outcome {
    let _ = (spec, stop, on_start);
    todo!("exec::run_script")
}
