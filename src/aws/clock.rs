//! The time every signature carries: the system clock plus an offset learned from the services.
//!
//! Devices without a real-time clock boot with a wrong date, and a signature whose time is more
//! than 5 minutes from the service's is refused. When a service refuses a request that way, the
//! `Date` of its answer says what time it is there (see [`super::retry`]); [`PROCESS`] keeps the
//! difference and every signer (SigV4 for ec2messages, ssm, ssmmessages REST and WebSocket, kms;
//! the RSA-signed on-prem calls) stamps its requests with [`now`]. The credentials cache judges
//! expiry times, which the services write in their own time, by the same clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

/// A service time further than this from ours means our clock is wrong (the services allow
/// 5 minutes; 4 leaves room for the time the answer took, as the AWS SDKs do).
pub const SKEW_THRESHOLD: Duration = Duration::from_secs(4 * 60);

/// The process-wide clock every signer reads.
pub static PROCESS: Clock = Clock::new();

/// The corrected time of [`PROCESS`].
pub fn now() -> SystemTime {
    PROCESS.now()
}

/// The system clock shifted by an offset that [`Clock::correct`] learns.
#[derive(Debug)]
pub struct Clock {
    /// Milliseconds added to the system clock (negative: ours is ahead).
    offset_ms: AtomicI64,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

impl Clock {
    pub const fn new() -> Clock {
        Clock {
            offset_ms: AtomicI64::new(0),
        }
    }

    pub fn now(&self) -> SystemTime {
        shifted(SystemTime::now(), self.offset_ms.load(Ordering::Relaxed))
    }

    /// The current correction in milliseconds (positive: the system clock is behind).
    #[cfg(test)]
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Takes `service_time` (the `Date` of an answer refusing a request for its time) as the
    /// right time when it is more than [`SKEW_THRESHOLD`] from [`Clock::now`]; true when the
    /// clock moved, so that signing the request again can help. Logged once per correction.
    pub fn correct(&self, service_time: SystemTime) -> bool {
        let old = self.offset_ms.load(Ordering::Relaxed);
        let system = SystemTime::now();
        let off_by = millis_between(service_time, shifted(system, old));
        if off_by.unsigned_abs() <= SKEW_THRESHOLD.as_millis() as u64 {
            return false;
        }
        let new = millis_between(service_time, system);
        // Threads refused at the same moment all re-sign, but only the first one says so.
        if self
            .offset_ms
            .compare_exchange(old, new, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let (secs, way) = (
                new.unsigned_abs() / 1000,
                if new > 0 { "behind" } else { "ahead of" },
            );
            log::warn!(
                "clock: the system clock is {secs} s {way} the AWS service's (its answer was dated \
                 {}); signing with the service's time from now on. Set the system clock (NTP) to fix it",
                crate::timefmt::iso8601_ms(service_time)
            );
        }
        true
    }
}

/// `t` moved by `ms` milliseconds; `t` itself if that leaves the representable range.
fn shifted(t: SystemTime, ms: i64) -> SystemTime {
    let by = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        t.checked_add(by)
    } else {
        t.checked_sub(by)
    }
    .unwrap_or(t)
}

/// `a - b` in milliseconds, saturated.
fn millis_between(a: SystemTime, b: SystemTime) -> i64 {
    let (d, sign) = match a.duration_since(b) {
        Ok(d) => (d, 1),
        Err(e) => (e.duration(), -1),
    };
    sign * i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off_by(clock: &Clock, secs: i64) -> SystemTime {
        shifted(SystemTime::now(), secs * 1000 + clock.offset_ms())
    }

    #[test]
    fn corrects_only_beyond_the_threshold_and_both_ways() {
        let clock = Clock::new();
        assert!(
            !clock.correct(off_by(&clock, 200)),
            "200 s is within 4 minutes"
        );
        assert_eq!(clock.offset_ms(), 0);
        assert!(clock.correct(off_by(&clock, 3600)), "an hour behind");
        assert!(
            (clock.offset_ms() - 3_600_000).abs() < 2000,
            "{}",
            clock.offset_ms()
        );
        let ahead = millis_between(clock.now(), SystemTime::now());
        assert!((ahead - 3_600_000).abs() < 2000, "{ahead}");
        // Judged against the corrected time: the same service time is no longer skew.
        assert!(!clock.correct(off_by(&clock, 10)));
        assert!(clock.correct(off_by(&clock, -7200)), "now an hour ahead");
        assert!(
            (clock.offset_ms() + 3_600_000).abs() < 2000,
            "{}",
            clock.offset_ms()
        );
    }

    #[test]
    fn a_1970_service_date_and_extreme_offsets_do_not_overflow() {
        let clock = Clock::new();
        assert!(clock.correct(SystemTime::UNIX_EPOCH));
        assert!(clock.now() < SystemTime::UNIX_EPOCH + Duration::from_secs(10));
        let _ = shifted(SystemTime::UNIX_EPOCH, i64::MIN);
        let _ = shifted(SystemTime::now(), i64::MAX);
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 100);
        assert!(millis_between(far, SystemTime::UNIX_EPOCH) > 0);
    }
}
