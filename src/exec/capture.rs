//! Script output: one thread drains the stdout/stderr pipes of every script into its output
//! files, keeping at most a cap of each stream on disk and its first bytes in memory for the
//! reply.
//!
//! The script never blocks on a full pipe and never sees a write error: past the cap, or once the
//! disk refuses a write, its output is still read to the end and counted, only not stored.
//! Background children that hold a script's output open after it exits are drained the same way
//! until they close it, so they are neither blocked nor killed by SIGPIPE. One thread for all
//! scripts: a poll over every open pipe.

use crate::sync::{lock, wait};
use crate::sys::poll::{PollFd, Waker, poll};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

/// Room kept at the end of a capped file for the truncation note and the agent's status lines,
/// so that a capped file stays within its cap.
const NOTE_ROOM: u64 = 512;
/// Bytes read per ready pipe per wake-up, so one loud script cannot starve the others.
const CHUNK: usize = 64 * 1024;
/// Read at most this much of one stream while settling a step whose script has ended: what the
/// script itself wrote fits in the pipe's buffer; more is a background child still writing.
const SETTLE_MAX: usize = 16 * CHUNK;

/// How much of a stream is kept.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes of the stream's file on disk, truncation note included.
    pub file_bytes: u64,
    /// Bytes kept in memory from the start of the stream (the reply's share).
    pub head_bytes: usize,
}

/// What one stream of a script produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The stream's first `Limits::head_bytes` bytes.
    pub head: Vec<u8>,
    /// Every byte the script wrote, kept or not.
    pub total: u64,
    /// The file stopped at its cap (a note at its end says so).
    pub truncated: bool,
    /// Why the file stopped before its cap (a full disk), naming the file.
    pub write_error: Option<String>,
}

#[derive(Default)]
struct Shared {
    streams: [Captured; 2],
    open: [bool; 2],
    /// The script has ended: the pump drains what is buffered and then sets `settled`.
    settle: bool,
    settled: bool,
}

/// The output of one running script, filled by the pump.
#[derive(Default)]
pub struct Capture {
    state: Mutex<Shared>,
    changed: Condvar,
}

impl Capture {
    /// Called once the script has ended: waits until what it wrote has been read, then returns
    /// stdout and stderr as captured so far. Pipes still held open by background children go on
    /// being drained (to disk, within the cap) after this returns.
    pub fn settle(&self) -> [Captured; 2] {
        let mut st = lock(&self.state);
        st.settle = true;
        if let Some(pump) = PUMP.get().filter(|_| st.open.iter().any(|&o| o)) {
            pump.waker.wake();
        }
        while !st.settled && st.open.iter().any(|&o| o) {
            st = wait(&self.changed, st);
        }
        st.streams.clone()
    }

    fn wants_settling(&self) -> bool {
        let st = lock(&self.state);
        st.settle && !st.settled
    }

    fn mark_settled(&self) {
        lock(&self.state).settled = true;
        self.changed.notify_all();
    }
}

/// One pipe and its file, owned by the pump thread.
struct Stream {
    pipe: File,
    file: Option<File>,
    path: PathBuf,
    written: u64,
    limits: Limits,
    capture: Arc<Capture>,
    index: usize,
}

