//! Time stamps in the formats the AWS wire protocols use, from `SystemTime`, without a date crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whole seconds since the Unix epoch; 0 for a time before it (a clock set before 1970).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch; 0 for a time before it, `u64::MAX` past year 584 million.
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `unix_secs` of now.
pub fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

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
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
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
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
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
/// Offsets other than `Z`/`+00:00` are applied. Works on bytes: the text comes from the network
/// (IMDS, the on-prem token answer), so any input gives `None` rather than a panic.
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(b, 0, 4)?, digits(b, 5, 2)?, digits(b, 8, 2)?);
    let (hour, minute, second) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let count = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if count == 0 {
            return None;
        }
        // Digits beyond nanoseconds are dropped; the shorter ones scaled up.
        let kept = count.min(9);
        let scale = 10u32.pow(9 - kept as u32);
        nanos = digits(frac, 0, kept)? * scale;
        rest = &frac[count..];
    }
    let offset_secs: i64 = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let v = i64::from(digits(rest, 1, 2)? * 3600 + digits(rest, 4, 2)? * 60);
            if *sign == b'-' { -v } else { v }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// The `len` ASCII digits of `b` at `at` as a number; `None` if any is not a digit or missing.
/// At most 9 digits, so the value always fits.
fn digits(b: &[u8], at: usize, len: usize) -> Option<u32> {
    let field = b.get(at..at.checked_add(len)?)?;
    if len > 9 || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(field.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Parses an HTTP `Date` header in the IMF-fixdate form every AWS service sends
/// (`Wed, 02 Dec 2026 18:24:57 GMT`, RFC 9110 §5.6.7); the obsolete forms give `None`.
/// Untrusted input: never panics.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let b = s.trim().as_bytes();
    let [
        _,
        _,
        _,
        b',',
        b' ',
        d0,
        d1,
        b' ',
        m0,
        m1,
        m2,
        b' ',
        rest @ ..,
    ] = b
    else {
        return None;
    };
    let day = digits(&[*d0, *d1], 0, 2)?;
    let month = MONTHS.iter().position(|m| **m == [*m0, *m1, *m2])?;
    let [
        y0,
        y1,
        y2,
        y3,
        b' ',
        h0,
        h1,
        b':',
        n0,
        n1,
        b':',
        s0,
        s1,
        b' ',
        b'G',
        b'M',
        b'T',
    ] = rest
    else {
        return None;
    };
    let text = [*y0, *y1, *y2, *y3, *h0, *h1, *n0, *n1, *s0, *s1];
    let (year, hour) = (digits(&text, 0, 4)?, digits(&text, 4, 2)?);
    let (minute, second) = (digits(&text, 6, 2)?, digits(&text, 8, 2)?);
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let month = u32::try_from(month).ok()? + 1;
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))
}

/// An IMF-fixdate `Date` header for `t`, as the services send it (test servers answer with it).
#[cfg(test)]
pub fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let u = Utc::from_system(t);
    let weekday = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| (d.as_secs() / 86_400 % 7) as usize);
    let month = String::from_utf8_lossy(MONTHS[u.month as usize - 1]);
    format!(
        "{}, {:02} {month} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[weekday], u.day, u.year, u.hour, u.minute, u.second
    )
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
        assert_eq!(
            parse_iso8601("2015-08-30T12:36:00.5Z"),
            Some(UNIX_EPOCH + Duration::from_millis(1_440_938_160_500))
        );
        assert_eq!(
            parse_iso8601("2015-08-30T12:36:00.1234567891Z"),
            Some(UNIX_EPOCH + Duration::new(1_440_938_160, 123_456_789))
        );
        assert_eq!(parse_iso8601("2015-08-30T12:36:00+0200"), None);
        assert_eq!(parse_iso8601("2015-08-30T12:36:00+02x00"), None);
    }

    /// Network input (IMDS `Expiration`, the on-prem `TokenExpirationDate`) with multi-byte
    /// characters where digits or separators belong: the old parser sliced by byte index and
    /// panicked (a remote kill switch with `panic = "abort"`).
    #[test]
    fn multi_byte_and_malformed_timestamps_are_refused_not_panics() {
        for text in [
            "2015-08-30T12:36:00+0\u{e9}:0",
            "2015-08-30T12:36:00+\u{e9}:00",
            "2015-08-30T12:36:00+00:\u{e9}",
            "2015-08-30T12:36:0\u{e9}Z",
            "2015-08-30T12:36:00.\u{e9}Z",
            "2015-08-30T12:36:00.9\u{e9}",
            "\u{e9}\u{e9}15-08-30T12:36:00Z",
            "2015-08-30T12\u{e9}6:00Z",
            "+015-08-30T12:36:00Z",
            "2015-08-30T12:36:00-99:99",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:60.999999999+00:00",
        ] {
            let _ = parse_iso8601(text);
        }
        assert_eq!(parse_iso8601("2015-08-30T12:36:00+0\u{e9}:0"), None);
    }

    #[test]
    fn http_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        assert_eq!(http_date(t), "Sun, 30 Aug 2015 12:36:00 GMT");
        assert_eq!(parse_http_date(&http_date(t)), Some(t));
        assert_eq!(
            parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(1_440_938_160))
        );
        assert_eq!(
            parse_http_date(" Thu, 01 Jan 1970 00:00:00 GMT "),
            Some(UNIX_EPOCH)
        );
        for bad in [
            "",
            "Sunday, 30-Aug-15 12:36:00 GMT",
            "Sun Aug 30 12:36:00 2015",
            "Sun, 30 Aug 2015 12:36:00 UTC",
            "Sun, 30 Foo 2015 12:36:00 GMT",
            "Sun, 32 Aug 2015 12:36:00 GMT",
            "Sun, 30 Aug 2015 24:36:00 GMT",
            "Sun, 3\u{e9} Aug 2015 12:36:00 GMT",
            "Sun, 30 Aug 2015 12:36:00 GMT\u{e9}",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }
}
