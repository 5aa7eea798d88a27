//! Random identifiers and jitter, from ring's system random source.

use ring::rand::{SecureRandom, SystemRandom};

fn fill(buf: &mut [u8]) {
    // The OS random source failing is not recoverable and does not happen on Linux ≥ 3.17
    // (getrandom) or with /dev/urandom present; the fallback keeps ids unique within a process.
    if SystemRandom::new().fill(buf).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seed = (t as u64) ^ n.rotate_left(32) ^ u64::from(std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed.rotate_left((i as u32 * 8) % 64) & 0xff) as u8 ^ i as u8;
        }
    }
}

/// A random (version 4) UUID, lower case with hyphens, as upstream formats them.
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A uniformly distributed integer in `lo..=hi` (for back-off jitter).
pub fn between(lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        return lo;
    }
    let mut b = [0u8; 8];
    fill(&mut b);
    lo + u64::from_le_bytes(b) % (hi - lo + 1)
}

/// Jittered exponential back-off before retry number `attempt` (1-based):
/// `first_ms` × 2^(attempt-1) × 1.0–1.5, capped at `cap`. The jitter keeps a fleet that lost the
/// service at the same moment from coming back in lockstep.
pub fn backoff(first_ms: u64, attempt: u32, cap: std::time::Duration) -> std::time::Duration {
    let base = first_ms.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    std::time::Duration::from_millis(between(base, base + base / 2)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_v4_and_distinct() {
        let a = uuid_v4();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(a, uuid_v4());
    }

    #[test]
    fn between_stays_in_range() {
        for _ in 0..1000 {
            let v = between(10, 12);
            assert!((10..=12).contains(&v));
        }
        assert_eq!(between(5, 5), 5);
    }
}
