//! `Standard_Stream` and `InteractiveCommands` (docs/protocol.md §4.7): `sh` (or `sh -c <commands>`) on a
//! PTY as the session user; keystrokes in, terminal output out in UTF-8-safe chunks.

use super::plugin::{
    CHUNK, Ended, Event, ExitWatch, Input, Interest, Output, Pending, Plugin, ReadResult,
    hold_incomplete_utf8, read_chunk,
};
use super::runas::SessionUser;
use crate::sys::pty::{self, Pty};
use std::os::fd::AsRawFd;
use std::process::Child;

pub struct Shell {
    child: Child,
    pty: Pty,
    input: Pending,
    carry: Vec<u8>,
    /// The terminal is closed; the session ends when the shell exits.
    exit: Option<ExitWatch>,
    ended: bool,
}

/// The terminal size until the client sends its own.
const DEFAULT_SIZE: (u16, u16) = (80, 24);

impl Shell {
    /// Starts the shell; `commands` set → `sh -c <commands>` (InteractiveCommands).
    pub fn start(
        user: &SessionUser,
        commands: Option<&str>,
        profile: &str,
    ) -> Result<Shell, String> {
        let env = super::runas::environment(user, &crate::aws::credentials::Env::capture());
        let args: Vec<&str> = commands.map(|c| vec!["-c", c]).unwrap_or_default();
        let (cols, rows) = DEFAULT_SIZE;
        let (child, pty) = pty::spawn("sh", &args, env.child(), user.run_as.as_ref(), cols, rows)
            .map_err(|e| format!("failed to start the shell: {e}"))?;
        pty.set_nonblocking(true)
            .map_err(|e| format!("failed to set up the terminal: {e}"))?;
        let mut shell = Shell {
            child,
            pty,
            input: Pending::default(),
            carry: Vec::new(),
            exit: None,
            ended: false,
        };
        if commands.is_none() && !profile.is_empty() {
            shell.input.push(profile.as_bytes());
            shell.input.push(b"\n");
        }
        Ok(shell)
    }

    /// The terminal closed: what is held goes out, and the session ends once the shell exits
    /// (it may run on without a terminal; until then the exit watch is polled).
    fn finish(&mut self, events: &mut Vec<Event>) {
        if self.ended {
            return;
        }
        if !self.carry.is_empty() {
            events.push(Event::Output(Output::Stdout(std::mem::take(
                &mut self.carry,
            ))));
        }
        if self
            .exit
            .get_or_insert_default()
            .exited(&mut self.child)
            .is_some()
        {
            self.ended = true;
            events.push(Event::End(Ended::Success));
        }
    }
}

impl Plugin for Shell {
    fn interests(&self, reading: bool) -> Vec<Interest> {
        if self.ended {
            return Vec::new();
        }
        if let Some(fd) = self.exit.as_ref().and_then(ExitWatch::fd) {
            return vec![Interest {
                fd,
                read: true,
                write: false,
            }];
        }
        vec![Interest {
            fd: self.pty.master.as_raw_fd(),
            read: reading,
            write: !self.input.is_empty(),
        }]
    }

    fn ready(&mut self, fd: i32, readable: bool, writable: bool, events: &mut Vec<Event>) {
        if self.exit.as_ref().and_then(ExitWatch::fd) == Some(fd) {
            return self.finish(events);
        }
        if writable && let Err(e) = self.input.write_to(&mut self.pty.master) {
            log::debug!("session: terminal write failed: {e}");
        }
        if !readable || self.ended {
            return;
        }
        match read_chunk(&mut self.pty.master, CHUNK) {
            Ok(ReadResult::Data(mut data)) => {
                let mut chunk = std::mem::take(&mut self.carry);
                chunk.append(&mut data);
                self.carry = hold_incomplete_utf8(&mut chunk);
                if !chunk.is_empty() {
                    events.push(Event::Output(Output::Stdout(chunk)));
                }
            }
            Ok(ReadResult::WouldBlock) => {}
            Ok(ReadResult::Eof) => self.finish(events),
            Err(e) => {
                log::warn!("session: terminal read failed: {e}");
                self.finish(events);
            }
        }
    }

    fn input(&mut self, input: Input<'_>, _events: &mut Vec<Event>) {
        match input {
            Input::Bytes(data) => {
                self.input.push(data);
                if let Err(e) = self.input.write_to(&mut self.pty.master) {
                    log::debug!("session: terminal write failed: {e}");
                }
            }
            Input::Resize { cols, rows } => {
                if let Err(e) = self.pty.resize(cols, rows) {
                    log::debug!("session: resize failed: {e}");
                }
            }
            other => log::debug!("session: ignoring {other:?} in a shell session"),
        }
    }

    fn wants_input(&self) -> bool {
        self.input.has_room()
    }

    fn stop(&mut self) {
        if !self.ended {
            // The shell leads its own session and process group: end all of it.
            let _ = crate::sys::kill_group(
                crate::sys::Pid::from_raw(self.child.id() as i32),
                crate::sys::Signal::Kill,
            );
            let _ = self.child.wait();
            self.ended = true;
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        self.stop();
    }
}
