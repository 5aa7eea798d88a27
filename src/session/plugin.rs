//! What a session plugin looks like to the session loop: fds to wait on, typed input in, typed
//! output out (the data channel's payload types are `datachannel::input`/`output`'s business).
//! Plugins never block: their fds are non-blocking and unwritten input waits in a buffer, which
//! takes no more once it holds [`PENDING_LIMIT`] bytes.

use crate::sys::Pid;
use crate::sys::poll::Waker;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::process::{Child, ExitStatus};

/// The largest payload of one output message, as upstream (`StreamDataPayloadSize`).
pub const CHUNK: usize = 1024;
/// Client input a plugin holds unwritten (for a multiplexed session: all its streams together)
/// before it takes no more; the session loop then holds the rest in its window (and beyond
/// that stops acknowledging it).
pub const PENDING_LIMIT: usize = 1024 * 1024;

/// How a session ended, for `agent_task_complete.FinalTaskStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Success,
    Failed(String),
}

/// For log lines: "session …: ended successfully".
impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Success => f.write_str("successfully"),
            Ended::Failed(why) => write!(f, "in failure: {why}"),
        }
    }
}

/// Client input for a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input<'a> {
    /// Session data: keystrokes, or the bytes for a forwarded port.
    Bytes(&'a [u8]),
    /// The client's terminal size.
    Resize { cols: u16, rows: u16 },
    /// Port forwarding: close the connection to the port; the next bytes open a new one.
    DisconnectPort,
    /// The client ends the session.
    Terminate,
}

/// Output for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Vec<u8>),
    /// A command's stderr, when it goes out apart from stdout.
    Stderr(Vec<u8>),
    /// A command's exit code, when stderr goes out apart.
    ExitCode(i32),
    /// Port forwarding: the destination refused a connection.
    ConnectError,
}

/// Something for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A stream message.
    Output(Output),
    End(Ended),
}

/// One fd the loop should wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    pub fd: RawFd,
    pub read: bool,
    pub write: bool,
}