impl Stream {
    /// Reads once; false at the end of the stream (EOF or a read error).
    fn pump(&mut self, buf: &mut [u8]) -> bool {
        match self.pipe.read(buf) {
            Ok(0) => false,
            Ok(n) => {
                self.keep(&buf[..n]);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(e) => {
                log::warn!("cannot read script output for {}: {e}", self.path.display());
                false
            }
        }
    }

    fn keep(&mut self, chunk: &[u8]) {
        {
            let mut st = lock(&self.capture.state);
            let c = &mut st.streams[self.index];
            c.total += chunk.len() as u64;
            let room = self.limits.head_bytes.saturating_sub(c.head.len());
            c.head.extend_from_slice(&chunk[..room.min(chunk.len())]);
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let room = self
            .limits
            .file_bytes
            .saturating_sub(NOTE_ROOM.min(self.limits.file_bytes / 2))
            .saturating_sub(self.written);
        let take = chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let mut result = file.write_all(&chunk[..take]);
        self.written += take as u64;
        if result.is_ok() && take < chunk.len() {
            let note = format!(
                "\n[ssm-lite: output truncated: only the first {} bytes of this stream are kept on disk (limit {} bytes, Ssm.RunCommandLogsMaxStepOutputMiB); the script went on]\n",
                self.written, self.limits.file_bytes
            );
            result = file.write_all(note.as_bytes());
            lock(&self.capture.state).streams[self.index].truncated = true;
            self.file = None;
        }
        if let Err(e) = result {
            let error = format!("cannot write {}: {e}", self.path.display());
            log::warn!("{error}; the rest of this output is read but not kept");
            lock(&self.capture.state).streams[self.index].write_error = Some(error);
            self.file = None;
        }
    }

    /// Reads what is buffered now, up to `SETTLE_MAX`; false at the end of the stream.
    fn drain(&mut self, buf: &mut [u8]) -> bool {
        for _ in 0..SETTLE_MAX / CHUNK {
            let mut fd = [PollFd::new(self.pipe.as_raw_fd(), true, false)];
            match poll(&mut fd, Some(Duration::ZERO)) {
                Ok(_) if fd[0].readable => {
                    if !self.pump(buf) {
                        return false;
                    }
                }
                _ => break,
            }
        }
        true
    }

    fn close(self) {
        lock(&self.capture.state).open[self.index] = false;
        self.capture.changed.notify_all();
    }
}

/// The thread that drains every script's output.
pub struct Pump {
    waker: Waker,
    incoming: Mutex<Vec<Stream>>,
    running: AtomicBool,
}

static PUMP: OnceLock<Pump> = OnceLock::new();
static START: Mutex<()> = Mutex::new(());

/// The pump, its thread started on first use (and again if starting it failed before). Get it
/// before spawning a script, so that nothing can fail between the spawn and `watch`.
pub fn pump() -> io::Result<&'static Pump> {
    if let Some(p) = PUMP.get().filter(|p| p.running.load(Ordering::SeqCst)) {
        return Ok(p);
    }
    let _one_at_a_time = lock(&START);
    let p = match PUMP.get() {
        Some(p) => p,
        None => {
            let waker = Waker::new()?;
            PUMP.get_or_init(|| Pump {
                waker,
                incoming: Mutex::new(Vec::new()),
                running: AtomicBool::new(false),
            })
        }
    };
    if !p.running.load(Ordering::SeqCst) {
        thread::Builder::new()
            .name("script-output".into())
            .spawn(move || p.run())
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot start the thread that reads script output: {e}"),
                )
            })?;
        p.running.store(true, Ordering::SeqCst);
    }
    Ok(p)
}

impl Pump {
    /// Hands a script's stdout and stderr pipes, and the files they go to, to the pump.
    pub fn watch(&self, pipes: [(OwnedFd, File, PathBuf); 2], limits: Limits) -> Arc<Capture> {
        let capture = Arc::new(Capture::default());
        lock(&capture.state).open = [true, true];
        let mut incoming = lock(&self.incoming);
        for (index, (pipe, file, path)) in pipes.into_iter().enumerate() {
            incoming.push(Stream {
                pipe: File::from(pipe),
                file: Some(file),
                path,
                written: 0,
                limits,
                capture: Arc::clone(&capture),
                index,
            });
        }
        drop(incoming);
        self.waker.wake();
        capture
    }

    fn run(&self) {
        let mut streams: Vec<Stream> = Vec::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            streams.append(&mut lock(&self.incoming));
            settle(&mut streams, &mut buf);
            let mut fds: Vec<PollFd> = std::iter::once(self.waker.fd())
                .chain(streams.iter().map(|s| s.pipe.as_raw_fd()))
                .map(|fd| PollFd::new(fd, true, false))
                .collect();
            if let Err(e) = poll(&mut fds, None) {
                log::error!("script output: {e}; trying again in a second");
                thread::sleep(Duration::from_secs(1));
                continue;
            }
            if fds[0].readable {
                self.waker.reset();
            }
            let mut open = Vec::with_capacity(streams.len());
            for (mut s, fd) in streams.drain(..).zip(&fds[1..]) {
                if !fd.readable || s.pump(&mut buf) {
                    open.push(s);
                } else {
                    s.close();
                }
            }
            streams = open;
        }
    }
}

/// Serves the steps waiting in `Capture::settle`: drains their streams, then lets them go.
fn settle(streams: &mut Vec<Stream>, buf: &mut [u8]) {
    let mut open = Vec::with_capacity(streams.len());
    let mut done: Vec<Arc<Capture>> = Vec::new();
    for mut s in streams.drain(..) {
        if !s.capture.wants_settling() {
            open.push(s);
            continue;
        }
        done.push(Arc::clone(&s.capture));
        if s.drain(buf) {
            open.push(s);
        } else {
            s.close();
        }
    }
    *streams = open;
    for c in done {
        c.mark_settled();
    }
}
