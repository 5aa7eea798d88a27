//! Lock and wait helpers shared by every thread.
//!
//! A poisoned lock means another thread panicked while holding it; the agent is built with
//! `panic = "abort"`, so poison cannot be observed in the binary and only tests could see it. Every
//! lock in the crate therefore takes the data as it is, through these helpers, instead of each
//! call site spelling out `unwrap_or_else(|e| e.into_inner())`.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Locks `m`, taking the data even if a panicking thread poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Blocks on `cv` until notified (spurious wake-ups included: callers loop on their condition).
pub fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(|e| e.into_inner())
}

/// Blocks on `cv` until notified or `deadline`; the flag is true when the deadline had passed.
pub fn wait_until<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Instant,
) -> (MutexGuard<'a, T>, bool) {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return (guard, true);
    }
    let (guard, result) = cv
        .wait_timeout(guard, left)
        .unwrap_or_else(|e| e.into_inner());
    (guard, result.timed_out())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn lock_survives_a_poisoning_panic() {
        let m = Arc::new(Mutex::new(1));
        let m2 = Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), 1);
    }

    #[test]
    fn wait_until_reports_a_passed_deadline() {
        let (m, cv) = (Mutex::new(()), Condvar::new());
        let (_g, timed_out) = wait_until(&cv, lock(&m), Instant::now() + Duration::from_millis(5));
        assert!(timed_out);
    }
}