pub trait Plugin: Send {
    /// The fds to wait on now. `reading` is false while the client cannot take more output
    /// (publication paused, too much unacknowledged): then only write interest matters.
    fn interests(&self, reading: bool) -> Vec<Interest>;
    /// `fd` is ready: read output into `events` and/or write pending input.
    fn ready(&mut self, fd: RawFd, readable: bool, writable: bool, events: &mut Vec<Event>);
    /// Client input, in sequence.
    fn input(&mut self, input: Input<'_>, events: &mut Vec<Event>);
    /// False while the plugin holds [`PENDING_LIMIT`] bytes of input that its destination has
    /// not taken yet: the session loop then gives it no more.
    fn wants_input(&self) -> bool;
    /// Ends whatever the plugin runs (terminate, shutdown). Idempotent.
    fn stop(&mut self);
}

/// Input that did not fit into a non-blocking fd yet.
#[derive(Default)]
pub struct Pending {
    bytes: VecDeque<u8>,
}

impl Pending {
    pub fn push(&mut self, data: &[u8]) {
        self.bytes.extend(data);
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Below [`PENDING_LIMIT`]: a plugin with one such buffer wants more input.
    pub fn has_room(&self) -> bool {
        self.len() < PENDING_LIMIT
    }

    /// Writes what `w` takes now; WouldBlock leaves the rest queued.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<()> {
        while !self.bytes.is_empty() {
            let (front, _) = self.bytes.as_slices();
            match w.write(front) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => drop(self.bytes.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Learns when a child that closed its output (or its terminal) exits, without blocking the
/// session loop in `wait` — a command running on with its output closed must stay terminable.
/// A helper thread waits for the exit but leaves the child unreaped, so its pid (and process
/// group) cannot be reused while the plugin may still kill it; it then wakes the loop.
#[derive(Default)]
pub struct ExitWatch {
    waker: Option<Waker>,
}

impl ExitWatch {
    /// The child's status once it has exited (reaped here); otherwise starts watching (once)
    /// and returns `None`: `fd()` turns readable at the exit, then ask again.
    pub fn exited(&mut self, child: &mut Child) -> Option<io::Result<ExitStatus>> {
        // Cleared before asking, so that an exit right after the answer still wakes the loop.
        if let Some(waker) = &self.waker {
            waker.reset();
        }
        match child.try_wait() {
            Ok(Some(status)) => return Some(Ok(status)),
            Ok(None) if self.waker.is_some() => return None,
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        let watch = || -> io::Result<Waker> {
            let waker = Waker::new()?;
            let remote = waker.clone();
            let pid = Pid::from_raw(child.id() as i32);
            std::thread::Builder::new()
                .name(format!("exit-{}", pid.as_raw()))
                .spawn(move || {
                    if let Err(e) = crate::sys::wait_for_exit(pid) {
                        log::debug!("session: {e}");
                    }
                    remote.wake();
                })?;
            Ok(waker)
        };
        match watch() {
            Ok(waker) => {
                self.waker = Some(waker);
                None
            }
            Err(e) => Some(Err(io::Error::new(
                e.kind(),
                format!("cannot watch the command for its exit: {e}"),
            ))),
        }
    }

    /// The fd to poll for reading while watching.
    pub fn fd(&self) -> Option<RawFd> {
        self.waker.as_ref().map(Waker::fd)
    }
}

/// What one non-blocking read gave.
pub enum ReadResult {
    Data(Vec<u8>),
    WouldBlock,
    Eof,
}

/// Reads up to `max` bytes. EIO (a PTY whose child exited) counts as end of file.
pub fn read_chunk(r: &mut impl Read, max: usize) -> io::Result<ReadResult> {
    let mut buf = vec![0u8; max];
    loop {
        return match r.read(&mut buf) {
            Ok(0) => Ok(ReadResult::Eof),
            Ok(n) => {
                buf.truncate(n);
                Ok(ReadResult::Data(buf))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadResult::WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if crate::sys::pty::is_closed(&e) => Ok(ReadResult::Eof),
            Err(e) => Err(e),
        };
    }
}

/// Splits off an incomplete UTF-8 sequence at the end of `buf` so that a multi-byte character
/// cut by a read boundary goes out whole in the next message (invalid bytes pass through).
pub fn hold_incomplete_utf8(buf: &mut Vec<u8>) -> Vec<u8> {
    let n = buf.len();
    for back in 1..=3.min(n) {
        let b = buf[n - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead byte
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return Vec::new(),
        };
        return if needed > back {
            buf.split_off(n - back)
        } else {
            Vec::new()
        };
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_utf8_is_held_back() {
        let text = "é€😀".as_bytes().to_vec();
        for cut in 0..=text.len() {
            let mut head = text[..cut].to_vec();
            let carried = hold_incomplete_utf8(&mut head);
            assert!(std::str::from_utf8(&head).is_ok(), "cut {cut}");
            let mut rest = carried;
            rest.extend_from_slice(&text[cut..]);
            assert!(std::str::from_utf8(&rest).is_ok(), "cut {cut}");
        }
        let mut invalid = vec![b'a', 0xFF];
        assert!(
            hold_incomplete_utf8(&mut invalid).is_empty(),
            "invalid bytes pass through"
        );
    }

    #[test]
    fn the_exit_watch_wakes_the_poll_when_the_child_exits() {
        use crate::sys::poll::{PollFd, poll};
        // It runs until its stdin closes.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read line; exit 0"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut watch = ExitWatch::default();
        assert!(watch.exited(&mut child).is_none(), "still running");
        let fd = watch.fd().expect("watching");
        drop(child.stdin.take());
        let mut fds = [PollFd::new(fd, true, false)];
        poll(&mut fds, Some(std::time::Duration::from_secs(30))).unwrap();
        assert!(fds[0].readable, "woken at the exit");
        let status = watch.exited(&mut child).expect("exited").unwrap();
        assert!(status.success());
    }

    #[test]
    fn pending_input_survives_would_block() {
        struct Tiny(Vec<u8>, usize);
        impl Write for Tiny {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                if self.1 == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = b.len().min(self.1);
                self.1 -= n;
                self.0.extend_from_slice(&b[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut p = Pending::default();
        p.push(b"hello world");
        let mut w = Tiny(Vec::new(), 5);
        p.write_to(&mut w).unwrap();
        assert!(!p.is_empty());
        w.1 = 100;
        p.write_to(&mut w).unwrap();
        assert_eq!(w.0, b"hello world");
        assert!(p.is_empty());
    }
}
