//! Pseudo-terminals for shell sessions: open a PTY pair, start a child on it as session leader
//! with the PTY as controlling terminal, resize it, and switch the child's user.
//! STUB: interface fixed; implementation in progress.

use std::fs::File;
use std::process::Child;

/// The user a child runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The master side of a PTY whose child is running.
pub struct Pty {
    pub master: File,
}

impl Pty {
    /// `TIOCSWINSZ`.
    pub fn resize(&self, cols: u16, rows: u16) -> std::io::Result<()> {
        let _ = (cols, rows);
        todo!()
    }
}

/// Starts `program args…` on a new PTY of `cols`×`rows` in a new session (setsid, controlling
/// terminal), with `env` added to the agent's environment, optionally as `run_as`.
pub fn spawn(program: &str, args: &[&str], env: &[(String, String)], run_as: Option<&RunAs>, cols: u16, rows: u16) -> std::io::Result<(Child, Pty)> {
    let _ = (program, args, env, run_as, cols, rows);
    todo!()
}
