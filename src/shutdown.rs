//! One shutdown flag shared by every thread: a `Condvar` so that waits end the moment it is set.

use crate::sync;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Cloneable handle; `trigger` wakes every thread blocked in `wait_timeout`, and every `poll`
/// loop that registered its waker with `wake_on_trigger`.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<(Mutex<bool>, Condvar)>,
    wakers: Arc<Mutex<Vec<crate::sys::poll::Waker>>>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    pub fn trigger(&self) {
        let (lock, cvar) = &*self.inner;
        *sync::lock(lock) = true;
        cvar.notify_all();
        for w in sync::lock(&self.wakers).iter() {
            w.wake();
        }
    }

    /// Has `waker` woken when shutdown is triggered (at once if it already was).
    pub fn wake_on_trigger(&self, waker: crate::sys::poll::Waker) {
        if self.is_triggered() {
            waker.wake();
        }
        sync::lock(&self.wakers).push(waker);
    }

    pub fn is_triggered(&self) -> bool {
        *sync::lock(&self.inner.0)
    }

    /// Sleeps up to `d`; returns true when shutdown was triggered (before or during the wait).
    pub fn wait_timeout(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let (lock, cvar) = &*self.inner;
        let mut done = sync::lock(lock);
        while !*done {
            let timed_out;
            (done, timed_out) = sync::wait_until(cvar, done, deadline);
            if timed_out && !*done {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_wakes_a_waiter() {
        let s = Shutdown::new();
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait_timeout(Duration::from_secs(30)));
        s.trigger();
        assert!(t.join().unwrap());
        assert!(s.is_triggered());
    }

    #[test]
    fn wait_times_out_when_not_triggered() {
        assert!(!Shutdown::new().wait_timeout(Duration::from_millis(10)));
    }
}
