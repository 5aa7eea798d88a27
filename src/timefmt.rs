//! Time stamps in the formats the AWS wire protocols use, from `SystemTime`, without a date crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A UTC calendar time broken into fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

impl Utc {
    pub fn from_system(t: SystemTime) -> Utc {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let secs = d.as_secs() as i64;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        Utc {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
            millis: d.subsec_millis(),
        }
    }
}

/// Howard Hinnant's days-to-civil algorithm (public domain), days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (upstream `ToIso8601UTC`): reply dates, `CreatedDate`.
pub fn iso8601_ms(t: SystemTime) -> String {
    let u = Utc::from_system(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second, u.millis
    )
}

/// `YYYYMMDDTHHMMSSZ`, the SigV4 `X-Amz-Date`.
pub fn amz_date(t: SystemTime) -> String {
    let u = Utc::from_system(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

/// `YYYY-MM-DD HH:MM:SS.mmm`, for log lines.
pub fn log_stamp(t: SystemTime) -> String {
    let u = Utc::from_system(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        u.year, u.month, u.day, u.hour, u.minute, u.second, u.millis
    )
}

/// Parses an RFC 3339 / ISO-8601 UTC time such as `2024-05-01T12:00:00Z` or
/// `2024-05-01T12:00:00.123Z` (IMDS credential `Expiration`, the SigV4 suite's timestamps).
/// Offsets other than `Z`/`+00:00` are applied.
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<9}", &frac[..digits.min(9)]);
        nanos = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let h: i64 = rest[1..3].parse().ok()?;
            let m: i64 = rest[4..6].parse().ok()?;
            let v = h * 3600 + m * 60;
            if rest.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        let t = UNIX_EPOCH + Duration::from_millis(1_503_434_274_948);
        assert_eq!(iso8601_ms(t), "2017-08-22T20:37:54.948Z");
        assert_eq!(amz_date(t), "20170822T203754Z");
        assert_eq!(iso8601_ms(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&iso8601_ms(leap)[..10], "2000-02-29");
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        let t = UNIX_EPOCH + Duration::from_millis(1_503_434_274_948);
        assert_eq!(parse_iso8601(&iso8601_ms(t)), Some(t));
        assert_eq!(
            parse_iso8601("2015-08-30T12:36:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_440_938_160))
        );
        assert_eq!(
            parse_iso8601("2015-08-30T14:36:00+02:00"),
            parse_iso8601("2015-08-30T12:36:00Z")
        );
        assert_eq!(parse_iso8601("yesterday"), None);
        assert_eq!(parse_iso8601("2015-13-30T12:36:00Z"), None);
    }
}
