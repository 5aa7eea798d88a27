//! Waiting on several file descriptors at once (`poll(2)`) and waking such a wait from another
//! thread (a [`Waker`], an eventfd).

use super::{context, cvt};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        PollFd {
            fd,
            read,
            write,
            readable: false,
            writable: false,
        }
    }
}

/// Blocks until an fd is ready or `timeout` (None = forever) passes; returns how many are ready.
/// Hang-ups and errors count as readable even when only writing was asked for, so that the
/// caller's next read reports them instead of the wait spinning. Interrupted waits resume with
/// the time left.
pub fn poll(fds: &mut [PollFd], timeout: Option<Duration>) -> io::Result<usize> {
    let mut raw: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.fd,
            events: if f.read { libc::POLLIN } else { 0 } | if f.write { libc::POLLOUT } else { 0 },
            revents: 0,
        })
        .collect();
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let wait_ms = deadline.map_or(-1, millis_until);
        // SAFETY: `raw` is a valid, writable array of `raw.len()` pollfd structs for the call.
        let rc = unsafe { libc::poll(raw.as_mut_ptr(), raw.len() as libc::nfds_t, wait_ms) };
        match cvt(rc) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(context(e, "poll failed")),
        }
    }
    let mut ready = 0;
    for (f, r) in fds.iter_mut().zip(&raw) {
        let trouble = r.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0;
        f.readable = r.revents & libc::POLLIN != 0 || trouble;
        f.writable = f.write && (r.revents & libc::POLLOUT != 0 || trouble);
        ready += usize::from(f.readable || f.writable);
    }
    Ok(ready)
}

/// Milliseconds until `deadline` for poll(2): rounded up, so that a wait never returns early and
/// spins on a sub-millisecond remainder; capped at `i32::MAX`.
fn millis_until(deadline: Instant) -> libc::c_int {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = left.as_micros().div_ceil(1000);
    libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
}

/// Wakes a thread blocked in `poll` on `fd()`. Cloneable across threads; the eventfd closes when
/// the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Waker {
    fd: Arc<OwnedFd>,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd takes plain integers and returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        cvt(fd).map_err(|e| context(e, "cannot create an eventfd for waking poll"))?;
        // SAFETY: `fd` is a new, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker { fd: Arc::new(fd) })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Makes `fd()` readable until the next `reset`. Never blocks: at the counter's limit the
    /// fd is readable already, so a failed write loses nothing.
    pub fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local buffer to our own eventfd.
        let _ = unsafe { libc::write(self.fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Clears pending wakes (call after `poll` reports the fd readable).
    pub fn reset(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local buffer; EAGAIN (nothing pending) is
        // the only expected failure and means there is nothing to clear.
        let _ = unsafe { libc::read(self.fd(), count.as_mut_ptr().cast(), count.len()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    const SHORT: Duration = Duration::from_millis(50);

    #[test]
    fn waker_wakes_a_waiting_thread_and_reset_clears_it() {
        let waker = Waker::new().unwrap();
        let remote = waker.clone();
        let started = Instant::now();
        let waiter = std::thread::spawn(move || {
            let mut fds = [PollFd::new(remote.fd(), true, false)];
            let n = poll(&mut fds, Some(Duration::from_secs(10))).unwrap();
            (n, fds[0].readable)
        });
        waker.wake();
        waker.wake();
        assert_eq!(waiter.join().unwrap(), (1, true));
        assert!(started.elapsed() < Duration::from_secs(5));

        waker.reset();
        let mut fds = [PollFd::new(waker.fd(), true, false)];
        assert_eq!(
            poll(&mut fds, Some(SHORT)).unwrap(),
            0,
            "reset drains both wakes"
        );
        assert!(!fds[0].readable);
        waker.reset(); // nothing pending: must not block
    }

    #[test]
    fn timeout_expires_without_returning_early() {
        let waker = Waker::new().unwrap();
        let mut fds = [PollFd::new(waker.fd(), true, false)];
        let started = Instant::now();
        assert_eq!(
            poll(&mut fds, Some(Duration::from_micros(1500))).unwrap(),
            0
        );
        assert!(started.elapsed() >= Duration::from_micros(1500));
        assert_eq!(poll(&mut fds, Some(Duration::ZERO)).unwrap(), 0);
    }

    #[test]
    fn reports_readable_writable_and_hang_up_per_fd() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let idle = Waker::new().unwrap();
        let mut fds = [
            PollFd::new(b.as_raw_fd(), true, true),
            PollFd::new(idle.fd(), true, false),
        ];
        assert_eq!(poll(&mut fds, Some(SHORT)).unwrap(), 1);
        assert_eq!((fds[0].readable, fds[0].writable), (false, true));
        assert!(!fds[1].readable);

        a.write_all(b"x").unwrap();
        let mut fds = [PollFd::new(b.as_raw_fd(), true, false)];
        assert_eq!(poll(&mut fds, None).unwrap(), 1);
        assert_eq!((fds[0].readable, fds[0].writable), (true, false));

        // A hang-up wakes a writer-only wait as readable, so the caller's read sees the EOF.
        drop(a);
        let (c, d) = UnixStream::pair().unwrap();
        drop(c);
        let mut fds = [PollFd::new(d.as_raw_fd(), false, false)];
        assert_eq!(poll(&mut fds, Some(Duration::from_secs(5))).unwrap(), 1);
        assert!(fds[0].readable);
    }

    #[test]
    fn interrupted_waits_resume() {
        // poll(2) fails with EINTR when a handled signal reaches the waiting thread (SA_RESTART
        // does not apply to it); signal-hook installs a handler for SIGURG, ignored by default.
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        // SAFETY: the handler only bumps an atomic counter, which is async-signal-safe.
        unsafe {
            signal_hook::low_level::register(signal_hook::consts::SIGURG, move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        }
        .unwrap();
        let waker = Waker::new().unwrap();
        let fd = waker.fd();
        let (tx, rx) = std::sync::mpsc::channel();
        let started = Instant::now();
        let waiter = std::thread::spawn(move || {
            // SAFETY: pthread_self has no preconditions.
            tx.send(unsafe { libc::pthread_self() }).unwrap();
            let mut fds = [PollFd::new(fd, true, false)];
            poll(&mut fds, Some(Duration::from_millis(300)))
        });
        let thread = rx.recv().unwrap();
        // Signal the waiter throughout its wait: some signal lands while it is inside poll.
        while !waiter.is_finished() {
            // SAFETY: the waiter is joined only after this loop, so its thread id stays valid
            // (a joinable thread's id outlives the thread until it is joined).
            unsafe { libc::pthread_kill(thread, libc::SIGURG) };
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(waiter.join().unwrap().unwrap(), 0);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(hits.load(std::sync::atomic::Ordering::SeqCst) > 3);
    }
}
