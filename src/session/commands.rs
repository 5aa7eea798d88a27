//! `NonInteractiveCommands` (docs/protocol.md §4.7): a command without a terminal. Output streams as it
//! comes — stdout as type 1 and, with `separateOutputStream`, stderr as type 11 (each chunk with
//! its prefix) and `EXIT_CODE: <n>` as type 12 at the end. Ctrl-C and Ctrl-\ from the client
//! become SIGINT and SIGQUIT; other input is ignored.
//!
//! Upstream splits the command with shell-words rules and runs it without a shell; ssm-lite runs
//! it with `sh -c`, which gives the same result for plain commands and also lets pipes work.

use super::plugin::{
    CHUNK, Ended, Event, ExitWatch, Input, Interest, Output, Plugin, ReadResult, read_chunk,
};
use super::runas::SessionUser;
use crate::sys::{Pid, Signal, kill_group};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStderr, ChildStdout};

pub struct Commands {
    child: Child,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    separate: bool,
    stdout_prefix: Vec<u8>,
    stderr_prefix: Vec<u8>,
    /// Both output streams are closed; the session ends when the command exits.
    exit: Option<ExitWatch>,
    ended: bool,
}

/// Upstream accepts prefixes of at most 30 characters from `[0-9a-zA-Z\r\n_:-]`.
fn valid_prefix(p: &str) -> bool {
    p.len() <= 30
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"\r\n_:-".contains(&b))
}

impl Commands {
    pub fn start(
        user: &SessionUser,
        commands: &str,
        separate: bool,
        stdout_prefix: &str,
        stderr_prefix: &str,
    ) -> Result<Commands, String> {
        if commands.trim().is_empty() {
            return Err("Commands cannot be empty for session type NonInteractiveCommands".into());
        }
        for p in [stdout_prefix, stderr_prefix] {
            if !valid_prefix(p) {
                return Err(format!(
                    "invalid output prefix {p:?}: at most 30 characters of [0-9a-zA-Z\\r\\n_:-]"
                ));
            }
        }
        let env = super::runas::environment(user, &crate::aws::credentials::Env::capture());
        let mut child = crate::sys::pty::spawn_piped(
            "sh",
            &["-c", commands],
            env.child(),
            user.run_as.as_ref(),
        )
        .map_err(|e| format!("failed to start the command: {e}"))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        for fd in [
            stdout.as_ref().map(|s| s.as_raw_fd()),
            stderr.as_ref().map(|s| s.as_raw_fd()),
        ]
        .into_iter()
        .flatten()
        {
            crate::sys::pty::set_nonblocking(fd, true)
                .map_err(|e| format!("failed to set up the command's output: {e}"))?;
        }
        Ok(Commands {
            child,
            stdout,
            stderr,
            separate,
            stdout_prefix: stdout_prefix.as_bytes().to_vec(),
            stderr_prefix: stderr_prefix.as_bytes().to_vec(),
            exit: None,
            ended: false,
        })
    }

    fn group(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Ends the session once the command has exited; until then the exit watch is polled.
    fn exited(&mut self, events: &mut Vec<Event>) {
        let Some(status) = self.exit.get_or_insert_default().exited(&mut self.child) else {
            return;
        };
        self.ended = true;
        if self.separate {
            let code = status.ok().and_then(|s| {
                s.code()
                    .or_else(|| std::os::unix::process::ExitStatusExt::signal(&s).map(|n| 128 + n))
            });
            events.push(Event::Output(Output::ExitCode(code.unwrap_or(1))));
        }
        // §9 item 6: the session succeeded whatever the command's exit code; the client has the code.
        events.push(Event::End(Ended::Success));
    }
}

impl Plugin for Commands {
    fn interests(&self, reading: bool) -> Vec<Interest> {
        let output = [
            self.stdout.as_ref().map(|s| s.as_raw_fd()),
            self.stderr.as_ref().map(|s| s.as_raw_fd()),
        ]
        .into_iter()
        .flatten()
        .map(|fd| Interest {
            fd,
            read: reading,
            write: false,
        });
        let exit = self
            .exit
            .as_ref()
            .and_then(ExitWatch::fd)
            .map(|fd| Interest {
                fd,
                read: true,
                write: false,
            });
        output.chain(exit).filter(|_| !self.ended).collect()
    }

    fn ready(&mut self, fd: i32, readable: bool, _writable: bool, events: &mut Vec<Event>) {
        if !readable || self.ended {
            return;
        }
        if self.exit.as_ref().and_then(ExitWatch::fd) == Some(fd) {
            return self.exited(events);
        }
        let is_stdout = self.stdout.as_ref().is_some_and(|s| s.as_raw_fd() == fd);
        let result = match (is_stdout, &mut self.stdout, &mut self.stderr) {
            (true, Some(out), _) => read_chunk(out, CHUNK),
            (false, _, Some(err)) => read_chunk(err, CHUNK),
            _ => return,
        };
        match result {
            Ok(ReadResult::Data(data)) => {
                let (kind, prefix): (fn(Vec<u8>) -> Output, _) = match (is_stdout, self.separate) {
                    (true, _) => (Output::Stdout, &self.stdout_prefix),
                    (false, true) => (Output::Stderr, &self.stderr_prefix),
                    (false, false) => (Output::Stdout, &self.stdout_prefix),
                };
                let mut chunk = if self.separate {
                    prefix.clone()
                } else {
                    Vec::new()
                };
                chunk.extend_from_slice(&data);
                events.push(Event::Output(kind(chunk)));
            }
            Ok(ReadResult::WouldBlock) => {}
            Ok(ReadResult::Eof) | Err(_) => {
                if is_stdout {
                    self.stdout = None
                } else {
                    self.stderr = None
                }
                if self.stdout.is_none() && self.stderr.is_none() {
                    self.exited(events);
                }
            }
        }
    }

    fn input(&mut self, input: Input<'_>, _events: &mut Vec<Event>) {
        let Input::Bytes(data) = input else {
            return;
        };
        for b in data {
            let signal = match b {
                0x03 => Signal::Int,
                0x1c => Signal::Quit,
                _ => continue,
            };
            if let Err(e) = kill_group(self.group(), signal) {
                log::debug!("session: cannot forward {signal:?}: {e}");
            }
        }
    }

    /// Input only becomes signals: nothing is held.
    fn wants_input(&self) -> bool {
        true
    }

    fn stop(&mut self) {
        if !self.ended {
            let _ = kill_group(self.group(), Signal::Kill);
            let _ = self.child.wait();
            self.ended = true;
        }
    }
}

impl Drop for Commands {
    fn drop(&mut self) {
        self.stop();
    }
}
