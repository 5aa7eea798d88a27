//! Waiting on several file descriptors at once (`poll(2)`) and waking such a wait from another
//! thread (a `Waker`). STUB: interface fixed; implementation in progress.

use std::os::fd::RawFd;
use std::time::Duration;

/// What to wait for on one fd, and what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollFd {
    pub fd: RawFd,
    pub read: bool,
    pub write: bool,
    /// Set by `poll`: readable (or hung up / error: a read will tell).
    pub readable: bool,
    pub writable: bool,
}

impl PollFd {
    pub fn new(fd: RawFd, read: bool, write: bool) -> PollFd {
        PollFd { fd, read, write, readable: false, writable: false }
    }
}

/// Blocks until an fd is ready or `timeout` (None = forever) passes; returns how many are ready.
pub fn poll(fds: &mut [PollFd], timeout: Option<Duration>) -> std::io::Result<usize> {
    let _ = (fds, timeout);
    todo!()
}

/// Wakes a thread blocked in `poll` on `fd()`. Cloneable across threads.
#[derive(Clone)]
pub struct Waker {}

impl Waker {
    pub fn new() -> std::io::Result<Waker> {
        todo!()
    }
    pub fn fd(&self) -> RawFd {
        todo!()
    }
    pub fn wake(&self) {
        todo!()
    }
    /// Clears pending wakes (call after `poll` reports the fd readable).
    pub fn reset(&self) {
        todo!()
    }
}
